//! Handles order events: one notification per event id, whatever the number of
//! deliveries or replicas.
//!
//! The event id is claimed in Redis with a lease before sending and marked
//! done after. A replica that dies mid-send leaves a lease that runs out, so
//! another replica resends with the same `Idempotency-Key` header, which lets
//! the receiver drop the copy.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use catga_core::{
    contracts::{OrderEvent, metrics as names, services, subjects},
    error::Chain,
    idempotency::{Claim, IdempotencyStore, Terms},
    messaging::{Delivery, HandleError, Handler},
};

use crate::notifier::Notifier;

/// The claim fingerprint of every event: the event id alone is its identity.
const EVENT_FINGERPRINT: &str = "event";

/// Margin of the send lease over the longest a send can take.
const SEND_LEASE_MARGIN: Duration = Duration::from_secs(5);
/// How long a sent event id is remembered: longer than the events stream keeps events.
const SENT_TTL: Duration = Duration::from_secs(8 * 24 * 3600);
/// The outcome of a sent event: nothing to replay, a done record is the whole answer.
const SENT: &[u8] = b"";

pub struct EventHandler {
    notifier: Notifier,
    records: Arc<dyn IdempotencyStore>,
}

impl EventHandler {
    pub fn new(notifier: Notifier, records: Arc<dyn IdempotencyStore>) -> Self {
        Self { notifier, records }
    }

    fn count(&self, outcome: &'static str) {
        metrics::counter!(names::NOTIFICATIONS, "service" => services::NOTIFICATION_SERVICE, "channel" => self.notifier.channel_name(), "outcome" => outcome)
            .increment(1);
    }
}

#[async_trait]
impl Handler for EventHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
        if ![
            subjects::ORDER_CONFIRMED,
            subjects::ORDER_REJECTED,
            subjects::ORDER_CANCELLED,
        ]
        .contains(&delivery.subject.as_str())
        {
            return Err(HandleError::permanent(format!(
                "unknown event type on subject {}",
                delivery.subject
            )));
        }
        let event: OrderEvent = serde_json::from_slice(&delivery.payload).map_err(|err| {
            HandleError::permanent(format!("undecodable {}", delivery.subject)).caused_by(err)
        })?;
        let terms = Terms {
            lease: self.notifier.worst_case_send_time() + SEND_LEASE_MARGIN,
            ttl: SENT_TTL,
        };
        let claim = self
            .records
            .claim(&event.event_id, EVENT_FINGERPRINT, &event.event_id, terms)
            .await
            .map_err(|err| {
                let transient = err.is_transient();
                failed("cannot claim the event", err, transient)
            })?;
        match claim {
            Claim::Completed { .. } => {
                metrics::counter!(names::IDEMPOTENCY_HITS, "service" => services::NOTIFICATION_SERVICE, "kind" => "event")
                    .increment(1);
                tracing::debug!(event_id = %event.event_id, "already notified");
                return Ok(());
            }
            Claim::InFlight => {
                return Err(HandleError::transient(format!(
                    "event {} is being sent by another replica",
                    event.event_id
                )));
            }
            // Every event claims with the same fingerprint (a republished
            // event differs in its timestamp, not in what it notifies), so
            // there is never a mismatch to refuse.
            Claim::Acquired { .. } | Claim::Mismatch => {}
        }
        match self.notifier.send(&event).await {
            Ok(()) => {
                // A crash after sending and before recording it as sent.
                fail::fail_point!("catga::after-send");
                self.count("sent");
                // If this fails the event may be sent again, with the same
                // Idempotency-Key; the receiver deduplicates.
                if let Err(err) = self.records.complete(&event.event_id, SENT, SENT_TTL).await {
                    tracing::warn!(event_id = %event.event_id, error = %Chain(&err), "cannot record the notification as sent");
                }
                Ok(())
            }
            Err(err) => {
                if let Err(release) = self.records.abandon(&event.event_id).await {
                    tracing::warn!(event_id = %event.event_id, error = %Chain(&release), "cannot release the notification lease; it expires by itself");
                }
                let transient = err.is_transient();
                self.count(if transient { "retry" } else { "refused" });
                Err(failed("cannot notify", err, transient))
            }
        }
    }
}

/// A transient failure is retried in place for as long as it lasts; any
/// other (a refused notification, an unreadable record) will not succeed on
/// redelivery, so the event is dead-lettered with its reason.
fn failed(
    reason: &str,
    err: impl std::error::Error + Send + Sync + 'static,
    transient: bool,
) -> HandleError {
    if transient {
        HandleError::transient(reason)
    } else {
        HandleError::permanent(reason)
    }
    .caused_by(err)
}
