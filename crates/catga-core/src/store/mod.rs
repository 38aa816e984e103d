//! The order store: catalog, orders, and the atomic, idempotent application of
//! commands to them (the write model).
//!
//! The store is seen through one trait per role, so each service's part is
//! visible on its own:
//!
//! | trait | who uses it | what it does |
//! |---|---|---|
//! | [`Catalog`] | order-api | seeds, lists, looks up and upserts products |
//! | [`OrderIntake`] | order-api | records a pending order, discards one whose command never became durable |
//! | [`OrderQueries`] | order-api | reads one order, pages through orders (all, or one customer's) newest first |
//! | [`CommandApplier`] | order-service | applies place and cancel commands (the write model) |
//! | [`Retention`] | order-service | removes final orders past their retention, with their index entries |
//! | [`Ping`] | every service's readiness | whether the store answers |
//!
//! [`OrderStore`] is all of them at once, for code that holds one store for
//! several roles (connection set-up, the embedded mode).
//!
//! The stock and state rules are in `README.md` next to this file; the Redis
//! scripts that enforce them are in `lua/`. [`RedisStore`] is the production
//! store; [`MemoryStore`] backs the embedded single-process mode and follows
//! the same rules. Both are held to one contract by `tests/contracts`.

mod connection;
mod memory;
mod redis;

pub use connection::RedisConnection;
pub use memory::MemoryStore;
pub use redis::{RedisStore, connect as connect_redis};

use async_trait::async_trait;

use crate::{
    contracts::{CancelOrder, PlaceOrder},
    domain::{Order, OrderDraft, OrderId, OrderStatus, Product},
    error::BoxError,
};

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Redis could not be reached, did not answer in time, or refused the
    /// command; [`StoreError::is_transient`] says which.
    #[error("Redis {}", .0.category())]
    Redis(#[from] ::redis::RedisError),
    /// The store refused a command that can never apply (a product that does
    /// not exist, the same product on two lines); nothing was changed.
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The store holds data that breaks its own shape.
    #[error("the store holds data that cannot be read: {0}")]
    Corrupt(String),
    /// A stored value could not be decoded (or a value to store encoded).
    #[error("cannot decode {what}")]
    Decode {
        what: String,
        #[source]
        source: BoxError,
    },
}

impl StoreError {
    pub(crate) fn decode(what: impl Into<String>, source: impl Into<BoxError>) -> Self {
        StoreError::Decode {
            what: what.into(),
            source: source.into(),
        }
    }

    /// Whether trying again later can succeed: yes when Redis is away, slow, or
    /// in a failover; no when it refused the command (a script error,
    /// `WRONGTYPE`), when its reply cannot be parsed, or when data is corrupt.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Redis(err) => redis_error_is_transient(err),
            StoreError::InvalidCommand(_) | StoreError::Corrupt(_) | StoreError::Decode { .. } => {
                false
            }
        }
    }

    /// Redis refused a write for memory (`maxmemory` reached under
    /// `noeviction`): transient, as retention or an operator frees memory,
    /// but worth saying so to whoever waits.
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, StoreError::Redis(err) if redis_error_is_out_of_memory(err))
    }
}

/// `OOM command not allowed when used memory > 'maxmemory'`, also when a
/// script's write met it (Redis 7 passes the command's error code through).
pub(crate) fn redis_error_is_out_of_memory(err: &::redis::RedisError) -> bool {
    err.code() == Some("OOM")
}

/// The one rule for Redis errors, shared by the order store and the
/// idempotency records.
pub(crate) fn redis_error_is_transient(err: &::redis::RedisError) -> bool {
    use ::redis::{ErrorKind, ServerErrorKind};
    if err.is_timeout() || err.is_connection_dropped() || err.is_connection_refusal() {
        return true;
    }
    // Replies redis-rs has no kind for: out of memory until keys expire, a
    // script still running, too few replicas for a write.
    if redis_error_is_out_of_memory(err) || matches!(err.code(), Some("BUSY" | "NOREPLICAS")) {
        return true;
    }
    matches!(
        err.kind(),
        ErrorKind::Io
            | ErrorKind::ClusterConnectionNotFound
            | ErrorKind::MasterNameNotFoundBySentinel
            | ErrorKind::NoValidReplicasFoundBySentinel
            | ErrorKind::Server(
                ServerErrorKind::BusyLoading
                    | ServerErrorKind::TryAgain
                    | ServerErrorKind::MasterDown
                    | ServerErrorKind::ClusterDown
                    | ServerErrorKind::ReadOnly
            )
    )
}

/// What applying a command did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    /// True when this command id had already been applied: nothing changed now.
    pub duplicate: bool,
    pub effect: Effect,
}

/// The effect a command had (or, for a duplicate, had the first time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// The order moved to `status`; an event must be published for it.
    Transitioned {
        status: OrderStatus,
        reason: Option<String>,
    },
    /// The order was already past the point where the command applies
    /// (for example a place command for an order cancelled while pending).
    Unchanged { status: OrderStatus },
}

