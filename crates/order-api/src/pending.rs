//! No orphan orders: order-api records a pending order, then publishes its
//! command. If it dies in between, nothing would ever move that order on. So
//! every replica periodically re-publishes the command of each order still
//! pending well after it was placed, rebuilt from the pending record with
//! the same command id and `Nats-Msg-Id`. JetStream drops the copy of a
//! command it already holds (duplicate window), and order-service applies a
//! command id once, so a re-publish never doubles an order.

use std::{sync::Arc, time::Duration};

use catga_core::{
    CancellationToken,
    contracts::{PlaceOrder, subjects},
    messaging::{OutgoingMessage, Publisher},
    store::OrderIntake,
};
use time::OffsetDateTime;

/// Far longer than a request takes to publish (`http::PUBLISH_TIMEOUT`), so
/// an order whose request is still under way is not re-published.
pub const DEFAULT_REPUBLISH_AFTER_SECONDS: u64 = 30;

/// Orders re-published per round.
const BATCH: usize = 100;

/// Every `after / 2` (at most 10 s), re-publishes the commands of orders
/// pending longer than `after`, until `shutdown`. Failures are retried next round.
pub async fn republish_overdue(
    store: Arc<dyn OrderIntake>,
    publisher: Arc<dyn Publisher>,
    after: Duration,
    shutdown: CancellationToken,
) {
    let period = (after / 2).min(Duration::from_secs(10));
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        let created_before = OffsetDateTime::now_utc() - after;
        let overdue = match store.overdue_pending(created_before, BATCH).await {
            Ok(overdue) => overdue,
            Err(err) => {
                tracing::debug!(error = %catga_core::error::chain(&err), "cannot look for overdue pending orders");
                continue;
            }
        };
        for draft in overdue {
            let command = PlaceOrder::from_draft(&draft);
            let Ok(payload) = serde_json::to_vec(&command) else {
                continue;
            };
            let message =
                OutgoingMessage::new(subjects::PLACE_ORDER, &command.command_id, payload.into());
            match publisher.publish(message).await {
                Ok(()) => {
                    tracing::warn!(order_id = %draft.order_id, "re-published the command of an overdue pending order");
                }
                Err(err) => {
                    tracing::debug!(order_id = %draft.order_id, error = %catga_core::error::chain(&err), "cannot re-publish yet");
                    break;
                }
            }
        }
    }
}
