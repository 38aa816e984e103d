//! The store in process memory, for the embedded mode and tests. A single
//! mutex gives every operation the atomicity the Redis scripts have; the rules
//! are the scripts' (see `README.md`), written in Rust.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Arc, Mutex, MutexGuard},
};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{
    Applied, CancelApplied, Catalog, CommandApplier, Effect, OrderIntake, OrderQueries, Ping,
    Retention, StoreError,
};
use crate::{
    contracts::{CancelOrder, PlaceOrder},
    domain::{Order, OrderDraft, OrderId, OrderStatus, PricedItem, Product},
};

#[derive(Default)]
struct State {
    products: BTreeMap<String, Product>,
    orders: BTreeMap<OrderId, Order>,
    /// Each customer's order ids: the per-customer index of the Redis store.
    by_customer: HashMap<String, BTreeSet<OrderId>>,
    processed: HashMap<String, Effect>,
}

impl State {
    fn insert_pending(&mut self, draft: &OrderDraft) {
        if self.orders.contains_key(&draft.order_id) {
            return;
        }
        self.orders.insert(
            draft.order_id,
            Order::from_draft(
                draft.clone(),
                OrderStatus::Pending,
                None,
                OffsetDateTime::now_utc(),
            ),
        );
        self.by_customer
            .entry(draft.customer_id.clone())
            .or_default()
            .insert(draft.order_id);
    }

    fn remove(&mut self, order_id: &OrderId) {
        let Some(order) = self.orders.remove(order_id) else {
            return;
        };
        if let Some(ids) = self.by_customer.get_mut(&order.customer_id) {
            ids.remove(order_id);
            if ids.is_empty() {
                self.by_customer.remove(&order.customer_id);
            }
        }
    }

    /// apply_place.lua's first step: a command naming an unknown product, or
    /// one product twice, changes nothing.
    fn refuse_invalid(&self, items: &[PricedItem]) -> Result<(), StoreError> {
        let mut seen = BTreeSet::new();
        for item in items {
            let id = item.product_id.as_str();
            if !seen.insert(id) {
                return Err(StoreError::InvalidCommand(format!(
                    "product {id} is on more than one line"
                )));
            }
            if !self.products.contains_key(id) {
                return Err(StoreError::InvalidCommand(format!("unknown product {id}")));
            }
        }
        Ok(())
    }

    /// Reserves every line or none (the products exist and are distinct:
    /// `refuse_invalid`); the reason names the first line that fails.
    fn reserve(&mut self, items: &[PricedItem]) -> Result<(), String> {
        for item in items {
            let available = self.products.get(&item.product_id).map_or(0, |p| p.stock);
            if available < i64::from(item.quantity) {
                return Err(format!(
                    "insufficient stock for {}: requested {}, available {available}",
                    item.product_id, item.quantity
                ));
            }
        }
        self.adjust_stock(items, -1);
        Ok(())
    }

    fn adjust_stock(&mut self, items: &[PricedItem], sign: i64) {
        for item in items {
            if let Some(product) = self.products.get_mut(&item.product_id) {
                product.stock += sign * i64::from(item.quantity);
            }
        }
    }

    fn transition(&mut self, order_id: &OrderId, status: OrderStatus, reason: Option<String>) {
        if let Some(order) = self.orders.get_mut(order_id) {
            order.status = status;
            order.reason = reason;
            order.updated_at = OffsetDateTime::now_utc();
        }
    }
}

/// The in-memory store.
#[derive(Clone, Default)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }
}

#[async_trait]
impl Ping for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

#[async_trait]
impl Catalog for MemoryStore {
    async fn ensure_catalog(&self, catalog: &[Product]) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state.products.is_empty() {
            for product in catalog {
                state
                    .products
                    .insert(product.product_id.clone(), product.clone());
            }
        }
        Ok(())
    }

    async fn products(&self) -> Result<Vec<Product>, StoreError> {
        Ok(self.lock().products.values().cloned().collect())
    }

    async fn products_by_id(&self, ids: &[&str]) -> Result<Vec<Option<Product>>, StoreError> {
        let state = self.lock();
        Ok(ids
            .iter()
            .map(|id| state.products.get(*id).cloned())
            .collect())
    }

    async fn upsert_product(&self, product: &Product) -> Result<(), StoreError> {
        self.lock()
            .products
            .insert(product.product_id.clone(), product.clone());
        Ok(())
    }
}

#[async_trait]
impl OrderIntake for MemoryStore {
    async fn create_pending(&self, draft: &OrderDraft) -> Result<(), StoreError> {
        self.lock().insert_pending(draft);
        Ok(())
    }

