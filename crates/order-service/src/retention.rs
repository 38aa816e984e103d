//! Retention: final orders (Confirmed, Rejected, Cancelled) are removed from
//! the store once `Orders__RetentionDays` have passed since they became final,
//! together with their index entries. Pending orders are never removed.
//!
//! Every replica sweeps once a minute, in batches of [`BATCH`] orders, each
//! batch one atomic step of the store (`sweep_final.lua`). Replicas sweeping
//! at once is harmless: an order removed by one is simply not found by the
//! other. Why a sweeper rather than key TTLs: a TTL on the order hash would
//! leave its entries in `catga:orders` and the customer's index behind
//! (listings would skip them, but they would still take memory for ever).

use std::{sync::Arc, time::Duration};

use catga_core::{
    CancellationToken,
    store::{Retention, StoreError},
};
use time::OffsetDateTime;

/// Orders removed per atomic step: small enough that one step takes Redis
/// about a millisecond, so no other command waits behind it for long.
pub const BATCH: usize = 200;
/// How often a replica sweeps.
pub const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Sweeps every [`SWEEP_EVERY`] until `shutdown`. A failed sweep (Redis away)
/// is logged and tried again at the next tick.
pub async fn sweep_until_shutdown(
    store: Arc<dyn Retention>,
    retention: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(SWEEP_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match sweep_once(store.as_ref(), retention, &shutdown).await {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "removed final orders past their retention"),
            Err(err) => tracing::warn!(
                error = %catga_core::error::Chain(&err),
                "cannot remove final orders past their retention; trying again later"
            ),
        }
    }
}

/// Removes every order that became final more than `retention` ago, batch by
/// batch, and says how many.
pub async fn sweep_once(
    store: &dyn Retention,
    retention: Duration,
    shutdown: &CancellationToken,
) -> Result<usize, StoreError> {
    let cutoff = OffsetDateTime::now_utc() - retention;
    let mut total = 0;
    loop {
        let removed = store.remove_final_before(cutoff, BATCH).await?;
        total += removed;
        if removed < BATCH || shutdown.is_cancelled() {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use catga_core::{
        contracts::PlaceOrder,
        domain::{OrderId, OrderStatus, PricedItem, default_catalog},
        store::{Catalog, CommandApplier, MemoryStore, OrderIntake, OrderQueries},
    };
    use rust_decimal::Decimal;

    use super::*;

    #[tokio::test]
    async fn a_sweep_removes_final_orders_past_retention_in_batches_and_keeps_pending_ones() {
        let store = MemoryStore::new();
        store
            .ensure_catalog(&default_catalog())
            .await
            .expect("seed");
        let mut placed = Vec::new();
        for _ in 0..(BATCH + 5) {
            let order_id = OrderId::new();
            let command = PlaceOrder {
                command_id: PlaceOrder::command_id_for(&order_id),
                order_id,
                customer_id: "c-retention".into(),
                items: vec![PricedItem {
                    product_id: "PROD-001".into(),
                    product_name: "Mechanical Keyboard".into(),
                    quantity: 1,
                    unit_price: Decimal::new(1999, 2),
                }],
                total_amount: Decimal::new(1999, 2),
                created_at: OffsetDateTime::now_utc(),
            };
            store.apply_place(&command).await.expect("placed");
            placed.push(command);
        }
        let pending = PlaceOrder {
            order_id: OrderId::new(),
            ..placed[0].clone()
        };
        store
            .create_pending(&pending.draft())
            .await
            .expect("pending");
        let shutdown = CancellationToken::new();

        let kept = sweep_once(&store, Duration::from_secs(3600), &shutdown)
            .await
            .expect("sweep");
        assert_eq!(kept, 0, "nothing is past an hour's retention yet");

        let removed = sweep_once(&store, Duration::ZERO, &shutdown)
            .await
            .expect("sweep");
        assert_eq!(removed, BATCH + 5, "every final order, over two batches");
        for command in &placed {
            assert_eq!(store.order(&command.order_id).await.expect("read"), None);
        }
        let left = store
            .list_customer_orders("c-retention", 1_000, None)
            .await
            .expect("list");
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].order_id, pending.order_id);
        assert_eq!(left[0].status, OrderStatus::Pending);
    }
}
