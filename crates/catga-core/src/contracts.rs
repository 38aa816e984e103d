//! The wire contract between the services: stream, subject, consumer, header,
//! Redis key and metric names, and the command and event payloads.
//!
//! Every other crate, the manifests' tests included, refers to these constants
//! instead of repeating the strings.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::domain::{
    self, OrderDraft, OrderId, OrderStatus, PricedItem, RequestedItem, ValidationError, limits,
};

/// JetStream streams and the subjects they capture.
pub mod streams {
    /// Commands addressed to order-service. Work-queue retention: a command is
    /// removed once a consumer acknowledges (or terminates) it.
    pub const ORDER_COMMANDS: &str = "CATGA_ORDER_COMMANDS";
    pub const ORDER_COMMANDS_SUBJECTS: &str = "catga.orders.commands.>";

    /// Facts published by order-service; kept for a week so new consumers can replay.
    pub const ORDER_EVENTS: &str = "CATGA_ORDER_EVENTS";
    pub const ORDER_EVENTS_SUBJECTS: &str = "catga.orders.events.>";

    /// Messages that can never succeed, with the reason they were given up on.
    pub const DEAD_LETTERS: &str = "CATGA_DEAD_LETTERS";
    pub const DEAD_LETTERS_SUBJECTS: &str = "catga.deadletter.>";
}

/// Subjects messages are published on.
pub mod subjects {
    pub const PLACE_ORDER: &str = "catga.orders.commands.place";
    pub const CANCEL_ORDER: &str = "catga.orders.commands.cancel";
    pub const ORDER_CONFIRMED: &str = "catga.orders.events.confirmed";
    pub const ORDER_REJECTED: &str = "catga.orders.events.rejected";
    pub const ORDER_CANCELLED: &str = "catga.orders.events.cancelled";
    /// Dead letters are published on `catga.deadletter.<original subject>`.
    pub const DEAD_LETTER_PREFIX: &str = "catga.deadletter";

    /// The dead-letter subject for a message that arrived on `original`.
    pub fn dead_letter_for(original: &str) -> String {
        format!("{DEAD_LETTER_PREFIX}.{original}")
    }

    /// Where a service's replies (JetStream acks and API answers) come back:
    /// `_INBOX_<service>`. Its NATS user may subscribe only below it
    /// (docker/nats/auth.conf), so no service can read another's replies.
    pub fn inbox_prefix(service: &str) -> String {
        format!("_INBOX_{service}")
    }
}

/// Durable consumer names.
pub mod consumers {
    /// The queue group every order-service replica shares (`NATS__QueueGroup`).
    pub const ORDER_PROCESSING: &str = "order-processing";
    pub const NOTIFICATIONS: &str = "notification-service";
}

/// Message and HTTP header names.
pub mod headers {
    /// JetStream publish-side deduplication.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";
    /// Set on dead letters.
    pub const DEAD_LETTER_REASON: &str = "Catga-Dead-Letter-Reason";
    pub const DEAD_LETTER_SUBJECT: &str = "Catga-Original-Subject";
    pub const DEAD_LETTER_DELIVERIES: &str = "Catga-Delivery-Count";
    pub const DEAD_LETTER_SERVICE: &str = "Catga-Dead-Lettered-By";
}

/// Redis keys. All keys share the `catga:` prefix so the keyspace is easy to inspect.
pub mod redis_keys {
    /// Hash `{name, unitPrice, stock}` per product.
    pub const PRODUCT_PREFIX: &str = "catga:product:";
    /// Set of all product ids.
    pub const PRODUCT_IDS: &str = "catga:products";
    /// Hash `{doc, status, reason, updatedAt}` per order.
    pub const ORDER_PREFIX: &str = "catga:order:";
    /// Sorted set of order ids (all score 0, ordered by the time-ordered id).
    pub const ORDER_INDEX: &str = "catga:orders";
    /// Sorted set per customer (`{prefix}{customerId}`), shaped like
    /// [`ORDER_INDEX`]: one customer's orders, so listing them reads only
    /// theirs however many orders the store holds. Written in the same atomic
    /// step as the order.
    pub const CUSTOMER_ORDER_INDEX_PREFIX: &str = "catga:orders:customer:";
    /// Sorted set of order ids by creation time (Unix ms) whose command may not
    /// be durable yet; order-api re-publishes those still pending when overdue.
    pub const PENDING_ORDERS: &str = "catga:orders:pending";
    /// Sorted set of final order ids by the time (Unix ms) they became final
    /// (Confirmed, Rejected, Cancelled): what retention walks, oldest first.
    pub const FINAL_ORDERS: &str = "catga:orders:final";
    /// Outcome of an applied command, keyed by command id: the command idempotency record.
    pub const PROCESSED_PREFIX: &str = "catga:processed:";
    /// HTTP `Idempotency-Key` records.
    pub const HTTP_IDEMPOTENCY_PREFIX: &str = "catga:idem:http:";
    /// Notification delivery records, keyed by event id.
    pub const NOTIFICATION_PREFIX: &str = "catga:idem:notify:";
}

