//! Durable messaging: publishing with deduplication ids, durable consumers with
//! explicit acknowledgement, and the consumer loop every service runs.
//!
//! [`JetStreamBroker`] is the production transport; [`MemoryBroker`] backs the
//! embedded single-process mode with the same delivery semantics (at least
//! once, redelivery on nak and after the ack deadline, `max_deliver`,
//! dead-lettering of exhausted messages, deduplication by message id). Both are
//! held to one contract by `tests/contracts`.

mod consumer;
mod error;
mod jetstream;
mod memory;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

pub use consumer::{ConsumerOptions, HandleError, Handler, run_consumer};
pub use error::MessagingError;
pub use jetstream::{JetStreamBroker, connect_options as nats_connect_options};
pub use memory::MemoryBroker;

use crate::contracts::{headers, streams};

/// How a stream keeps messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Removed once acknowledged: for commands with exactly one consumer.
    WorkQueue,
    /// Kept until `max_age`: for events any number of consumers may read.
    Limits,
}

/// A stream of the topology.
#[derive(Debug, Clone, Copy)]
pub struct StreamSpec {
    pub name: &'static str,
    pub subjects: &'static str,
    pub retention: Retention,
    pub max_age: Duration,
}

const DAY: Duration = Duration::from_secs(24 * 3600);

/// Every stream the system uses; created on start-up when absent.
pub const STREAMS: [StreamSpec; 3] = [
    StreamSpec {
        name: streams::ORDER_COMMANDS,
        subjects: streams::ORDER_COMMANDS_SUBJECTS,
        retention: Retention::WorkQueue,
        max_age: Duration::from_secs(7 * 24 * 3600),
    },
    StreamSpec {
        name: streams::ORDER_EVENTS,
        subjects: streams::ORDER_EVENTS_SUBJECTS,
        retention: Retention::Limits,
        max_age: Duration::from_secs(7 * 24 * 3600),
    },
    StreamSpec {
        name: streams::DEAD_LETTERS,
        subjects: streams::DEAD_LETTERS_SUBJECTS,
        retention: Retention::Limits,
        max_age: Duration::from_secs(30 * DAY.as_secs()),
    },
];

/// Publish-side deduplication window: a retried publish with the same
/// `Nats-Msg-Id` inside it is stored once.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

/// A durable consumer.
#[derive(Debug, Clone)]
pub struct ConsumerSpec {
    pub stream: &'static str,
    pub durable: String,
    /// Subject filter within the stream (`>` wildcard allowed at the end).
    pub filter: &'static str,
    /// Deliveries that run the handler (≤ 0: no bound). A broker gives up
    /// after this many; [`run_consumer`] instead binds with no broker bound
    /// and enforces it itself, so dead-lettering needs no advisory.
    pub max_deliver: i64,
    pub ack_wait: Duration,
    /// Messages handled concurrently by one replica.
    pub max_in_flight: usize,
}

/// A message to publish.
#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub subject: String,
    /// Deduplication id (`Nats-Msg-Id`).
    pub msg_id: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
}

impl OutgoingMessage {
    pub fn new(subject: impl Into<String>, msg_id: impl Into<String>, payload: Bytes) -> Self {
        Self {
            subject: subject.into(),
            msg_id: msg_id.into(),
            headers: Vec::new(),
            payload,
        }
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// The dead-letter copy of a message: published on
/// `catga.deadletter.<original subject>` with the original headers, the reason,
/// the original subject, the delivery count and the service that gave up, and
/// deduplicated on the stored message's identity.
pub fn dead_letter_message(
    original_subject: &str,
    message_identity: &str,
    original_headers: &[(String, String)],
    payload: Bytes,
    reason: &str,
    deliveries: i64,
    service: &str,
) -> OutgoingMessage {
    let mut message = OutgoingMessage::new(
        crate::contracts::subjects::dead_letter_for(original_subject),
        format!("dlq:{message_identity}"),
        payload,
    );
    message.headers = original_headers
        .iter()
        .filter(|(name, _)| !name.eq_ignore_ascii_case(headers::NATS_MSG_ID))
        .cloned()
        .collect();
    // Header values cannot hold line breaks.
    let reason = reason.replace(['\r', '\n'], " ");
    message
        .with_header(headers::DEAD_LETTER_REASON, reason)
        .with_header(headers::DEAD_LETTER_SUBJECT, original_subject)
        .with_header(headers::DEAD_LETTER_DELIVERIES, deliveries.to_string())
        .with_header(headers::DEAD_LETTER_SERVICE, service)
}

/// The dead-letter reason of a message the broker gave up redelivering.
pub(crate) fn exhausted_reason(deliveries: i64) -> String {
    format!(
        "not acknowledged after {deliveries} deliveries (the handler crashed or timed out each time)"
    )
}

/// Settles a delivery.
#[async_trait]
pub trait Acker: Send + Sync {
    async fn ack(&self) -> Result<(), MessagingError>;
    /// Asks for redelivery after `delay`.
    async fn nak(&self, delay: Duration) -> Result<(), MessagingError>;
    /// Stops redelivery for good.
    async fn term(&self) -> Result<(), MessagingError>;
    /// Extends the ack deadline of a message still being worked on.
    async fn in_progress(&self) -> Result<(), MessagingError>;
}

/// A subscriber's handler slots ([`Broker::subscribe`]): each delivery holds
/// one until it is dropped. One set serves every binding of a consumer loop,
/// so binding again after an error adds no room while earlier deliveries are
/// still being worked on.
#[derive(Clone)]
pub struct Slots(Arc<Semaphore>);

impl Slots {
    pub fn new(count: usize) -> Self {
        Self(Arc::new(Semaphore::new(count.max(1))))
    }

    /// Waits for a free slot.
    async fn take(&self) -> OwnedSemaphorePermit {
        // The semaphore is never closed, so `acquire_owned` cannot fail;
        // were it closed, waiting forever is the safe answer (fetch nothing).
        match Arc::clone(&self.0).acquire_owned().await {
            Ok(slot) => slot,
            Err(_) => std::future::pending().await,
        }
    }

    /// How many slots are free now.
    fn free(&self) -> usize {
        self.0.available_permits()
    }
}

/// A message received from a durable consumer.
pub struct Delivery {
    /// Unique identity of the stored message (stream and sequence).
    pub id: String,
    pub subject: String,
    pub headers: Vec<(String, String)>,
    pub payload: Bytes,
    /// 1 on first delivery.
    pub delivered: i64,
    pub acker: Box<dyn Acker>,
    /// The subscriber's slot this delivery takes up ([`Broker::subscribe`]),
    /// freed when the delivery is dropped. `None` outside a subscription.
    pub slot: Option<OwnedSemaphorePermit>,
}

impl Delivery {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("id", &self.id)
            .field("subject", &self.subject)
            .field("delivered", &self.delivered)
            .finish_non_exhaustive()
    }
}

/// Publishes durably: `Ok` means the broker has stored the message.
#[async_trait]
pub trait Publisher: Send + Sync + 'static {
    /// Stores `message` as it is. Transports implement this; callers use [`Publisher::publish`].
    async fn send(&self, message: OutgoingMessage) -> Result<(), MessagingError>;

