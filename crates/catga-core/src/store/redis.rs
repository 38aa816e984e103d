//! The store on Redis. Every state change is one Lua script (in `lua/`, rules
//! in `README.md`), so it is atomic: concurrent orders cannot oversell, and the
//! processed marker that makes a command idempotent is written in the same step
//! as its effect.
//!
//! Scripts touch keys derived from their arguments, which is fine on a
//! standalone or replicated Redis (the deployment guide's topology) but not on
//! Redis Cluster.

use std::{sync::LazyLock, time::Duration};

use async_trait::async_trait;
use redis::Script;
use rust_decimal::Decimal;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{
    Applied, CancelApplied, Catalog, CommandApplier, Effect, OrderIntake, OrderQueries, Ping,
    RedisConnection, Retention, StoreError,
};
use crate::{
    config::RedisSettings,
    contracts::{CancelOrder, PlaceOrder, redis_keys},
    domain::{Order, OrderDraft, OrderId, OrderStatus, Product},
};

/// How long the processed marker of a command is kept. Far longer than any
/// redelivery can happen (JetStream gives up after `max_deliver` attempts).
const PROCESSED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Opens the Redis connection (one address or through Sentinel; see
/// [`RedisConnection`]). It connects lazily and reconnects in the background,
/// so a service starts while Redis is away.
pub fn connect(settings: &RedisSettings) -> Result<RedisConnection, StoreError> {
    Ok(RedisConnection::open(settings)?)
}

static CREATE_PENDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/create_pending.lua")));

static DISCARD_PENDING: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/discard_pending.lua")));

static APPLY_PLACE: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/apply_place.lua")));

static APPLY_CANCEL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/apply_cancel.lua")));

static LIST_ORDERS: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/list_orders.lua")));

static SEED_CATALOG: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/seed_catalog.lua")));

static SWEEP_FINAL: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("lua/sweep_final.lua")));

static PRODUCTS: LazyLock<Script> = LazyLock::new(|| Script::new(include_str!("lua/products.lua")));

/// The production store.
#[derive(Clone)]
pub struct RedisStore {
    conn: RedisConnection,
    /// The same connection, answering writes only once replicas hold them.
    replicated: RedisConnection,
}

impl RedisStore {
    pub fn new(conn: RedisConnection) -> Self {
        Self {
            replicated: conn.replicated(),
            conn,
        }
    }
}

fn order_key(id: &OrderId) -> String {
    format!("{}{id}", redis_keys::ORDER_PREFIX)
}

fn customer_index_key(customer_id: &str) -> String {
    format!("{}{customer_id}", redis_keys::CUSTOMER_ORDER_INDEX_PREFIX)
}

fn product_key(id: &str) -> String {
    format!("{}{id}", redis_keys::PRODUCT_PREFIX)
}

fn processed_key(command_id: &str) -> String {
    format!("{}{command_id}", redis_keys::PROCESSED_PREFIX)
}