/// Metric names exported on `/metrics`. Every series has a `service` label.
pub mod metrics {
    /// Counter `{service, kind=http|message, operation, outcome[, status]}`: HTTP
    /// requests (operation = `METHOD /route/template`) and handled messages
    /// (operation = `place`, `cancel`, `confirmed`, …).
    pub const REQUESTS_TOTAL: &str = "catga_requests_total";
    /// Histogram in seconds `{service, kind, operation}`, same population as above.
    pub const REQUEST_DURATION: &str = "catga_request_duration";
    /// Counter `{service, subject}`.
    pub const MESSAGES_PUBLISHED: &str = "catga_messages_published_total";
    /// Counter `{service, outcome=success|dead_lettered|handed_back}`.
    pub const MESSAGES_PROCESSED: &str = "catga_messages_processed_total";
    /// Counter `{service}`: deliveries after the first.
    pub const REDELIVERIES: &str = "catga_redeliveries_total";
    /// Counter `{service}`.
    pub const DEAD_LETTERS: &str = "catga_dead_letters_total";
    /// Counter `{service, kind=http|command|event}`: duplicates recognised.
    pub const IDEMPOTENCY_HITS: &str = "catga_idempotency_hits_total";
    /// Counter `{service, status}`: accepted (`Pending`, order-api) and final
    /// transitions (order-service).
    pub const ORDERS: &str = "catga_orders_total";
    /// Counter `{service, channel=log|webhook, outcome=sent|retry|refused}`.
    pub const NOTIFICATIONS: &str = "catga_notifications_total";
    /// Gauge `{service, consumer}`: messages not yet delivered to the durable consumer.
    pub const CONSUMER_PENDING: &str = "catga_consumer_pending";
    /// Gauge `{service, consumer}`: delivered, not yet acknowledged.
    pub const CONSUMER_ACK_PENDING: &str = "catga_consumer_ack_pending";
    /// Gauge `{service, dependency=nats|redis}`: 1 while usable.
    pub const DEPENDENCY_UP: &str = "catga_dependency_up";
    /// Gauge `{service}`: 1 while the readiness probe would answer 200.
    pub const READY: &str = "catga_ready";
    /// Counter `{service, reason}`: requests refused for their bearer token
    /// (`missing`, `malformed`, `algorithm`, `unknown_key`, `signature`,
    /// `expired`, `not_yet_valid`, `audience`, `issuer`, `claims`, `keys_unavailable`).
    pub const AUTH_REFUSALS: &str = "catga_auth_refusals_total";
}

/// Service names as they appear in the `service` metric label and in logs.
pub mod services {
    pub const ORDER_API: &str = "order-api";
    pub const ORDER_SERVICE: &str = "order-service";
    pub const NOTIFICATION_SERVICE: &str = "notification-service";
}

/// Command published by order-api on [`subjects::PLACE_ORDER`].
///
/// Carries the priced order so order-service never needs a second source of
/// truth: prices are fixed at acceptance time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PlaceOrder {
    /// Idempotency key of the command; also its `Nats-Msg-Id`.
    pub command_id: String,
    pub order_id: OrderId,
    pub customer_id: String,
    pub items: Vec<PricedItem>,
    #[serde(with = "rust_decimal::serde::str")]
    pub total_amount: Decimal,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: time::OffsetDateTime,
}

impl PlaceOrder {
    /// The order this command places, as it is recorded.
    /// The place command of a pending order: what order-api publishes, and
    /// re-publishes (same id, same `Nats-Msg-Id`) for an order whose command
    /// may never have reached the stream.
    pub fn from_draft(draft: &OrderDraft) -> Self {
        Self {
            command_id: Self::command_id_for(&draft.order_id),
            order_id: draft.order_id,
            customer_id: draft.customer_id.clone(),
            items: draft.items.clone(),
            total_amount: draft.total_amount,
            created_at: draft.created_at,
        }
    }

