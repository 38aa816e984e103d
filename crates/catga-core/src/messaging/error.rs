//! [`MessagingError`], and which async-nats failures are worth retrying.

use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{StreamErrorKind, pull::BatchErrorKind},
    context::{ConsumerInfoErrorKind, CreateStreamErrorKind, GetStreamErrorKind, PublishErrorKind},
    stream::{ConsumerErrorKind, DeleteMessageErrorKind, RawMessageErrorKind},
};

use crate::error::BoxError;

/// A messaging operation failed.
#[derive(Debug, thiserror::Error)]
pub enum MessagingError {
    /// NATS could not be reached or did not answer (reconnecting, electing a
    /// leader, slow): retrying helps.
    #[error("{operation}: NATS unavailable")]
    Unavailable {
        operation: String,
        #[source]
        source: BoxError,
    },
    /// NATS answered and refused, or answered something unreadable: the same
    /// request fails the same way again.
    #[error("{operation}: refused")]
    Refused {
        operation: String,
        #[source]
        source: BoxError,
    },
    /// No answer within the caller's deadline: retrying helps.
    #[error("{operation}: no answer within {after:?}")]
    TimedOut { operation: String, after: Duration },
    /// An existing stream or consumer differs from the configuration in a
    /// setting the server cannot change in place.
    #[error(
        "{object}: {setting} is {existing} on the server but configured as {configured}, and cannot be changed in place (recreate it, or change the configuration back)"
    )]
    Mismatch {
        object: String,
        setting: &'static str,
        existing: String,
        configured: String,
    },
    /// A stream is missing or differs from the configuration, and this
    /// service's NATS user may not change streams.
    #[error(
        "{object}: {difference}; the operator step must create or update it (`order-service ensure-topology` with the NATS operator's credentials)"
    )]
    TopologyOutdated { object: String, difference: String },
}

impl MessagingError {
    /// Whether trying again later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            MessagingError::Unavailable { .. } | MessagingError::TimedOut { .. } => true,
            MessagingError::Refused { .. }
            | MessagingError::Mismatch { .. }
            | MessagingError::TopologyOutdated { .. } => false,
        }
    }

    /// Classifies an async-nats error by its kind.
    pub(crate) fn nats<K: Transience>(
        operation: impl Into<String>,
        err: async_nats::error::Error<K>,
    ) -> Self {
        let operation = operation.into();
        if err.kind().is_transient() {
            MessagingError::Unavailable {
                operation,
                source: err.into(),
            }
        } else {
            MessagingError::Refused {
                operation,
                source: err.into(),
            }
        }
    }

    /// An async-nats failure that carries no kind: a lost connection.
    pub(crate) fn unavailable(operation: impl Into<String>, source: impl Into<BoxError>) -> Self {
        MessagingError::Unavailable {
            operation: operation.into(),
            source: source.into(),
        }
    }

    pub(crate) fn refused(operation: impl Into<String>, source: impl Into<BoxError>) -> Self {
        MessagingError::Refused {
            operation: operation.into(),
            source: source.into(),
        }
    }
}

/// Whether an async-nats error of this kind can go away by itself.
pub(crate) trait Transience:
    Clone + std::fmt::Debug + std::fmt::Display + PartialEq + Send + Sync + 'static
{
    fn is_transient(&self) -> bool;
}

/// A JetStream API error: 5xx (for example 503 "JetStream system temporarily
/// unavailable" during an election) passes; 4xx (bad request, conflicting
/// configuration, not found) does not.
fn api_error_is_transient(err: &jetstream::Error) -> bool {
    err.code() >= 500
}

impl Transience for async_nats::ConnectErrorKind {
    fn is_transient(&self) -> bool {
        use async_nats::ConnectErrorKind as K;
        matches!(self, K::Dns | K::TimedOut | K::Io | K::MaxReconnects)
    }
}