    async fn overdue_pending(
        &self,
        created_before: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<OrderDraft>, StoreError> {
        Ok(self
            .lock()
            .orders
            .values()
            .filter(|o| o.status == OrderStatus::Pending && o.created_at < created_before)
            .take(limit)
            .map(|o| OrderDraft {
                order_id: o.order_id,
                customer_id: o.customer_id.clone(),
                items: o.items.clone(),
                total_amount: o.total_amount,
                created_at: o.created_at,
            })
            .collect())
    }

    async fn discard_pending(&self, order_id: &OrderId) -> Result<(), StoreError> {
        let mut state = self.lock();
        if state
            .orders
            .get(order_id)
            .is_some_and(|o| o.status == OrderStatus::Pending)
        {
            state.remove(order_id);
        }
        Ok(())
    }
}

#[async_trait]
impl OrderQueries for MemoryStore {
    async fn order(&self, order_id: &OrderId) -> Result<Option<Order>, StoreError> {
        Ok(self.lock().orders.get(order_id).cloned())
    }

    async fn list_orders(
        &self,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError> {
        let state = self.lock();
        let range = match before {
            Some(before) => state.orders.range(..*before),
            None => state.orders.range(..),
        };
        Ok(range.rev().take(limit).map(|(_, o)| o.clone()).collect())
    }

    async fn list_customer_orders(
        &self,
        customer_id: &str,
        limit: usize,
        before: Option<&OrderId>,
    ) -> Result<Vec<Order>, StoreError> {
        let state = self.lock();
        let Some(ids) = state.by_customer.get(customer_id) else {
            return Ok(Vec::new());
        };
        let range = match before {
            Some(before) => ids.range(..*before),
            None => ids.range(..),
        };
        Ok(range
            .rev()
            .filter_map(|id| state.orders.get(id).cloned())
            .take(limit)
            .collect())
    }
}

#[async_trait]
impl CommandApplier for MemoryStore {
    async fn apply_place(&self, command: &PlaceOrder) -> Result<Applied, StoreError> {
        let mut state = self.lock();
        if let Some(effect) = state.processed.get(&command.command_id) {
            return Ok(Applied {
                duplicate: true,
                effect: effect.clone(),
            });
        }
        state.refuse_invalid(&command.items)?;
        state.insert_pending(&command.draft());
        let status = state
            .orders
            .get(&command.order_id)
            .map_or(OrderStatus::Pending, |o| o.status);
        let effect = if status != OrderStatus::Pending {
            Effect::Unchanged { status }
        } else {
            let (status, reason) = match state.reserve(&command.items) {
                Ok(()) => (OrderStatus::Confirmed, None),
                Err(reason) => (OrderStatus::Rejected, Some(reason)),
            };
            state.transition(&command.order_id, status, reason.clone());
            Effect::Transitioned { status, reason }
        };
        state
            .processed
            .insert(command.command_id.clone(), effect.clone());
        Ok(Applied {
            duplicate: false,
            effect,
        })
    }

    async fn apply_cancel(
        &self,
        command: &CancelOrder,
    ) -> Result<Option<CancelApplied>, StoreError> {
        let mut state = self.lock();
        let Some(order) = state.orders.get(&command.order_id).cloned() else {
            return Ok(None);
        };
        let status = order.status;
        if let Some(effect) = state.processed.get(&command.command_id) {
            return Ok(Some(CancelApplied {
                order,
                applied: Applied {
                    duplicate: true,
                    effect: effect.clone(),
                },
            }));
        }
        // apply_cancel.lua: only a pending or confirmed order can be cancelled,
        // and only a confirmed one holds stock.
        let effect = if matches!(status, OrderStatus::Pending | OrderStatus::Confirmed) {
            if status == OrderStatus::Confirmed {
                state.adjust_stock(&order.items, 1);
            }
            state.transition(&command.order_id, OrderStatus::Cancelled, None);
            Effect::Transitioned {
                status: OrderStatus::Cancelled,
                reason: None,
            }
        } else {
            Effect::Unchanged { status }
        };
        state
            .processed
            .insert(command.command_id.clone(), effect.clone());
        Ok(Some(CancelApplied {
            order,
            applied: Applied {
                duplicate: false,
                effect,
            },
        }))
    }
}

#[async_trait]
impl Retention for MemoryStore {
    async fn remove_final_before(
        &self,
        final_before: OffsetDateTime,
        limit: usize,
    ) -> Result<usize, StoreError> {
        let mut state = self.lock();
        // sweep_final.lua: oldest final first, never a pending order.
        let mut expired: Vec<(OffsetDateTime, OrderId)> = state
            .orders
            .values()
            .filter(|o| o.status != OrderStatus::Pending && o.updated_at < final_before)
            .map(|o| (o.updated_at, o.order_id))
            .collect();
        expired.sort_unstable();
        expired.truncate(limit);
        for (_, order_id) in &expired {
            state.remove(order_id);
        }
        Ok(expired.len())
    }
}