    /// The command id a place command must carry: one per order, so that a
    /// redelivery (or a re-publish by order-api) is recognised.
    pub fn command_id_for(order_id: &OrderId) -> String {
        format!("place:{order_id}")
    }

    /// Checks what order-service can check without the store: the shape rules
    /// order-api applied (`domain::validate_order_request`), a well-formed
    /// command id, positive prices, and a total equal to the sum of its lines.
    /// The unit prices are taken as the command states them: they are the
    /// prices the customer was quoted at acceptance, and comparing them with
    /// the catalog now would reject honest orders whenever a price changes
    /// between acceptance and application. Whether the products exist is the
    /// store's check, made in the same atomic step that reserves the stock.
    pub fn validate(&self) -> Result<(), ValidationError> {
        let expected_id = Self::command_id_for(&self.order_id);
        if self.command_id != expected_id {
            return Err(ValidationError::Inconsistent {
                field: "commandId".to_owned(),
                expected: expected_id,
            });
        }
        let requested: Vec<RequestedItem> = self
            .items
            .iter()
            .map(|item| RequestedItem::new(item.product_id.clone(), item.quantity))
            .collect();
        domain::validate_order_request(&self.customer_id, &requested)?;
        let mut total = Decimal::ZERO;
        for (index, item) in self.items.iter().enumerate() {
            domain::validate_text(
                &format!("items[{index}].productName"),
                &item.product_name,
                limits::MAX_NAME_LEN,
            )?;
            if item.unit_price <= Decimal::ZERO {
                return Err(ValidationError::OutOfRange {
                    field: format!("items[{index}].unitPrice"),
                    min: "0.01".to_owned(),
                    max: "any".to_owned(),
                });
            }
            total = item
                .unit_price
                .checked_mul(Decimal::from(item.quantity))
                .and_then(|line| total.checked_add(line))
                .ok_or_else(|| ValidationError::OutOfRange {
                    field: format!("items[{index}].unitPrice"),
                    min: "0.01".to_owned(),
                    max: "a representable total".to_owned(),
                })?;
        }
        if self.total_amount != total {
            return Err(ValidationError::Inconsistent {
                field: "totalAmount".to_owned(),
                expected: format!("{total} (the sum of its lines)"),
            });
        }
        Ok(())
    }

    pub fn draft(&self) -> OrderDraft {
        OrderDraft {
            order_id: self.order_id,
            customer_id: self.customer_id.clone(),
            items: self.items.clone(),
            total_amount: self.total_amount,
            created_at: self.created_at,
        }
    }
}

/// Command published by order-api on [`subjects::CANCEL_ORDER`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelOrder {
    pub command_id: String,
    pub order_id: OrderId,
}

/// What an [`OrderEvent`] reports: one of the statuses a command can move an
/// order to. `Pending` is not among them (an order is created pending by
/// order-api, never by an event), so no event can carry it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventKind {
    Confirmed,
    Rejected,
    Cancelled,
}

impl EventKind {
    pub const ALL: [EventKind; 3] = [
        EventKind::Confirmed,
        EventKind::Rejected,
        EventKind::Cancelled,
    ];

    /// The order status this event reports.
    pub fn status(self) -> OrderStatus {
        match self {
            EventKind::Confirmed => OrderStatus::Confirmed,
            EventKind::Rejected => OrderStatus::Rejected,
            EventKind::Cancelled => OrderStatus::Cancelled,
        }
    }

    /// The subject events of this kind are published on.
    pub fn subject(self) -> &'static str {
        match self {
            EventKind::Confirmed => subjects::ORDER_CONFIRMED,
            EventKind::Rejected => subjects::ORDER_REJECTED,
            EventKind::Cancelled => subjects::ORDER_CANCELLED,
        }
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(&self.status(), f)
    }
}

/// A status no event reports (`Pending`).
#[derive(Debug, thiserror::Error)]
#[error("no event reports the status {0}")]
pub struct NoEventFor(pub OrderStatus);

impl TryFrom<OrderStatus> for EventKind {
    type Error = NoEventFor;

    fn try_from(status: OrderStatus) -> Result<Self, Self::Error> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.status() == status)
            .ok_or(NoEventFor(status))
    }
}

