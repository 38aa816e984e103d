//! Applies order commands: the store makes each command's effect atomic and
//! idempotent, then the resulting event is published with a deterministic id.
//!
//! A redelivered command finds its processed marker, changes nothing, and
//! republishes the same event (same `Nats-Msg-Id`), so a crash between the
//! store update and the publish never loses the event.

use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use catga_core::{
    contracts::{
        CancelOrder, EventKind, OrderEvent, PlaceOrder, metrics as names, services, subjects,
    },
    domain::{OrderId, OrderStatus},
    messaging::{Delivery, HandleError, Handler, OutgoingMessage, Publisher},
    store::{Applied, CommandApplier, Effect},
};
use metrics::Counter;
use rust_decimal::Decimal;
use serde::de::DeserializeOwned;

/// Handles the commands of the `order-processing` consumer. It needs only the
/// write side of the store.
pub struct CommandHandler {
    store: Arc<dyn CommandApplier>,
    publisher: Arc<dyn Publisher>,
    /// Orders moved to each status, by `OrderStatus` (registered on first
    /// use and kept, so counting looks nothing up).
    orders: [OnceLock<Counter>; OrderStatus::ALL.len()],
    /// Events published, by `EventKind`.
    published: [OnceLock<Counter>; EventKind::ALL.len()],
}

impl CommandHandler {
    pub fn new(store: Arc<dyn CommandApplier>, publisher: Arc<dyn Publisher>) -> Self {
        Self {
            store,
            publisher,
            orders: Default::default(),
            published: Default::default(),
        }
    }

    async fn place(&self, command: PlaceOrder) -> Result<(), HandleError> {
        // NATS takes commands from any publisher: a command is applied only if
        // order-api could have sent it. Whether its products exist is checked
        // by the store, atomically with the reservation.
        command.validate().map_err(|err| {
            HandleError::permanent(format!("invalid place command {}", command.command_id))
                .caused_by(err)
        })?;
        let applied = self.store.apply_place(&command).await?;
        // A crash after the effect is stored and before its event is published.
        fail::fail_point!("catga::after-apply");
        self.record(&applied);
        self.publish_effect(
            &applied,
            command.order_id,
            &command.customer_id,
            command.total_amount,
        )
        .await
    }

    async fn cancel(&self, command: CancelOrder) -> Result<(), HandleError> {
        let Some(cancelled) = self.store.apply_cancel(&command).await? else {
            return Err(HandleError::permanent(format!(
                "order {} does not exist",
                command.order_id
            )));
        };
        fail::fail_point!("catga::after-apply");
        self.record(&cancelled.applied);
        let order = &cancelled.order;
        self.publish_effect(
            &cancelled.applied,
            order.order_id,
            &order.customer_id,
            order.total_amount,
        )
        .await
    }

    fn record(&self, applied: &Applied) {
        if applied.duplicate {
            metrics::counter!(names::IDEMPOTENCY_HITS, "service" => services::ORDER_SERVICE, "kind" => "command")
                .increment(1);
        } else if let Effect::Transitioned { status, .. } = &applied.effect {
            let status = *status;
            self.orders[status as usize]
                .get_or_init(|| metrics::counter!(names::ORDERS, "service" => services::ORDER_SERVICE, "status" => status.as_str()))
                .increment(1);
        }
    }

    /// Publishes the event of a transition (again, for a duplicate: the id is
    /// the same, so the broker and the consumers drop the copy).
    async fn publish_effect(
        &self,
        applied: &Applied,
        order_id: OrderId,
        customer_id: &str,
        total_amount: Decimal,
    ) -> Result<(), HandleError> {
        let Effect::Transitioned { status, reason } = &applied.effect else {
            tracing::info!(%order_id, effect = ?applied.effect, "command had no effect");
            return Ok(());
        };
        // The store never moves an order to Pending; if it said so, no event
        // subject fits and the command is dead-lettered rather than misfiled.
        let kind = EventKind::try_from(*status).map_err(|err| {
            HandleError::permanent("no event fits the store's answer").caused_by(err)
        })?;
        let event = OrderEvent {
            event_id: OrderEvent::id_for(&order_id, kind),
            order_id,
            customer_id: customer_id.to_owned(),
            status: kind,
            reason: reason.clone(),
            total_amount,
            occurred_at: time::OffsetDateTime::now_utc(),
        };
        let payload = serde_json::to_vec(&event)
            .map_err(|err| HandleError::permanent("cannot encode event").caused_by(err))?;
        self.publisher
            .publish(OutgoingMessage::new(
                event.subject(),
                event.event_id.clone(),
                payload.into(),
            ))
            .await?;
        self.published[kind as usize]
            .get_or_init(|| metrics::counter!(names::MESSAGES_PUBLISHED, "service" => services::ORDER_SERVICE, "subject" => kind.subject()))
            .increment(1);
        tracing::info!(%order_id, status = %status, duplicate = applied.duplicate, "order event published");
        Ok(())
    }
}