impl Effect {
    /// Reads a processed marker as the Lua scripts write it: `kind|Status|reason`.
    pub(crate) fn decode(raw: &str) -> Result<Self, StoreError> {
        let corrupt = || StoreError::Corrupt(format!("processed marker {raw:?}"));
        let mut parts = raw.splitn(3, '|');
        let (kind, status, reason) = (parts.next(), parts.next(), parts.next());
        let status: OrderStatus = status.ok_or_else(corrupt)?.parse().map_err(|_| corrupt())?;
        match kind {
            Some("applied") => Ok(Effect::Transitioned {
                status,
                reason: reason.filter(|r| !r.is_empty()).map(str::to_owned),
            }),
            Some("unchanged") => Ok(Effect::Unchanged { status }),
            _ => Err(corrupt()),
        }
    }
}

/// A cancel command applied to an existing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelApplied {
    /// The order as read just before the cancel took effect (its lines,
    /// customer and total never change; its status may have).
    pub order: Order,
    pub applied: Applied,
}

/// Whether the store answers.
#[async_trait]
pub trait Ping: Send + Sync + 'static {
    async fn ping(&self) -> Result<(), StoreError>;
}

/// The product catalog (order-api).
#[async_trait]
pub trait Catalog: Send + Sync + 'static {
    /// Seeds `catalog` if there are no products at all.
    async fn ensure_catalog(&self, catalog: &[Product]) -> Result<(), StoreError>;

    /// Every product, by id.
    async fn products(&self) -> Result<Vec<Product>, StoreError>;

    /// Looks up products; the result is aligned with `ids`.
    async fn products_by_id(&self, ids: &[&str]) -> Result<Vec<Option<Product>>, StoreError>;

    async fn upsert_product(&self, product: &Product) -> Result<(), StoreError>;
}

/// Accepting orders before their command is made durable (order-api).
#[async_trait]
pub trait OrderIntake: Send + Sync + 'static {
    /// Records a pending order unless one with that id exists.
    async fn create_pending(&self, draft: &OrderDraft) -> Result<(), StoreError>;

    /// Removes an order that is still pending (its command could not be made
    /// durable); an order in any other state stays. A command that did reach
    /// the stream recreates it when applied.
    async fn discard_pending(&self, order_id: &OrderId) -> Result<(), StoreError>;

    /// Up to `limit` orders still pending that were created before
    /// `created_before`: their command may never have reached the stream
    /// (order-api died between the two steps). Forgets orders no longer pending.
    async fn overdue_pending(
        &self,
        created_before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<OrderDraft>, StoreError>;
}

/// Reading orders (order-api).
#[async_trait]
pub trait OrderQueries: Send + Sync + 'static {
    async fn order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Orders newest first, strictly older than `before` when given.
    async fn list_orders(
        &self,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError>;

    /// The orders of `customer_id` only, as [`OrderQueries::list_orders`]
    /// pages them. Read from that customer's own index, so a page costs the
    /// same however many orders other customers have.
    async fn list_customer_orders(
        &self,
        customer_id: &str,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError>;
}

/// The write model: applying commands (order-service). Each application is
/// atomic and happens at most once per command id; a repeated command id
/// gets the first outcome back, marked `duplicate`.
#[async_trait]
pub trait CommandApplier: Send + Sync + 'static {
    /// Reserves the stock of every line or of none: `Confirmed` or `Rejected`
    /// with the reason. Creates the order first if it is missing (its pending
    /// record was discarded while the command was already durable). A
    /// command naming an unknown product, or one product on two lines, is
    /// refused with [`StoreError::InvalidCommand`] and changes nothing.
    async fn apply_place(&self, command: &PlaceOrder) -> Result<Applied, StoreError>;

    /// Cancels a `Pending` or `Confirmed` order, releasing a confirmed order's
    /// stock. `None` when the order does not exist.
    async fn apply_cancel(
        &self,
        command: &CancelOrder,
    ) -> Result<Option<CancelApplied>, StoreError>;
}

/// Removing final orders once their retention has passed (order-service's
/// sweeper, `order_service::retention`).
#[async_trait]
pub trait Retention: Send + Sync + 'static {
    /// Removes up to `limit` orders that became final (Confirmed, Rejected,
    /// Cancelled) before `final_before`, oldest first, each together with its
    /// entries in every index, and says how many it removed. A pending order
    /// is never removed.
    async fn remove_final_before(
        &self,
        final_before: time::OffsetDateTime,
        limit: usize,
    ) -> Result<usize, StoreError>;
}

/// Every role at once.
pub trait OrderStore:
    Ping + Catalog + OrderIntake + OrderQueries + CommandApplier + Retention
{
}

impl<T> OrderStore for T where
    T: Ping + Catalog + OrderIntake + OrderQueries + CommandApplier + Retention
{
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effect_decodes_the_markers_the_scripts_write() {
        // The shapes lua/apply_place.lua and lua/apply_cancel.lua build
        // (`'applied|Rejected|' .. reason` and so on), copied here; that the
        // scripts write them is exercised against a real Redis by tests/contracts.
        for (marker, effect) in [
            (
                "applied|Rejected|insufficient stock for A|B",
                Effect::Transitioned {
                    status: OrderStatus::Rejected,
                    reason: Some("insufficient stock for A|B".to_owned()),
                },
            ),
            (
                "applied|Confirmed|",
                Effect::Transitioned {
                    status: OrderStatus::Confirmed,
                    reason: None,
                },
            ),
            (
                "unchanged|Cancelled|",
                Effect::Unchanged {
                    status: OrderStatus::Cancelled,
                },
            ),
        ] {
            assert_eq!(Effect::decode(marker).expect("decodes"), effect);
        }
        assert!(Effect::decode("garbage").is_err());
    }
}