impl PartialEq<OrderStatus> for EventKind {
    fn eq(&self, status: &OrderStatus) -> bool {
        self.status() == *status
    }
}

/// An order reached a new status. Published by order-service; its `event_id`
/// is deterministic (`<orderId>:<status>`) so a redelivered command republishes
/// the very same event and every consumer can deduplicate on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderEvent {
    pub event_id: String,
    pub order_id: OrderId,
    pub customer_id: String,
    /// On the wire `"status": "Confirmed" | "Rejected" | "Cancelled"`.
    pub status: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(with = "rust_decimal::serde::str")]
    pub total_amount: Decimal,
    #[serde(with = "time::serde::rfc3339")]
    pub occurred_at: time::OffsetDateTime,
}

impl OrderEvent {
    /// The deterministic event id for `order_id` reaching `kind`'s status.
    pub fn id_for(order_id: &OrderId, kind: EventKind) -> String {
        format!("{order_id}:{kind}")
    }

    /// The subject this event is published on.
    pub fn subject(&self) -> &'static str {
        self.status.subject()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(product_id: &str, quantity: u32, cents: i64) -> PricedItem {
        PricedItem {
            product_id: product_id.to_owned(),
            product_name: format!("{product_id} name"),
            quantity,
            unit_price: Decimal::new(cents, 2),
        }
    }

    fn command(items: Vec<PricedItem>) -> PlaceOrder {
        let order_id = OrderId::new();
        PlaceOrder {
            command_id: PlaceOrder::command_id_for(&order_id),
            order_id,
            customer_id: "c".to_owned(),
            total_amount: items
                .iter()
                .map(|item| item.unit_price * Decimal::from(item.quantity))
                .sum(),
            items,
            created_at: time::OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn a_place_command_is_checked_line_by_line_and_against_its_total() {
        let valid = command(vec![line("P1", 2, 1999), line("P2", 1, 4950)]);
        assert_eq!(valid.validate(), Ok(()));
        // The same value at another scale is the same total.
        let rescaled = PlaceOrder {
            total_amount: Decimal::new(8948000, 5),
            ..valid.clone()
        };
        assert_eq!(rescaled.validate(), Ok(()));

        let cases = [
            (
                command(vec![line("P1", 1, 1999), line("P1", 1, 1999)]),
                "items[1].productId",
            ),
            (command(vec![line("P1", 0, 1999)]), "items[0].quantity"),
            (command(vec![line("P1", 1001, 1999)]), "items[0].quantity"),
            (command(vec![line("P1", 1, 0)]), "items[0].unitPrice"),
            (command(vec![line(" ", 1, 1999)]), "items[0].productId"),
            (command(vec![]), "items"),
            (
                PlaceOrder {
                    total_amount: Decimal::new(1, 2),
                    ..valid.clone()
                },
                "totalAmount",
            ),
            (
                PlaceOrder {
                    command_id: "place:another".to_owned(),
                    ..valid.clone()
                },
                "commandId",
            ),
            (
                PlaceOrder {
                    customer_id: "x".repeat(65),
                    ..valid.clone()
                },
                "customerId",
            ),
            (
                command(vec![PricedItem {
                    product_name: "n".repeat(201),
                    ..line("P1", 1, 1999)
                }]),
                "items[0].productName",
            ),
        ];
        for (command, field) in cases {
            let err = command.validate().expect_err(field);
            assert_eq!(err.field(), field, "{err}");
        }
    }

    #[test]
    fn each_event_kind_has_its_own_subject_and_the_status_name_on_the_wire() {
        let subjects: std::collections::HashSet<_> =
            EventKind::ALL.iter().map(|kind| kind.subject()).collect();
        assert_eq!(subjects.len(), EventKind::ALL.len());
        for kind in EventKind::ALL {
            let wire = serde_json::to_string(&kind).expect("serialises");
            assert_eq!(wire, serde_json::to_string(&kind.status()).expect("status"));
            assert!(
                kind.subject()
                    .ends_with(&kind.status().as_str().to_lowercase())
            );
            assert_eq!(EventKind::try_from(kind.status()).ok(), Some(kind));
        }
        assert!(EventKind::try_from(OrderStatus::Pending).is_err());
        assert!(serde_json::from_str::<EventKind>("\"Pending\"").is_err());
    }
}