    /// Publishes within a producer span whose context travels in the message
    /// headers (`traceparent`), so the consumer's span continues the trace.
    async fn publish(&self, mut message: OutgoingMessage) -> Result<(), MessagingError> {
        let span = tracing::info_span!(
            "publish",
            otel.name = %format!("{} publish", message.subject),
            otel.kind = "producer",
            messaging.system = "nats",
            messaging.destination.name = %message.subject,
            messaging.message.id = %message.msg_id,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        // Log lines inside the publish find their trace like any other's.
        crate::telemetry::record_ids(&span);
        let sent = async {
            crate::telemetry::inject_into_message(&mut message.headers);
            self.send(message).await
        }
        .instrument(span)
        .await;
        if let Err(err) = &sent {
            tracing::debug!(error = %crate::error::Chain(err), "publish failed");
        }
        sent
    }
}

/// A transport with durable consumers.
#[async_trait]
pub trait Broker: Publisher {
    /// Creates the streams of [`STREAMS`] when absent and brings existing ones
    /// to the configured settings ([`MessagingError::Mismatch`] names one that
    /// cannot change in place). Safe to call from many replicas at once.
    async fn ensure_topology(&self) -> Result<(), MessagingError>;

    /// Checks that the streams of [`STREAMS`] exist with the configured
    /// settings, changing nothing: what a service with restricted permissions
    /// does at start-up. [`MessagingError::TopologyOutdated`] names the first
    /// difference. A twin without permissions creates them instead.
    async fn verify_topology(&self) -> Result<(), MessagingError> {
        self.ensure_topology().await
    }

    /// Binds the durable consumer (creating it when absent, bringing its ack
    /// wait and max deliveries to `spec` when not) and streams its deliveries.
    ///
    /// Each delivery holds one of `slots` until it is dropped, and the broker
    /// never fetches more than the free slots can take: no message waits in a
    /// client buffer while its ack deadline runs (and, past it, its deliveries
    /// are used up), e.g. while every handler retries through a long Redis
    /// outage. Once `stop` fires nothing more is fetched; what is already on
    /// its way is still streamed, then the stream ends.
    async fn subscribe(
        &self,
        spec: &ConsumerSpec,
        slots: Slots,
        stop: CancellationToken,
    ) -> Result<BoxStream<'static, Result<Delivery, MessagingError>>, MessagingError>;

    /// Whether the transport is connected now.
    fn is_connected(&self) -> bool;

    /// Waits until what was sent so far (acks included, which are not
    /// waited for) has been written to the server.
    async fn flush(&self) -> Result<(), MessagingError> {
        Ok(())
    }

    /// Messages waiting for the durable consumer and messages delivered but not
    /// yet acknowledged; `None` where the transport cannot tell.
    async fn consumer_lag(&self, spec: &ConsumerSpec)
    -> Result<Option<(u64, u64)>, MessagingError>;

    /// Until `shutdown`, copies messages the broker gave up redelivering
    /// (`max_deliver` reached: the handler crashed, timed out or handed the
    /// message back every time) to the dead-letter stream, with the reason
    /// headers, so nothing is silently stranded.
    ///
    /// Shutdown is heard only between messages: a message being forwarded is
    /// copied and removed from its stream before this returns. Await it within
    /// the shutdown grace rather than dropping it.
    async fn dead_letter_exhausted(
        &self,
        spec: &ConsumerSpec,
        service: &'static str,
        shutdown: tokio_util::sync::CancellationToken,
    );
}

/// Whether `subject` matches a filter with an optional trailing `>`.
pub fn subject_matches(filter: &str, subject: &str) -> bool {
    match filter.strip_suffix('>') {
        Some(prefix) => subject.len() > prefix.len() && subject.starts_with(prefix),
        None => filter == subject,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_filters() {
        assert!(subject_matches("a.b.>", "a.b.c"));
        assert!(subject_matches("a.b.>", "a.b.c.d"));
        assert!(!subject_matches("a.b.>", "a.b."));
        assert!(!subject_matches("a.b.>", "a.bc"));
        assert!(subject_matches("a.b", "a.b"));
        assert!(!subject_matches("a.b", "a.b.c"));
    }
}
