//! Redis memory per order, measured on a real redis-server through the
//! production store (docs/capacity.md quotes the figures). Ignored by default:
//! it is a measurement, not a rule. Run it with
//! `cargo test -p catga-tests --test contracts capacity -- --ignored --nocapture`.

use catga_core::{
    contracts::{PlaceOrder, redis_keys},
    domain::{OrderDraft, OrderId, PricedItem, Product, default_catalog},
    store::{Catalog, CommandApplier, OrderIntake},
};
use catga_tests::Redis;
use rust_decimal::Decimal;

const ORDERS: usize = 20_000;
const CUSTOMERS: usize = 2_000;

async fn used_memory(raw: &mut redis::aio::MultiplexedConnection) -> i64 {
    let info: String = redis::cmd("INFO")
        .arg("memory")
        .query_async(raw)
        .await
        .expect("INFO");
    info.lines()
        .find_map(|line| line.strip_prefix("used_memory:"))
        .and_then(|value| value.trim().parse().ok())
        .expect("used_memory")
}

async fn memory_usage(raw: &mut redis::aio::MultiplexedConnection, key: &str) -> i64 {
    redis::cmd("MEMORY")
        .arg("USAGE")
        .arg(key)
        .query_async(raw)
        .await
        .expect("MEMORY USAGE")
}

#[tokio::test]
#[ignore = "a measurement: run on demand"]
async fn redis_memory_per_order() {
    let redis = Redis::start().await;
    let store = crate::redis_store(&redis);
    let mut raw = redis.connection().await;
    let catalog: Vec<Product> = default_catalog()
        .into_iter()
        .map(|p| Product {
            stock: 1_000_000_000,
            ..p
        })
        .collect();
    store.ensure_catalog(&catalog).await.expect("seed");
    let before = used_memory(&mut raw).await;
    let mut last = None;
    for i in 0..ORDERS {
        // Two lines, as a typical order through order-api: pending, then applied.
        let items: Vec<PricedItem> = catalog[..2]
            .iter()
            .map(|p| PricedItem {
                product_id: p.product_id.clone(),
                product_name: p.name.clone(),
                quantity: 1 + u32::try_from(i % 3).expect("small"),
                unit_price: p.unit_price,
            })
            .collect();
        let draft = OrderDraft {
            order_id: OrderId::new(),
            customer_id: format!("customer-{:05}", i % CUSTOMERS),
            total_amount: items
                .iter()
                .map(|item| item.unit_price * Decimal::from(item.quantity))
                .sum(),
            items,
            created_at: time::OffsetDateTime::now_utc(),
        };
        store.create_pending(&draft).await.expect("pending");
        store
            .apply_place(&PlaceOrder::from_draft(&draft))
            .await
            .expect("placed");
        last = Some(draft);
    }
    let after = used_memory(&mut raw).await;
    let last = last.expect("an order");
    let order = memory_usage(
        &mut raw,
        &format!("{}{}", redis_keys::ORDER_PREFIX, last.order_id),
    )
    .await;
    let processed = memory_usage(
        &mut raw,
        &format!(
            "{}{}",
            redis_keys::PROCESSED_PREFIX,
            PlaceOrder::command_id_for(&last.order_id)
        ),
    )
    .await;
    let mut indexes = 0;
    for index in [
        redis_keys::ORDER_INDEX,
        redis_keys::FINAL_ORDERS,
        redis_keys::PENDING_ORDERS,
    ] {
        indexes += memory_usage(&mut raw, index).await;
    }
    let per_order = (after - before) / i64::try_from(ORDERS).expect("small");
    println!(
        "{ORDERS} orders, {CUSTOMERS} customers: used_memory +{} bytes, {per_order} bytes/order; \
         MEMORY USAGE: order hash {order}, processed marker {processed}, \
         global indexes {} bytes/order",
        after - before,
        indexes / i64::try_from(ORDERS).expect("small")
    );
    assert!(per_order > 0);
}
