//! [`OrderStore`] on Redis. Every state change is one Lua script, so it is
//! atomic: concurrent orders cannot oversell, and the processed marker that
//! makes a command idempotent is written in the same step as its effect.
//!
//! Scripts touch keys derived from their arguments, which is fine on a
//! standalone or replicated Redis (the deployment guide's topology) but not on
//! Redis Cluster.

use std::{sync::LazyLock, time::Duration};

use async_trait::async_trait;
use redis::{Script, aio::ConnectionManager};
use rust_decimal::Decimal;
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use super::{Applied, Effect, OrderStore, StoreError};
use crate::{
    config::RedisSettings,
    contracts::{CancelOrder, PlaceOrder, redis_keys},
    domain::{Order, OrderDraft, OrderId, PricedItem, Product},
};

/// How long the processed marker of a command is kept. Far longer than any
/// redelivery can happen (JetStream gives up after `max_deliver` attempts).
const PROCESSED_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Opens a self-healing Redis connection. It connects lazily and reconnects in
/// the background, so a service starts (not ready) while Redis is away.
pub fn connect(settings: &RedisSettings) -> Result<ConnectionManager, StoreError> {
    let client = redis::Client::open(settings.connection_url())
        .map_err(|err| StoreError::Unavailable(format!("invalid Redis settings: {err}")))?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(settings.connect_timeout))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_max_delay(Duration::from_secs(2));
    client
        .get_connection_manager_lazy(config)
        .map_err(|err| StoreError::Unavailable(err.to_string()))
}

impl From<redis::RedisError> for StoreError {
    fn from(err: redis::RedisError) -> Self {
        if err.kind() == redis::ErrorKind::Parse
            || err.kind() == redis::ErrorKind::UnexpectedReturnType
        {
            StoreError::Corrupt(err.to_string())
        } else {
            StoreError::Unavailable(err.to_string())
        }
    }
}

static CREATE_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: order, index   ARGV: doc, now, orderId
if redis.call('HSETNX', KEYS[1], 'doc', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'Pending', 'updatedAt', ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
end
return 1",
    )
});

static DISCARD_PENDING: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: order, index   ARGV: orderId
if redis.call('HGET', KEYS[1], 'status') == 'Pending' then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return 1",
    )
});

static APPLY_PLACE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: order, index, processed, product...
-- ARGV: doc, now, orderId, ttlSeconds, then (productId, quantity) per product key
local done = redis.call('GET', KEYS[3])
if done then return {'duplicate', done} end
if redis.call('HSETNX', KEYS[1], 'doc', ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], 'status', 'Pending', 'updatedAt', ARGV[2])
  redis.call('ZADD', KEYS[2], 0, ARGV[3])
end
local status = redis.call('HGET', KEYS[1], 'status')
local outcome
if status ~= 'Pending' then
  outcome = 'unchanged|' .. status .. '|'
else
  local reason = nil
  for i = 4, #KEYS do
    local pid = ARGV[5 + (i - 4) * 2]
    local qty = tonumber(ARGV[6 + (i - 4) * 2])
    local stock = redis.call('HGET', KEYS[i], 'stock')
    if not stock then
      reason = 'unknown product ' .. pid
      break
    end
    if tonumber(stock) < qty then
      reason = 'insufficient stock for ' .. pid .. ': requested ' .. qty .. ', available ' .. stock
      break
    end
  end
  if reason then
    redis.call('HSET', KEYS[1], 'status', 'Rejected', 'reason', reason, 'updatedAt', ARGV[2])
    outcome = 'applied|Rejected|' .. reason
  else
    for i = 4, #KEYS do
      redis.call('HINCRBY', KEYS[i], 'stock', -tonumber(ARGV[6 + (i - 4) * 2]))
    end
    redis.call('HSET', KEYS[1], 'status', 'Confirmed', 'updatedAt', ARGV[2])
    outcome = 'applied|Confirmed|'
  end