fn decode<T: DeserializeOwned>(delivery: &Delivery) -> Result<T, HandleError> {
    serde_json::from_slice(&delivery.payload).map_err(|err| {
        HandleError::permanent(format!("undecodable {}", delivery.subject)).caused_by(err)
    })
}

#[async_trait]
impl Handler for CommandHandler {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
        match delivery.subject.as_str() {
            subjects::PLACE_ORDER => self.place(decode(delivery)?).await,
            subjects::CANCEL_ORDER => self.cancel(decode(delivery)?).await,
            other => Err(HandleError::permanent(format!(
                "unknown message type on subject {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use async_trait::async_trait;
    use catga_core::{
        contracts::{CancelOrder, OrderEvent, PlaceOrder, subjects},
        domain::{OrderId, OrderStatus, PricedItem, default_catalog},
        messaging::{
            Acker, Delivery, HandleError, Handler, MessagingError, OutgoingMessage, Publisher,
        },
        store::{Catalog, MemoryStore, OrderQueries},
    };
    use rust_decimal::Decimal;

    use super::CommandHandler;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<OutgoingMessage>>);

    #[async_trait]
    impl Publisher for Recorder {
        async fn send(&self, message: OutgoingMessage) -> Result<(), MessagingError> {
            self.0.lock().expect("lock").push(message);
            Ok(())
        }
    }

    struct NoAck;

    #[async_trait]
    impl Acker for NoAck {
        async fn ack(&self) -> Result<(), MessagingError> {
            Ok(())
        }
        async fn nak(&self, _: std::time::Duration) -> Result<(), MessagingError> {
            Ok(())
        }
        async fn term(&self) -> Result<(), MessagingError> {
            Ok(())
        }
        async fn in_progress(&self) -> Result<(), MessagingError> {
            Ok(())
        }
    }

    fn delivery(subject: &str, payload: Vec<u8>) -> Delivery {
        Delivery {
            id: "test:1".into(),
            subject: subject.into(),
            headers: Vec::new(),
            payload: payload.into(),
            delivered: 1,
            acker: Box::new(NoAck),
            slot: None,
        }
    }

    fn place(order_id: OrderId, quantity: u32) -> PlaceOrder {
        PlaceOrder {
            command_id: format!("place:{order_id}"),
            order_id,
            customer_id: "c".into(),
            items: vec![PricedItem {
                product_id: "PROD-003".into(),
                product_name: "USB-C Hub".into(),
                quantity,
                unit_price: Decimal::new(8900, 2),
            }],
            total_amount: Decimal::new(8900, 2) * Decimal::from(quantity),
            created_at: time::OffsetDateTime::now_utc(),
        }
    }

    async fn setup() -> (MemoryStore, Arc<Recorder>, CommandHandler) {
        let store = MemoryStore::new();
        store
            .ensure_catalog(&default_catalog())
            .await
            .expect("seed");
        let recorder = Arc::new(Recorder::default());
        let handler = CommandHandler::new(Arc::new(store.clone()), recorder.clone());
        (store, recorder, handler)
    }

    fn events(recorder: &Recorder) -> Vec<(String, OrderEvent)> {
        recorder
            .0
            .lock()
            .expect("lock")
            .iter()
            .map(|m| {
                (
                    m.msg_id.clone(),
                    serde_json::from_slice(&m.payload).expect("event"),
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn a_redelivered_command_republishes_the_same_event_and_reserves_once() {
        let (store, recorder, handler) = setup().await;
        let order_id = OrderId::new();
        let payload = serde_json::to_vec(&place(order_id, 150)).expect("json");
        for _ in 0..2 {
            handler
                .handle(&delivery(subjects::PLACE_ORDER, payload.clone()))
                .await
                .expect("handled");
        }
        let stock = store.products_by_id(&["PROD-003"]).await.expect("read")[0]
            .as_ref()
            .expect("exists")
            .stock;
        assert_eq!(stock, 50, "reserved once");
        let published = events(&recorder);
        assert_eq!(published.len(), 2);
        assert_eq!(
            published[0].0, published[1].0,
            "same Nats-Msg-Id both times"
        );
        assert_eq!(published[0].0, format!("{order_id}:Confirmed"));
        assert_eq!(published[0].1.status, OrderStatus::Confirmed);

        // The next order cannot be served from the 50 left.
        let second = OrderId::new();
        let payload = serde_json::to_vec(&place(second, 51)).expect("json");
        handler
            .handle(&delivery(subjects::PLACE_ORDER, payload))
            .await
            .expect("handled");
        let order = store.order(&second).await.expect("read").expect("exists");
        assert_eq!(order.status, OrderStatus::Rejected);
        assert!(
            order
                .reason
                .as_deref()
                .unwrap_or("")
                .contains("insufficient stock")
        );
    }

    #[tokio::test]
    async fn cancelling_a_confirmed_order_releases_its_stock_once() {
        let (store, recorder, handler) = setup().await;
        let order_id = OrderId::new();
        let payload = serde_json::to_vec(&place(order_id, 10)).expect("json");
        handler
            .handle(&delivery(subjects::PLACE_ORDER, payload))
            .await
            .expect("placed");
        let cancel = serde_json::to_vec(&CancelOrder {
            command_id: format!("cancel:{order_id}"),
            order_id,
        })
        .expect("json");
        for _ in 0..2 {
            handler
                .handle(&delivery(subjects::CANCEL_ORDER, cancel.clone()))
                .await
                .expect("cancelled");
        }
        let stock = store.products_by_id(&["PROD-003"]).await.expect("read")[0]
            .as_ref()
            .expect("exists")
            .stock;
        assert_eq!(stock, 200);
        let last = events(&recorder).pop().expect("event");
        assert_eq!(last.0, format!("{order_id}:Cancelled"));
    }

    #[tokio::test]
    async fn forged_place_commands_are_permanent_failures_and_change_nothing() {
        let (store, recorder, handler) = setup().await;
        let mut repeated = place(OrderId::new(), 150);
        repeated.items.push(repeated.items[0].clone());
        repeated.total_amount *= Decimal::from(2);
        let mut wrong_total = place(OrderId::new(), 1);
        wrong_total.total_amount = Decimal::new(1, 2);
        let mut unknown = place(OrderId::new(), 1);
        unknown.items[0].product_id = "PROD-404".into();
        for (command, why) in [
            (&repeated, "appears more than once"),
            (&wrong_total, "totalAmount must be 89"),
            (&unknown, "unknown product PROD-404"),
        ] {
            let payload = serde_json::to_vec(command).expect("json");
            let err = handler
                .handle(&delivery(subjects::PLACE_ORDER, payload))
                .await
                .expect_err("refused");
            assert!(!err.is_transient(), "{err}");
            let chain = catga_core::error::Chain(&err).to_string();
            assert!(chain.contains(why), "{chain}");
            assert_eq!(store.order(&command.order_id).await.expect("read"), None);
        }
        let stock = store.products_by_id(&["PROD-003"]).await.expect("read")[0]
            .as_ref()
            .expect("exists")
            .stock;
        assert_eq!(stock, 200, "no stock taken");
        assert!(events(&recorder).is_empty());
    }

    #[tokio::test]
    async fn poison_messages_are_permanent_failures() {
        let (_, recorder, handler) = setup().await;
        for (subject, payload) in [
            (subjects::PLACE_ORDER, b"{not json".to_vec()),
            ("catga.orders.commands.refund", b"{}".to_vec()),
        ] {
            let err = handler
                .handle(&delivery(subject, payload))
                .await
                .expect_err("poison");
            assert!(matches!(err, HandleError::Permanent { .. }), "{err}");
        }
        let missing = serde_json::to_vec(&CancelOrder {
            command_id: "cancel:x".into(),
            order_id: OrderId::new(),
        })
        .expect("json");
        let err = handler
            .handle(&delivery(subjects::CANCEL_ORDER, missing))
            .await
            .expect_err("unknown order");
        assert!(matches!(err, HandleError::Permanent { .. }));
        assert!(events(&recorder).is_empty());
    }
}
