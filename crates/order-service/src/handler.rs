//! Applies order commands: the store makes each command's effect atomic and
//! idempotent, then the resulting event is published with a deterministic id.
//!
//! A redelivered command finds its processed marker, changes nothing, and
//! republishes the same event (same `Nats-Msg-Id`), so a crash between the
//! store update and the publish never loses the event.

use std::sync::Arc;

use async_trait::async_trait;
use catga_core::{
    contracts::{CancelOrder, OrderEvent, PlaceOrder, metrics as names, services, subjects},
    domain::OrderStatus,
    messaging::{Delivery, HandleError, Handler, OutgoingMessage, Publisher},
    store::{Applied, Effect, OrderStore, StoreError},
};
use serde::de::DeserializeOwned;

/// Handles the commands of the `order-processing` consumer.
pub struct CommandHandler {
    store: Arc<dyn OrderStore>,
    publisher: Arc<dyn Publisher>,
}

impl CommandHandler {
    pub fn new(store: Arc<dyn OrderStore>, publisher: Arc<dyn Publisher>) -> Self {
        Self { store, publisher }
    }

    async fn place(&self, command: PlaceOrder) -> Result<(), HandleError> {
        let applied = self
            .store
            .apply_place(&command)
            .await
            .map_err(store_error)?;
        self.record(&applied);
        self.publish_effect(&applied, &command.order_id.to_string(), || OrderEvent {
            event_id: String::new(),
            order_id: command.order_id,
            customer_id: command.customer_id.clone(),
            status: OrderStatus::Pending,
            reason: None,
            total_amount: command.total_amount,
            occurred_at: time::OffsetDateTime::now_utc(),
        })
        .await
    }

    async fn cancel(&self, command: CancelOrder) -> Result<(), HandleError> {
        let order = self
            .store
            .order(&command.order_id)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                HandleError::Permanent(format!("order {} does not exist", command.order_id))
            })?;
        let applied = self
            .store
            .apply_cancel(&command, &order.items)
            .await
            .map_err(store_error)?
            .ok_or_else(|| {
                HandleError::Permanent(format!("order {} does not exist", command.order_id))
            })?;
        self.record(&applied);
        self.publish_effect(&applied, &command.order_id.to_string(), || OrderEvent {
            event_id: String::new(),
            order_id: order.order_id,
            customer_id: order.customer_id.clone(),
            status: OrderStatus::Pending,
            reason: None,
            total_amount: order.total_amount,
            occurred_at: time::OffsetDateTime::now_utc(),
        })
        .await
    }

    fn record(&self, applied: &Applied) {
        if applied.duplicate {
            metrics::counter!(names::IDEMPOTENCY_HITS, "service" => services::ORDER_SERVICE, "kind" => "command")
                .increment(1);
        } else if let Effect::Transitioned { status, .. } = &applied.effect {
            metrics::counter!(names::ORDERS, "service" => services::ORDER_SERVICE, "status" => status.as_str())
                .increment(1);
        }
    }

    /// Publishes the event of a transition (again, for a duplicate: the id is
    /// the same, so the broker and the consumers drop the copy).
    async fn publish_effect(
        &self,
        applied: &Applied,
        order_id: &str,
        base: impl FnOnce() -> OrderEvent,
    ) -> Result<(), HandleError> {
        let Effect::Transitioned { status, reason } = &applied.effect else {
            tracing::info!(%order_id, effect = ?applied.effect, "command had no effect");
            return Ok(());
        };
        let mut event = base();
        event.status = *status;
        event.reason = reason.clone();
        event.event_id = OrderEvent::id_for(&event.order_id, *status);
        let payload = serde_json::to_vec(&event)
            .map_err(|err| HandleError::Permanent(format!("cannot encode event: {err}")))?;
        self.publisher
            .publish(OutgoingMessage::new(
                event.subject(),
                event.event_id.clone(),
                payload.into(),
            ))
            .await
            .map_err(|err| HandleError::Transient(err.to_string()))?;
        tracing::info!(%order_id, status = %status, duplicate = applied.duplicate, "order event published");
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(delivery: &Delivery) -> Result<T, HandleError> {
    serde_json::from_slice(&delivery.payload)
        .map_err(|err| HandleError::Permanent(format!("undecodable {}: {err}", delivery.subject)))
}

fn store_error(err: StoreError) -> HandleError {
    match err {
        StoreError::Unavailable(_) => HandleError::Transient(err.to_string()),
        StoreError::Corrupt(_) => HandleError::Permanent(err.to_string()),
    }
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.subject.as_str() {
            subjects::PLACE_ORDER => self.place(decode(delivery)?).await,
            subjects::CANCEL_ORDER => self.cancel(decode(delivery)?).await,
            other => Err(HandleError::Permanent(format!(
                "unknown message type on subject {other}"
            ))),
        }
    }
}