end
redis.call('SET', KEYS[3], outcome, 'EX', ARGV[4])
return {'new', outcome}",
    )
});

static APPLY_CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: order, processed, product...   ARGV: now, ttlSeconds, quantity per product key
local done = redis.call('GET', KEYS[2])
if done then return {'duplicate', done} end
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', ''} end
local outcome
if status == 'Pending' or status == 'Confirmed' then
  if status == 'Confirmed' then
    for i = 3, #KEYS do
      redis.call('HINCRBY', KEYS[i], 'stock', tonumber(ARGV[i]))
    end
  end
  redis.call('HSET', KEYS[1], 'status', 'Cancelled', 'updatedAt', ARGV[1])
  outcome = 'applied|Cancelled|'
else
  outcome = 'unchanged|' .. status .. '|'
end
redis.call('SET', KEYS[2], outcome, 'EX', ARGV[2])
return {'new', outcome}",
    )
});

static LIST_ORDERS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: index   ARGV: max ('+' or '(<id>'), limit, order key prefix
-- One round trip for a whole page: this is the endpoint load generators hammer.
local ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[1], '-', 'LIMIT', 0, tonumber(ARGV[2]))
local page = {}
for _, id in ipairs(ids) do
  page[#page + 1] = redis.call('HMGET', ARGV[3] .. id, 'doc', 'status', 'reason', 'updatedAt')
end
return page",
    )
});

static SEED_CATALOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: product ids set   ARGV: product key prefix, then (id, name, unitPrice, stock) per product
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
for i = 2, #ARGV, 4 do
  redis.call('HSET', ARGV[1] .. ARGV[i], 'name', ARGV[i + 1], 'unitPrice', ARGV[i + 2], 'stock', ARGV[i + 3])
  redis.call('SADD', KEYS[1], ARGV[i])
end
return 1",
    )
});

static PRODUCTS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: product ids set (or nothing)   ARGV: product key prefix, then ids when KEYS is empty
local ids
if #KEYS > 0 then
  ids = redis.call('SORT', KEYS[1], 'ALPHA')
else
  ids = {}
  for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
end
local out = {}
for _, id in ipairs(ids) do
  local p = redis.call('HMGET', ARGV[1] .. id, 'name', 'unitPrice', 'stock')
  out[#out + 1] = {id, p[1], p[2], p[3]}
end
return out",
    )
});

/// The production store.
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
}

impl RedisStore {
    pub fn new(conn: ConnectionManager) -> Self {
        Self { conn }
    }
}

fn order_key(id: &OrderId) -> String {
    format!("{}{id}", redis_keys::ORDER_PREFIX)
}

fn product_key(id: &str) -> String {
    format!("{}{id}", redis_keys::PRODUCT_PREFIX)
}

fn processed_key(command_id: &str) -> String {
    format!("{}{command_id}", redis_keys::PROCESSED_PREFIX)
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_else(|_| String::from("1970-01-01T00:00:00Z"))
}

fn draft_json(draft: &OrderDraft) -> Result<String, StoreError> {
    serde_json::to_string(draft).map_err(|err| StoreError::Corrupt(err.to_string()))
}

