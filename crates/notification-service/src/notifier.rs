//! Sends one notification: a log line, or an HTTP POST to the webhook with the
//! event id as `Idempotency-Key`, retried with backoff.

use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use catga_core::{
    contracts::{OrderEvent, headers},
    telemetry,
};

use crate::config::Channel;

/// Retries of a failed webhook request within one delivery.
const WEBHOOK_RETRIES: usize = 3;
const WEBHOOK_MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Why a notification was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The HTTP client cannot be built (a start-up failure).
    #[error("cannot set up the webhook client")]
    Client(#[source] reqwest::Error),
    /// No answer: connection refused or reset, timeout.
    #[error("webhook unreachable")]
    Unreachable(#[source] reqwest::Error),
    /// The receiver cannot take it now (5xx, 408, 429).
    #[error("webhook unavailable: status {0}")]
    Unavailable(reqwest::StatusCode),
    /// The receiver refused the notification for good (other 4xx).
    #[error("webhook refused the notification: status {0}")]
    Refused(reqwest::StatusCode),
}

impl NotifyError {
    /// Worth sending again later.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            NotifyError::Unreachable(_) | NotifyError::Unavailable(_)
        )
    }
}

/// Delivers notifications on one channel.
#[derive(Clone)]
pub struct Notifier {
    channel: Channel,
    client: reqwest::Client,
}

impl Notifier {
    pub fn new(channel: Channel) -> Result<Self, NotifyError> {
        let timeout = match &channel {
            Channel::Webhook { timeout, .. } => *timeout,
            Channel::Log => Duration::from_secs(10),
        };
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .user_agent(concat!(
                "catga-notification-service/",
                env!("CARGO_PKG_VERSION")
            ))
            .build()
            .map_err(NotifyError::Client)?;
        Ok(Self { channel, client })
    }

    /// The channel label for metrics.
    pub fn channel_name(&self) -> &'static str {
        match self.channel {
            Channel::Log => "log",
            Channel::Webhook { .. } => "webhook",
        }
    }

    /// The longest one [`Notifier::send`] can take: every attempt timing out,
    /// plus the pauses between them.
    pub fn worst_case_send_time(&self) -> Duration {
        match &self.channel {
            Channel::Log => Duration::from_secs(1),
            Channel::Webhook { timeout, .. } => {
                let attempts = u32::try_from(WEBHOOK_RETRIES + 1).unwrap_or(u32::MAX);
                *timeout * attempts + WEBHOOK_MAX_BACKOFF * (attempts - 1)
            }
        }
    }

    pub async fn send(&self, event: &OrderEvent) -> Result<(), NotifyError> {
        match &self.channel {
            Channel::Log => {
                tracing::info!(
                    target: "catga::notification",
                    event_id = %event.event_id,
                    order_id = %event.order_id,
                    customer_id = %event.customer_id,
                    status = %event.status,
                    reason = event.reason.as_deref().unwrap_or(""),
                    "notification: order {} is {}",
                    event.order_id,
                    event.status,
                );
                Ok(())
            }
            Channel::Webhook { url, .. } => {
                let attempt = || self.post(url, event);
                attempt
                    .retry(
                        ExponentialBuilder::default()
                            .with_min_delay(Duration::from_millis(100))
                            .with_max_delay(WEBHOOK_MAX_BACKOFF)
                            .with_max_times(WEBHOOK_RETRIES)
                            .with_jitter(),
                    )
                    .when(NotifyError::is_transient)
                    .await
            }
        }
    }

    #[tracing::instrument(skip_all, fields(otel.name = "POST webhook", otel.kind = "client", http.request.method = "POST", event_id = %event.event_id))]
    async fn post(&self, url: &url::Url, event: &OrderEvent) -> Result<(), NotifyError> {
        let mut trace_headers = reqwest::header::HeaderMap::new();
        telemetry::inject_into_http(&mut trace_headers);
        let response = self
            .client
            .post(url.clone())
            .headers(trace_headers)
            .header(headers::IDEMPOTENCY_KEY, &event.event_id)
            .json(event)
            .send()
            .await
            // The URL may carry a token: it stays out of errors and logs.
            .map_err(|err| NotifyError::Unreachable(err.without_url()))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Err(NotifyError::Unavailable(status))
        } else {
            Err(NotifyError::Refused(status))
        }
    }
}
