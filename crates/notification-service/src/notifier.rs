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
/// Redirects followed within the webhook's own origin (reqwest's default bound).
const WEBHOOK_MAX_REDIRECTS: usize = 10;

/// Follows a redirect only to the origin (scheme, host, port) of the configured
/// webhook: the NetworkPolicy opens egress to that receiver alone, and a
/// receiver that moved elsewhere is reconfigured, not sent the payload. A
/// redirect anywhere else is answered as it came (3xx: refused, not retried).
fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same_origin = attempt.previous().first().is_some_and(|webhook| {
            let next = attempt.url();
            next.scheme() == webhook.scheme()
                && next.host_str() == webhook.host_str()
                && next.port_or_known_default() == webhook.port_or_known_default()
        });
        if !same_origin {
            attempt.stop()
        } else if attempt.previous().len() > WEBHOOK_MAX_REDIRECTS {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    })
}

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
            .redirect(same_origin_redirects())
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

#[cfg(test)]
mod tests {
    use std::{
        io::{BufRead, BufReader, Read, Write},
        net::{SocketAddr, TcpListener},
        sync::{Arc, Mutex},
    };

    use super::*;

    /// A plain HTTP/1.1 server on a free loopback port answering each request
    /// with `answer(path)` (status line and extra headers); records the paths.
    fn serve(
        answer: fn(&str, SocketAddr) -> String,
        other: SocketAddr,
    ) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("address");
        let paths = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&paths);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut reader = BufReader::new(stream);
                let mut request_line = String::new();
                reader.read_line(&mut request_line).expect("request line");
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).expect("header");
                    if line.trim().is_empty() {
                        break;
                    }
                    if let Some((name, value)) = line.split_once(':')
                        && name.eq_ignore_ascii_case("content-length")
                    {
                        length = value.trim().parse().expect("length");
                    }
                }
                let mut body = vec![0; length];
                reader.read_exact(&mut body).expect("body");
                let path = request_line
                    .split(' ')
                    .nth(1)
                    .unwrap_or_default()
                    .to_owned();
                let response = answer(&path, other);
                seen.lock().expect("paths").push(path);
                let mut stream = reader.into_inner();
                write!(
                    stream,
                    "{response}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .expect("answer");
            }
        });
        (addr, paths)
    }

    fn webhook(url: String) -> Notifier {
        Notifier::new(Channel::Webhook {
            url: url::Url::parse(&url).expect("URL"),
            timeout: Duration::from_secs(5),
        })
        .expect("notifier")
    }

    fn event() -> OrderEvent {
        serde_json::from_value(serde_json::json!({
            "eventId": "0190b4a0-0000-7000-8000-000000000001:Confirmed",
            "orderId": "0190b4a0-0000-7000-8000-000000000001",
            "customerId": "c-redirect",
            "status": "Confirmed",
            "totalAmount": "10.00",
            "occurredAt": "2026-01-01T00:00:00Z",
        }))
        .expect("an order event")
    }

    #[tokio::test]
    async fn redirects_are_followed_within_the_webhooks_origin_only() {
        let (elsewhere, stolen) = serve(
            |_, _| "HTTP/1.1 200 OK".to_owned(),
            SocketAddr::from(([127, 0, 0, 1], 9)),
        );
        let (receiver, paths) = serve(
            |path, elsewhere| match path {
                "/moved" => "HTTP/1.1 307 Temporary Redirect\r\nlocation: /notify".to_owned(),
                "/away" => format!(
                    "HTTP/1.1 307 Temporary Redirect\r\nlocation: http://{elsewhere}/stolen"
                ),
                _ => "HTTP/1.1 204 No Content".to_owned(),
            },
            elsewhere,
        );

        webhook(format!("http://{receiver}/moved"))
            .send(&event())
            .await
            .expect("a redirect within the webhook's origin is followed");
        assert_eq!(*paths.lock().expect("paths"), ["/moved", "/notify"]);

        let refused = webhook(format!("http://{receiver}/away"))
            .send(&event())
            .await
            .expect_err("a redirect to another host is not followed");
        assert!(
            matches!(&refused, NotifyError::Refused(status) if status.as_u16() == 307),
            "{refused:?}"
        );
        assert!(
            stolen.lock().expect("paths").is_empty(),
            "the other host never receives the notification"
        );
    }
}