/// Rebuilds an order from `HMGET doc status reason updatedAt`.
fn order_from_fields(fields: [Option<String>; 4]) -> Result<Option<Order>, StoreError> {
    let [doc, status, reason, updated_at] = fields;
    let (Some(doc), Some(status)) = (doc, status) else {
        return Ok(None);
    };
    let draft: OrderDraft = serde_json::from_str(&doc)
        .map_err(|err| StoreError::Corrupt(format!("order doc: {err}")))?;
    let status = status
        .parse()
        .map_err(|err| StoreError::Corrupt(format!("{err}")))?;
    let updated_at = match updated_at {
        Some(raw) => OffsetDateTime::parse(&raw, &Rfc3339)
            .map_err(|err| StoreError::Corrupt(format!("updatedAt {raw:?}: {err}")))?,
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
        .map_err(|err| StoreError::Corrupt(format!("unitPrice of {id}: {err}")))?;
    Ok(Some(Product {
        product_id: id,
        name,
        unit_price,
        stock,
    }))
}

fn applied_from_reply(reply: (String, String)) -> Result<Applied, StoreError> {
    let (kind, marker) = reply;
    Ok(Applied {
        duplicate: kind == "duplicate",
        effect: Effect::decode(&marker)?,
    })
}

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
impl OrderStore for RedisStore {
    async fn ping(&self) -> Result<(), StoreError> {
        let _: String = redis::cmd("PING")
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

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
        let _: i64 = invocation.invoke_async(&mut self.conn.clone()).await?;
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
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis create_pending", otel.kind = "client", db.system.name = "redis"))]
    async fn create_pending(&self, draft: &OrderDraft) -> Result<(), StoreError> {
        let _: i64 = CREATE_PENDING
            .key(order_key(&draft.order_id))
            .key(redis_keys::ORDER_INDEX)
            .arg(draft_json(draft)?)
            .arg(now_rfc3339())
            .arg(draft.order_id.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis discard_pending", otel.kind = "client", db.system.name = "redis"))]
    async fn discard_pending(&self, order_id: &OrderId) -> Result<(), StoreError> {
        let _: i64 = DISCARD_PENDING
            .key(order_key(order_id))
            .key(redis_keys::ORDER_INDEX)
            .arg(order_id.to_string())
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis order", otel.kind = "client", db.system.name = "redis"))]
    async fn order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError> {
        let fields: (
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        ) = redis::cmd("HMGET")
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
        let max = before.map_or_else(|| "+".to_owned(), |id| format!("({id}"));
        let rows: Vec<(
            Option<String>,
            Option<String>,
            Option<String>,
            Option<String>,
        )> = LIST_ORDERS
            .key(redis_keys::ORDER_INDEX)
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

    #[tracing::instrument(skip_all, fields(otel.name = "redis apply_place", otel.kind = "client", db.system.name = "redis"))]
    async fn apply_place(&self, command: &PlaceOrder) -> Result<Applied, StoreError> {
        let draft = OrderDraft {
            order_id: command.order_id,
            customer_id: command.customer_id.clone(),
            items: command.items.clone(),
            total_amount: command.total_amount,
            created_at: command.created_at,
        };
        let mut invocation = APPLY_PLACE.prepare_invoke();
        invocation
            .key(order_key(&command.order_id))
            .key(redis_keys::ORDER_INDEX)
            .key(processed_key(&command.command_id))
            .arg(draft_json(&draft)?)
            .arg(now_rfc3339())
            .arg(command.order_id.to_string())
            .arg(PROCESSED_TTL.as_secs());
        for item in &command.items {
            invocation
                .key(product_key(&item.product_id))
                .arg(&item.product_id)
                .arg(item.quantity);
        }
        let reply: (String, String) = invocation.invoke_async(&mut self.conn.clone()).await?;
        applied_from_reply(reply)
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis apply_cancel", otel.kind = "client", db.system.name = "redis"))]
    async fn apply_cancel(
        &self,
        command: &CancelOrder,
        items: &[PricedItem],
    ) -> Result<Option<Applied>, StoreError> {
        let mut invocation = APPLY_CANCEL.prepare_invoke();
        invocation
            .key(order_key(&command.order_id))
            .key(processed_key(&command.command_id))
            .arg(now_rfc3339())
            .arg(PROCESSED_TTL.as_secs());
        for item in items {
            invocation
                .key(product_key(&item.product_id))
                .arg(item.quantity);
        }
        let reply: (String, String) = invocation.invoke_async(&mut self.conn.clone()).await?;
        if reply.0 == "missing" {
            return Ok(None);
        }
        applied_from_reply(reply).map(Some)
    }
}