fn now_rfc3339() -> String {
    rfc3339(OffsetDateTime::now_utc())
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

fn draft_json(draft: &OrderDraft) -> Result<String, StoreError> {
    serde_json::to_string(draft).map_err(|err| StoreError::decode("an order document", err))
}

/// Rebuilds an order from `HMGET doc status reason updatedAt`.
fn order_from_fields(fields: [Option<String>; 4]) -> Result<Option<Order>, StoreError> {
    let [doc, status, reason, updated_at] = fields;
    let (Some(doc), Some(status)) = (doc, status) else {
        return Ok(None);
    };
    let draft: OrderDraft =
        serde_json::from_str(&doc).map_err(|err| StoreError::decode("an order document", err))?;
    let status = status
        .parse()
        .map_err(|err| StoreError::decode("an order status", err))?;
    let updated_at = match updated_at {
        Some(raw) => OffsetDateTime::parse(&raw, &Rfc3339)
            .map_err(|err| StoreError::decode(format!("updatedAt {raw:?}"), err))?,
        None => draft.created_at,
    };
    Ok(Some(Order::from_draft(draft, status, reason, updated_at)))
}

fn product_from_fields(
    id: String,
    name: Option<String>,
    unit_price: Option<String>,
    stock: Option<i64>,
) -> Result<Option<Product>, StoreError> {
    let (Some(name), Some(unit_price), Some(stock)) = (name, unit_price, stock) else {
        return Ok(None);
    };
    let unit_price: Decimal = unit_price
        .parse()
        .map_err(|err| StoreError::decode(format!("the unitPrice of {id}"), err))?;
    Ok(Some(Product {
        product_id: id,
        name,
        unit_price,
        stock,
    }))
}

fn applied_from_reply(reply: (String, String)) -> Result<Applied, StoreError> {
    let (kind, marker) = reply;
    if kind == "invalid" {
        return Err(StoreError::InvalidCommand(marker));
    }
    Ok(Applied {
        duplicate: kind == "duplicate",
        effect: Effect::decode(&marker)?,
    })
}

/// `HMGET doc status reason updatedAt` of one order.
type OrderFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

type ProductRow = (String, Option<String>, Option<String>, Option<i64>);

impl RedisStore {
    async fn run_products(&self, ids: Option<&[&str]>) -> Result<Vec<Option<Product>>, StoreError> {
        let mut invocation = PRODUCTS.prepare_invoke();
        match ids {
            None => {
                invocation.key(redis_keys::PRODUCT_IDS);
                invocation.arg(redis_keys::PRODUCT_PREFIX);
            }
            Some(ids) => {
                invocation.arg(redis_keys::PRODUCT_PREFIX);
                for id in ids {
                    invocation.arg(*id);
                }
            }
        }
        let rows: Vec<ProductRow> = invocation.invoke_async(&mut self.conn.clone()).await?;
        rows.into_iter()
            .map(|(id, name, price, stock)| product_from_fields(id, name, price, stock))
            .collect()
    }
}

#[async_trait]
impl Ping for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Catalog for RedisStore {
    #[tracing::instrument(skip_all, fields(otel.name = "redis ensure_catalog", otel.kind = "client", db.system.name = "redis"))]
    async fn ensure_catalog(&self, catalog: &[Product]) -> Result<(), StoreError> {
        let mut invocation = SEED_CATALOG.prepare_invoke();
        invocation
            .key(redis_keys::PRODUCT_IDS)
            .arg(redis_keys::PRODUCT_PREFIX);
        for product in catalog {
            invocation
                .arg(&product.product_id)
                .arg(&product.name)
                .arg(product.unit_price.to_string())
                .arg(product.stock);
        }
        let _: i64 = invocation
            .invoke_async(&mut self.replicated.clone())
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis products", otel.kind = "client", db.system.name = "redis"))]
    async fn products(&self) -> Result<Vec<Product>, StoreError> {
        Ok(self
            .run_products(None)
            .await?
            .into_iter()
            .flatten()
            .collect())
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis products_by_id", otel.kind = "client", db.system.name = "redis"))]
    async fn products_by_id(&self, ids: &[&str]) -> Result<Vec<Option<Product>>, StoreError> {
        self.run_products(Some(ids)).await
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis upsert_product", otel.kind = "client", db.system.name = "redis"))]
    async fn upsert_product(&self, product: &Product) -> Result<(), StoreError> {
        let _: () = redis::pipe()
            .atomic()
            .hset_multiple(
                product_key(&product.product_id),
                &[
                    ("name", product.name.clone()),
                    ("unitPrice", product.unit_price.to_string()),
                    ("stock", product.stock.to_string()),
                ],
            )
            .ignore()
            .sadd(redis_keys::PRODUCT_IDS, &product.product_id)
            .ignore()
            .query_async(&mut self.replicated.clone())
            .await?;
        Ok(())
    }
}

#[async_trait]
impl OrderIntake for RedisStore {
    #[tracing::instrument(skip_all, fields(otel.name = "redis create_pending", otel.kind = "client", db.system.name = "redis"))]
    async fn create_pending(&self, draft: &OrderDraft) -> Result<(), StoreError> {
        // One round trip: the record, its indexes and the pending index
        // (which the re-publisher reads) in one atomic step, with its WAIT.
        let _: i64 = CREATE_PENDING
            .key(order_key(&draft.order_id))
            .key(redis_keys::ORDER_INDEX)
            .key(customer_index_key(&draft.customer_id))
            .key(redis_keys::PENDING_ORDERS)
            .arg(draft_json(draft)?)
            .arg(now_rfc3339())
            .arg(draft.order_id.to_string())
            .arg(unix_millis(draft.created_at))
            .invoke_async(&mut self.replicated.clone())
            .await?;
        Ok(())
    }

    async fn overdue_pending(
        &self,
        created_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<OrderDraft>, StoreError> {
        self.overdue_pending_orders(created_before, limit).await
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis discard_pending", otel.kind = "client", db.system.name = "redis"))]
    async fn discard_pending(&self, order_id: &OrderId) -> Result<(), StoreError> {
        // The customer never changes after creation, so reading it before the
        // atomic step is safe (as in apply_cancel); the script decides.
        let Some(order) = self.order(order_id).await? else {
            return Ok(());
        };
        let _: i64 = DISCARD_PENDING
            .key(order_key(order_id))
            .key(redis_keys::ORDER_INDEX)
            .key(customer_index_key(&order.customer_id))
            .arg(order_id.to_string())
            .invoke_async(&mut self.replicated.clone())
            .await?;
        Ok(())
    }
}

impl RedisStore {
    #[tracing::instrument(skip_all, fields(otel.name = "redis overdue_pending", otel.kind = "client", db.system.name = "redis"))]
    async fn overdue_pending_orders(
        &self,
        created_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<OrderDraft>, StoreError> {
        let ids: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(redis_keys::PENDING_ORDERS)
            .arg("-inf")
            .arg(format!("({}", unix_millis(created_before)))
            .arg("LIMIT")
            .arg(0)
            .arg(limit)
            .query_async(&mut self.conn.clone())
            .await?;
        let mut overdue = Vec::new();
        for id in ids {
            let fields: (Option<String>, Option<String>) = redis::cmd("HMGET")
                .arg(format!("{}{id}", redis_keys::ORDER_PREFIX))
                .arg(&["doc", "status"])
                .query_async(&mut self.conn.clone())
                .await?;
            match fields {
                (Some(doc), Some(status)) if status == OrderStatus::Pending.as_str() => {
                    overdue.push(
                        serde_json::from_str(&doc)
                            .map_err(|err| StoreError::decode("an order document", err))?,
                    );
                }
                // Final, or discarded: nothing to re-publish any more.
                _ => {
                    let _: i64 = redis::cmd("ZREM")
                        .arg(redis_keys::PENDING_ORDERS)
                        .arg(&id)
                        .query_async(&mut self.conn.clone())
                        .await?;
                }
            }
        }
        Ok(overdue)
    }
}

fn unix_millis(at: OffsetDateTime) -> i64 {
    i64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX)
}

#[async_trait]
impl OrderQueries for RedisStore {
    #[tracing::instrument(skip_all, fields(otel.name = "redis order", otel.kind = "client", db.system.name = "redis"))]
    async fn order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError> {
        let fields: OrderFields = redis::cmd("HMGET")
            .arg(order_key(order_id))
            .arg(&["doc", "status", "reason", "updatedAt"])
            .query_async(&mut self.conn.clone())
            .await?;
        order_from_fields([fields.0, fields.1, fields.2, fields.3])
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis list_orders", otel.kind = "client", db.system.name = "redis"))]
    async fn list_orders(
        &self,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError> {
        self.list_index(redis_keys::ORDER_INDEX, limit, before)
            .await
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis list_customer_orders", otel.kind = "client", db.system.name = "redis"))]
    async fn list_customer_orders(
        &self,
        customer_id: &str,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError> {
        self.list_index(&customer_index_key(customer_id), limit, before)
            .await
    }
}

impl RedisStore {
    /// A page of the orders in `index`, newest first.
    async fn list_index(
        &self,
        index: &str,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError> {
        let max = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let rows: Vec<OrderFields> = LIST_ORDERS
            .key(index)
            .arg(max)
            .arg(limit)
            .arg(redis_keys::ORDER_PREFIX)
            .invoke_async(&mut self.conn.clone())
            .await?;
        let mut orders = Vec::with_capacity(rows.len());
        for (doc, status, reason, updated_at) in rows {
            // An index entry whose order was just discarded is skipped, not an error.
            if let Some(order) = order_from_fields([doc, status, reason, updated_at])? {
                orders.push(order);
            }
        }
        Ok(orders)
    }
}

#[async_trait]
impl CommandApplier for RedisStore {
    #[tracing::instrument(skip_all, fields(otel.name = "redis apply_place", otel.kind = "client", db.system.name = "redis"))]
    async fn apply_place(&self, command: &PlaceOrder) -> Result<Applied, StoreError> {
        let now = OffsetDateTime::now_utc();
        let mut invocation = APPLY_PLACE.prepare_invoke();
        invocation
            .key(order_key(&command.order_id))
            .key(redis_keys::ORDER_INDEX)
            .key(processed_key(&command.command_id))
            .key(customer_index_key(&command.customer_id))
            .key(redis_keys::FINAL_ORDERS)
            .arg(draft_json(&command.draft())?)
            .arg(rfc3339(now))
            .arg(command.order_id.to_string())
            .arg(PROCESSED_TTL.as_secs())
            .arg(unix_millis(now));
        for item in &command.items {
            invocation
                .key(product_key(&item.product_id))
                .arg(&item.product_id)
                .arg(item.quantity);
        }
        let reply: (String, String) = invocation
            .invoke_async(&mut self.replicated.clone())
            .await?;
        applied_from_reply(reply)
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis apply_cancel", otel.kind = "client", db.system.name = "redis"))]
    async fn apply_cancel(
        &self,
        command: &CancelOrder,
    ) -> Result<Option<CancelApplied>, StoreError> {
        // The lines never change after acceptance, so reading them before the
        // atomic step is safe; the script decides on the status.
        let Some(order) = self.order(&command.order_id).await? else {
            return Ok(None);
        };
        let now = OffsetDateTime::now_utc();
        let mut invocation = APPLY_CANCEL.prepare_invoke();
        invocation
            .key(order_key(&command.order_id))
            .key(processed_key(&command.command_id))
            .key(redis_keys::FINAL_ORDERS)
            .arg(rfc3339(now))
            .arg(PROCESSED_TTL.as_secs())
            .arg(unix_millis(now))
            .arg(command.order_id.to_string());
        for item in &order.items {
            invocation
                .key(product_key(&item.product_id))
                .arg(item.quantity);
        }
        let reply: (String, String) = invocation
            .invoke_async(&mut self.replicated.clone())
            .await?;
        if reply.0 == "missing" {
            return Ok(None);
        }
        Ok(Some(CancelApplied {
            order,
            applied: applied_from_reply(reply)?,
        }))
    }
}

#[async_trait]
impl Retention for RedisStore {
    #[tracing::instrument(skip_all, fields(otel.name = "redis remove_final_before", otel.kind = "client", db.system.name = "redis"))]
    async fn remove_final_before(
        &self,
        final_before: OffsetDateTime,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let removed: usize = SWEEP_FINAL
            .key(redis_keys::FINAL_ORDERS)
            .key(redis_keys::ORDER_INDEX)
            .key(redis_keys::PENDING_ORDERS)
            // The score range is inclusive: one millisecond earlier keeps
            // `before` exclusive, as in the memory store.
            .arg(unix_millis(final_before) - 1)
            .arg(limit)
            .arg(redis_keys::ORDER_PREFIX)
            .arg(redis_keys::CUSTOMER_ORDER_INDEX_PREFIX)
            .invoke_async(&mut self.replicated.clone())
            .await?;
        Ok(removed)
    }
}