impl Transience for async_nats::SubscribeErrorKind {
    fn is_transient(&self) -> bool {
        matches!(self, async_nats::SubscribeErrorKind::Other)
    }
}

impl Transience for PublishErrorKind {
    fn is_transient(&self) -> bool {
        // A missing stream is what a publish sees while a clustered stream
        // elects its leader, so it passes too.
        !matches!(
            self,
            PublishErrorKind::MaxPayloadExceeded
                | PublishErrorKind::WrongLastMessageId
                | PublishErrorKind::WrongLastSequence
        )
    }
}

impl Transience for CreateStreamErrorKind {
    fn is_transient(&self) -> bool {
        use CreateStreamErrorKind as K;
        match self {
            K::JetStreamUnavailable | K::TimedOut | K::Response | K::NotFound => true,
            K::JetStream(err) => api_error_is_transient(err),
            K::EmptyStreamName
            | K::InvalidStreamName
            | K::DomainAndExternalSet
            | K::ResponseParse => false,
        }
    }
}

impl Transience for GetStreamErrorKind {
    fn is_transient(&self) -> bool {
        match self {
            GetStreamErrorKind::Request => true,
            GetStreamErrorKind::JetStream(err) => api_error_is_transient(err),
            GetStreamErrorKind::EmptyName | GetStreamErrorKind::InvalidStreamName => false,
        }
    }
}

impl Transience for ConsumerErrorKind {
    fn is_transient(&self) -> bool {
        match self {
            ConsumerErrorKind::TimedOut | ConsumerErrorKind::Request => true,
            ConsumerErrorKind::JetStream(err) => api_error_is_transient(err),
            ConsumerErrorKind::InvalidConsumerType
            | ConsumerErrorKind::InvalidName
            | ConsumerErrorKind::Other => false,
        }
    }
}

impl Transience for ConsumerInfoErrorKind {
    fn is_transient(&self) -> bool {
        use ConsumerInfoErrorKind as K;
        match self {
            K::Offline | K::Request | K::TimedOut | K::NoResponders => true,
            K::JetStream(err) => api_error_is_transient(err),
            K::InvalidName | K::NotFound | K::StreamNotFound => false,
        }
    }
}

impl Transience for StreamErrorKind {
    fn is_transient(&self) -> bool {
        matches!(self, StreamErrorKind::TimedOut)
    }
}

impl Transience for BatchErrorKind {
    fn is_transient(&self) -> bool {
        use BatchErrorKind as K;
        matches!(self, K::Subscribe | K::Pull | K::Flush)
    }
}

impl Transience for RawMessageErrorKind {
    fn is_transient(&self) -> bool {
        match self {
            RawMessageErrorKind::JetStream(err) => api_error_is_transient(err),
            RawMessageErrorKind::Other => true,
            RawMessageErrorKind::NoMessageFound | RawMessageErrorKind::InvalidSubject => false,
        }
    }
}

impl Transience for DeleteMessageErrorKind {
    fn is_transient(&self) -> bool {
        match self {
            DeleteMessageErrorKind::Request | DeleteMessageErrorKind::TimedOut => true,
            DeleteMessageErrorKind::JetStream(err) => api_error_is_transient(err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lost_connections_and_timeouts_pass_refusals_do_not() {
        let timed_out = MessagingError::nats(
            "publish",
            jetstream::context::PublishError::new(PublishErrorKind::TimedOut),
        );
        assert!(timed_out.is_transient());
        let too_large = MessagingError::nats(
            "publish",
            jetstream::context::PublishError::new(PublishErrorKind::MaxPayloadExceeded),
        );
        assert!(!too_large.is_transient());
        assert!(
            std::error::Error::source(&too_large).is_some(),
            "the cause is kept"
        );
        assert!(
            MessagingError::TimedOut {
                operation: "publish".into(),
                after: Duration::from_secs(1)
            }
            .is_transient()
        );
    }
}
