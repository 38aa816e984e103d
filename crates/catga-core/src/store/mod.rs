//! The order store: catalog, orders, and the atomic, idempotent application of
//! commands to them.
//!
//! The Redis keyspace is a contract between order-api (which reads and creates
//! pending orders) and order-service (which applies commands), so it lives here
//! once. [`RedisStore`] is the production store; [`MemoryStore`] backs the
//! embedded single-process mode and has the same semantics.

mod memory;
mod redis;

pub use memory::MemoryStore;
pub use redis::{RedisStore, connect as connect_redis};

use async_trait::async_trait;

use crate::{
    contracts::{CancelOrder, PlaceOrder},
    domain::{Order, OrderDraft, OrderId, OrderStatus, PricedItem, Product},
};

/// A store operation failed. Every variant is worth retrying except `Corrupt`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store returned data that cannot be read: {0}")]
    Corrupt(String),
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

/// Order and catalog persistence.
#[async_trait]
pub trait OrderStore: Send + Sync + 'static {
    /// Checks the store answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Seeds the default catalog if there are no products at all.
    async fn ensure_catalog(&self, catalog: &[Product]) -> Result<(), StoreError>;

    async fn products(&self) -> Result<Vec<Product>, StoreError>;

    /// Looks up products; the result is aligned with `ids`.
    async fn products_by_id(&self, ids: &[&str]) -> Result<Vec<Option<Product>>, StoreError>;

    async fn upsert_product(&self, product: &Product) -> Result<(), StoreError>;

    /// Records a pending order unless one with that id exists.
    async fn create_pending(&self, draft: &OrderDraft) -> Result<(), StoreError>;

    /// Removes an order that is still pending (its command could not be made durable).
    /// A command that did reach the stream recreates it when applied.
    async fn discard_pending(&self, order_id: &OrderId) -> Result<(), StoreError>;

    async fn order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError>;

    /// Orders newest first, strictly older than `before` when given.
    async fn list_orders(
        &self,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError>;

    /// Applies a place command atomically: reserves all stock or none, at most
    /// once per command id.
    async fn apply_place(&self, command: &PlaceOrder) -> Result<Applied, StoreError>;

    /// Applies a cancel command atomically, releasing stock of a confirmed order,
    /// at most once per command id. `items` are the order's lines. Returns
    /// `None` when the order does not exist.
    async fn apply_cancel(
        &self,
        command: &CancelOrder,
        items: &[PricedItem],
    ) -> Result<Option<Applied>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effect_decodes_the_markers_the_scripts_write() {
        // The shapes APPLY_PLACE and APPLY_CANCEL build in store/redis.rs
        // (`'applied|Rejected|' .. reason` and so on), copied here; that the
        // scripts write them is exercised against a real Redis by tests/e2e.
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
