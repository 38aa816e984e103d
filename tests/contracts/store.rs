//! The order store contract: what `RedisStore` (Lua) and `MemoryStore` (Rust)
//! both promise. The rules are written down in
//! `crates/catga-core/src/store/README.md`.

use catga_core::{
    contracts::{CancelOrder, PlaceOrder, redis_keys},
    domain::{OrderDraft, OrderId, OrderStatus, PricedItem, Product},
    store::{Applied, CancelApplied, Effect, MemoryStore, OrderStore, StoreError},
};
use catga_tests::Redis;
use rust_decimal::Decimal;

#[tokio::test(start_paused = true)]
async fn memory_store_keeps_the_contract() {
    order_store_contract(&MemoryStore::new()).await;
}

#[tokio::test]
async fn redis_store_keeps_the_contract() {
    let redis = Redis::start().await;
    let store = crate::redis_store(&redis);
    order_store_contract(&store).await;

    // Listings skip an index entry whose order is gone, so that retention
    // leaves no entry behind is checked on the keys themselves.
    let swept = final_orders_past_retention_are_removed_and_pending_ones_stay(&store).await;
    let mut raw = redis.connection().await;
    let customer_index = format!(
        "{}{}",
        redis_keys::CUSTOMER_ORDER_INDEX_PREFIX,
        swept.customer
    );
    let indexes = [
        redis_keys::ORDER_INDEX,
        customer_index.as_str(),
        redis_keys::PENDING_ORDERS,
        redis_keys::FINAL_ORDERS,
    ];
    for order_id in &swept.removed {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{}{order_id}", redis_keys::ORDER_PREFIX))
            .query_async(&mut raw)
            .await
            .expect("EXISTS");
        assert!(!exists, "order {order_id} removed");
        for index in indexes {
            let score: Option<f64> = redis::cmd("ZSCORE")
                .arg(index)
                .arg(order_id.to_string())
                .query_async(&mut raw)
                .await
                .expect("ZSCORE");
            assert_eq!(score, None, "order {order_id} left behind in {index}");
        }
    }
    for index in &indexes[..3] {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(*index)
            .arg(swept.pending.to_string())
            .query_async(&mut raw)
            .await
            .expect("ZSCORE");
        assert!(score.is_some(), "pending order kept in {index}");
    }
}

/// Runs every rule against `store`, which must be empty.
pub async fn order_store_contract(store: &dyn OrderStore) {
    store.ping().await.expect("the store answers");
    catalog_is_seeded_once_and_upserted(store).await;
    pending_orders_are_created_if_absent_and_discarded_only_while_pending(store).await;
    stock_is_reserved_for_all_lines_or_none(store).await;
    a_command_id_takes_effect_at_most_once_and_replays_its_outcome(store).await;
    cancelling_releases_the_stock_of_a_confirmed_order_only(store).await;
    a_discarded_order_is_recreated_by_its_place_command(store).await;
    orders_are_listed_newest_first_page_by_page(store).await;
    each_customers_orders_are_listed_from_their_own_index(store).await;
    overdue_pending_orders_are_found_until_they_move_on(store).await;
    // Last: it removes every final order the rules above left.
    final_orders_past_retention_are_removed_and_pending_ones_stay(store).await;
}

/// The orders a retention sweep removed, and the pending one it kept, all of
/// one customer.
struct Swept {
    customer: String,
    removed: Vec<OrderId>,
    pending: OrderId,
}

/// Removes every final order past `final_before`, batch by batch.
async fn sweep(store: &dyn OrderStore, final_before: time::OffsetDateTime) {
    while store
        .remove_final_before(final_before, 2)
        .await
        .expect("sweep")
        == 2
    {}
}

/// Retention with a short setting (the sweep's cut-off is "now"): final
/// orders (Confirmed, Rejected, Cancelled) go with their index entries, a
/// pending order stays, and nothing goes before its retention has passed.
async fn final_orders_past_retention_are_removed_and_pending_ones_stay(
    store: &dyn OrderStore,
) -> Swept {
    let before_any = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
    let customer = format!("retention-{}", OrderId::new());
    let ours = |order_id: OrderId, items| PlaceOrder {
        customer_id: customer.clone(),
        ..place(order_id, items)
    };
    let pending = draft(OrderId::new(), &customer);
    store.create_pending(&pending).await.expect("pending");
    let confirmed = ours(OrderId::new(), vec![line(KEYBOARD, 1)]);
    let too_many = u32::try_from(stock(store, MOUSE).await + 1).expect("small");
    let rejected = ours(OrderId::new(), vec![line(MOUSE, too_many)]);
    let cancelled_order = ours(OrderId::new(), vec![line(KEYBOARD, 1)]);
    for command in [&confirmed, &rejected, &cancelled_order] {
        store.apply_place(command).await.expect("placed");
    }
    cancelled(store, cancelled_order.order_id).await;
    let removed = vec![
        confirmed.order_id,
        rejected.order_id,
        cancelled_order.order_id,
    ];
    assert_eq!(
        status(store, &rejected.order_id).await,
        Some(OrderStatus::Rejected)
    );

    sweep(store, before_any).await;
    for order_id in &removed {
        assert!(
            status(store, order_id).await.is_some(),
            "kept until its retention has passed"
        );
    }

    sweep(
        store,
        time::OffsetDateTime::now_utc() + time::Duration::seconds(1),
    )
    .await;
    for order_id in &removed {
        assert_eq!(status(store, order_id).await, None, "{order_id} removed");
    }
    assert_eq!(
        status(store, &pending.order_id).await,
        Some(OrderStatus::Pending),
        "a pending order is never removed by retention"
    );
    let listed: Vec<OrderId> = store
        .list_customer_orders(&customer, 100, None)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert_eq!(listed, vec![pending.order_id]);
    let all: Vec<OrderId> = store
        .list_orders(10_000, None)
        .await
        .expect("list")
        .into_iter()
        .map(|o| o.order_id)
        .collect();
    assert!(all.contains(&pending.order_id));
    assert!(removed.iter().all(|id| !all.contains(id)));
    Swept {
        customer,
        removed,
        pending: pending.order_id,
    }
}

/// What order-api's re-publisher relies on (no orphan orders).
async fn overdue_pending_orders_are_found_until_they_move_on(store: &dyn OrderStore) {
    let order_id = OrderId::new();
    let placed = draft(order_id, "overdue");
    store.create_pending(&placed).await.expect("pending");
    let overdue = |before| async move {
        store
            .overdue_pending(before, 10_000)
            .await
            .expect("overdue")
            .into_iter()
            .filter(|d| d.order_id == order_id)
            .collect::<Vec<_>>()
    };
    assert!(
        overdue(placed.created_at).await.is_empty(),
        "not overdue at its own creation time"
    );
    assert_eq!(
        overdue(placed.created_at + time::Duration::seconds(1)).await,
        vec![placed.clone()],
        "found again, as placed"
    );
    store
        .apply_place(&PlaceOrder::from_draft(&placed))
        .await
        .expect("applied");
    assert!(
        overdue(placed.created_at + time::Duration::seconds(1))
            .await
            .is_empty(),
        "no longer pending"
    );
}

const KEYBOARD: &str = "CT-KEYBOARD";
const MOUSE: &str = "CT-MOUSE";

fn product(id: &str, stock: i64) -> Product {
    Product {
        product_id: id.to_owned(),
        name: format!("{id} name"),
        unit_price: Decimal::new(1999, 2),
        stock,
    }
}

async fn stock(store: &dyn OrderStore, id: &str) -> i64 {
    store.products_by_id(&[id]).await.expect("read")[0]
        .as_ref()
        .unwrap_or_else(|| panic!("product {id} exists"))
        .stock
}

fn line(id: &str, quantity: u32) -> PricedItem {
    PricedItem {
        product_id: id.to_owned(),
        product_name: format!("{id} name"),
        quantity,
        unit_price: Decimal::new(1999, 2),
    }
}

fn place(order_id: OrderId, items: Vec<PricedItem>) -> PlaceOrder {
    PlaceOrder {
        command_id: format!("place:{order_id}"),
        order_id,
        customer_id: "contract".to_owned(),
        total_amount: items
            .iter()
            .map(|item| item.unit_price * Decimal::from(item.quantity))
            .sum(),
        items,
        created_at: time::OffsetDateTime::UNIX_EPOCH + time::Duration::days(20_000),
    }
}

fn cancel(order_id: OrderId) -> CancelOrder {
    CancelOrder {
        command_id: format!("cancel:{order_id}"),
        order_id,
    }
}

pub(crate) fn draft(order_id: OrderId, customer: &str) -> OrderDraft {
    OrderDraft {
        customer_id: customer.to_owned(),
        ..place(order_id, vec![line(KEYBOARD, 1)]).draft()
    }
}

fn transitioned(status: OrderStatus, reason: Option<&str>) -> Effect {
    Effect::Transitioned {
        status,
        reason: reason.map(str::to_owned),
    }
}

/// Applies the cancel command of an order that exists.
async fn cancelled(store: &dyn OrderStore, order_id: OrderId) -> CancelApplied {
    store
        .apply_cancel(&cancel(order_id))
        .await
        .expect("cancel")
        .expect("the order exists")
}

async fn status(store: &dyn OrderStore, order_id: &OrderId) -> Option<OrderStatus> {
    store
        .order(order_id)
        .await
        .expect("read")
        .map(|order| order.status)
}

async fn catalog_is_seeded_once_and_upserted(store: &dyn OrderStore) {
    store
        .ensure_catalog(&[product(MOUSE, 5), product(KEYBOARD, 10)])
        .await
        .expect("seed");
    store
        .ensure_catalog(&[product(KEYBOARD, 999), product("CT-OTHER", 1)])
        .await
        .expect("seed again");
    let ids: Vec<_> = store
        .products()
        .await
        .expect("list")
        .into_iter()
        .map(|p| (p.product_id, p.stock))
        .collect();
    assert_eq!(
        ids,
        [(KEYBOARD.to_owned(), 10), (MOUSE.to_owned(), 5)],
        "a catalog with products is never seeded again; products come sorted by id"
    );
    let found = store
        .products_by_id(&[MOUSE, "CT-NONE", KEYBOARD])
        .await
        .expect("look up");
    assert_eq!(
        found,
        [Some(product(MOUSE, 5)), None, Some(product(KEYBOARD, 10))],
        "lookups are aligned with the ids asked for"
    );
    let mut changed = product(MOUSE, 7);
    changed.unit_price = Decimal::new(4950, 2);
    store.upsert_product(&changed).await.expect("upsert");
    store
        .upsert_product(&product("CT-NEW", 3))
        .await
        .expect("insert");
    assert_eq!(
        store
            .products_by_id(&[MOUSE, "CT-NEW"])
            .await
            .expect("read"),
        [Some(changed), Some(product("CT-NEW", 3))]
    );
    store
        .upsert_product(&product(MOUSE, 5))
        .await
        .expect("restore");
}

async fn pending_orders_are_created_if_absent_and_discarded_only_while_pending(
    store: &dyn OrderStore,
) {
    let order_id = OrderId::new();
    assert_eq!(store.order(&order_id).await.expect("read"), None);
    store
        .create_pending(&draft(order_id, "first"))
        .await
        .expect("create");
    store
        .create_pending(&draft(order_id, "second"))
        .await
        .expect("create again");
    let order = store.order(&order_id).await.expect("read").expect("exists");
    assert_eq!(order.status, OrderStatus::Pending);
    assert_eq!(order.customer_id, "first", "an existing order is kept");
    assert_eq!(order.reason, None);

    store.discard_pending(&order_id).await.expect("discard");
    assert_eq!(status(store, &order_id).await, None, "a pending order goes");
    assert!(
        store
            .list_orders(100, None)
            .await
            .expect("list")
            .iter()
            .all(|o| o.order_id != order_id),
        "and leaves the listing"
    );

    let confirmed = OrderId::new();
    store
        .create_pending(&draft(confirmed, "c"))
        .await
        .expect("create");
    let applied = store
        .apply_place(&place(confirmed, vec![line(KEYBOARD, 1)]))
        .await
        .expect("place");
    assert_eq!(applied.effect, transitioned(OrderStatus::Confirmed, None));
    store.discard_pending(&confirmed).await.expect("discard");
    assert_eq!(
        status(store, &confirmed).await,
        Some(OrderStatus::Confirmed),
        "an order past pending is never discarded"
    );
    let cancel_applied = cancelled(store, confirmed).await;
    assert_eq!(
        cancel_applied.applied.effect,
        transitioned(OrderStatus::Cancelled, None)
    );
}

async fn stock_is_reserved_for_all_lines_or_none(store: &dyn OrderStore) {
    let (keyboards, mice) = (stock(store, KEYBOARD).await, stock(store, MOUSE).await);
    let short = OrderId::new();
    let applied = store
        .apply_place(&place(
            short,
            vec![
                line(KEYBOARD, 2),
                line(MOUSE, u32::try_from(mice + 1).expect("small")),
            ],
        ))
        .await
        .expect("place");
    let expected = format!(
        "insufficient stock for {MOUSE}: requested {}, available {mice}",
        mice + 1
    );
    assert_eq!(
        applied,
        Applied {
            duplicate: false,
            effect: transitioned(OrderStatus::Rejected, Some(&expected)),
        }
    );
    assert_eq!(
        (stock(store, KEYBOARD).await, stock(store, MOUSE).await),
        (keyboards, mice),
        "a rejected order reserves nothing, not even its lines that were in stock"
    );
    let order = store.order(&short).await.expect("read").expect("recorded");
    assert_eq!(order.status, OrderStatus::Rejected);
    assert_eq!(order.reason.as_deref(), Some(expected.as_str()));

    invalid_commands_are_refused_and_change_nothing(store, keyboards).await;

    let exact = OrderId::new();
    let applied = store
        .apply_place(&place(
            exact,
            vec![
                line(KEYBOARD, 3),
                line(MOUSE, u32::try_from(mice).expect("small")),
            ],
        ))
        .await
        .expect("place");
    assert_eq!(applied.effect, transitioned(OrderStatus::Confirmed, None));
    assert_eq!(
        (stock(store, KEYBOARD).await, stock(store, MOUSE).await),
        (keyboards - 3, 0),
        "every line is reserved; stock may reach zero, never below"
    );
    cancelled(store, exact).await;
}

/// A command naming an unknown product, or one product on two lines (which
/// would pass the stock check once per line), is refused before any write.
async fn invalid_commands_are_refused_and_change_nothing(store: &dyn OrderStore, keyboards: i64) {
    let unknown = place(OrderId::new(), vec![line(KEYBOARD, 1), line("CT-NONE", 1)]);
    let repeated = place(
        OrderId::new(),
        vec![
            line(KEYBOARD, u32::try_from(keyboards).expect("small")),
            line(KEYBOARD, 1),
        ],
    );
    for (command, expected) in [
        (&unknown, "unknown product CT-NONE".to_owned()),
        (
            &repeated,
            format!("product {KEYBOARD} is on more than one line"),
        ),
    ] {
        for _ in 0..2 {
            let refused = store.apply_place(command).await.expect_err("refused");
            assert!(
                matches!(&refused, StoreError::InvalidCommand(reason) if *reason == expected),
                "{refused:?}"
            );
            assert!(!refused.is_transient());
        }
        assert_eq!(stock(store, KEYBOARD).await, keyboards, "no stock taken");
        assert_eq!(
            store.order(&command.order_id).await.expect("read"),
            None,
            "no order recorded"
        );
    }
    assert!(
        store
            .list_customer_orders("contract", 10_000, None)
            .await
            .expect("list")
            .iter()
            .all(|o| o.order_id != unknown.order_id && o.order_id != repeated.order_id),
        "no index entry"
    );
}

async fn a_command_id_takes_effect_at_most_once_and_replays_its_outcome(store: &dyn OrderStore) {
    let keyboards = stock(store, KEYBOARD).await;
    let order_id = OrderId::new();
    let command = place(order_id, vec![line(KEYBOARD, 2)]);
    let first = store.apply_place(&command).await.expect("place");
    assert_eq!(
        first,
        Applied {
            duplicate: false,
            effect: transitioned(OrderStatus::Confirmed, None),
        }
    );
    let again = store.apply_place(&command).await.expect("place again");
    assert_eq!(
        again,
        Applied {
            duplicate: true,
            effect: first.effect.clone(),
        }
    );
    assert_eq!(stock(store, KEYBOARD).await, keyboards - 2, "reserved once");

    // A different command id for the same order finds it past pending.
    let other = PlaceOrder {
        command_id: format!("place-retry:{order_id}"),
        ..command.clone()
    };
    assert_eq!(
        store.apply_place(&other).await.expect("place other"),
        Applied {
            duplicate: false,
            effect: Effect::Unchanged {
                status: OrderStatus::Confirmed
            },
        }
    );
    assert_eq!(stock(store, KEYBOARD).await, keyboards - 2);

    // The recorded outcome is replayed even after the order moved on.
    cancelled(store, order_id).await;
    assert_eq!(
        store.apply_place(&command).await.expect("replay"),
        Applied {
            duplicate: true,
            effect: transitioned(OrderStatus::Confirmed, None),
        }
    );
    assert_eq!(status(store, &order_id).await, Some(OrderStatus::Cancelled));
    assert_eq!(stock(store, KEYBOARD).await, keyboards);
}

async fn cancelling_releases_the_stock_of_a_confirmed_order_only(store: &dyn OrderStore) {
    let keyboards = stock(store, KEYBOARD).await;
    let confirmed = OrderId::new();
    store
        .apply_place(&place(confirmed, vec![line(KEYBOARD, 4)]))
        .await
        .expect("place");
    assert_eq!(stock(store, KEYBOARD).await, keyboards - 4);
    let first = cancelled(store, confirmed).await;
    assert_eq!(
        first.applied,
        Applied {
            duplicate: false,
            effect: transitioned(OrderStatus::Cancelled, None),
        }
    );
    let placed = place(confirmed, vec![line(KEYBOARD, 4)]);
    assert_eq!(
        (
            first.order.order_id,
            first.order.customer_id.as_str(),
            &first.order.items,
            first.order.total_amount
        ),
        (
            confirmed,
            placed.customer_id.as_str(),
            &placed.items,
            placed.total_amount
        ),
        "the cancelled order comes back"
    );
    assert_eq!(stock(store, KEYBOARD).await, keyboards, "released");
    let again = cancelled(store, confirmed).await;
    assert!(again.applied.duplicate);
    assert_eq!(again.applied.effect, first.applied.effect);
    assert_eq!(stock(store, KEYBOARD).await, keyboards, "released once");

    // A pending order holds no stock: cancelling it releases none, and its
    // place command, arriving later, changes nothing.
    let pending = OrderId::new();
    store
        .create_pending(&place(pending, vec![line(KEYBOARD, 1)]).draft())
        .await
        .expect("create");
    let cancel_applied = cancelled(store, pending).await;
    assert_eq!(
        cancel_applied.applied.effect,
        transitioned(OrderStatus::Cancelled, None)
    );
    assert_eq!(stock(store, KEYBOARD).await, keyboards);
    assert_eq!(
        store
            .apply_place(&place(pending, vec![line(KEYBOARD, 1)]))
            .await
            .expect("late place")
            .effect,
        Effect::Unchanged {
            status: OrderStatus::Cancelled
        }
    );
    assert_eq!(stock(store, KEYBOARD).await, keyboards);

    // Rejected is final.
    let rejected = OrderId::new();
    let too_many = u32::try_from(stock(store, KEYBOARD).await + 1).expect("small");
    store
        .apply_place(&place(rejected, vec![line(KEYBOARD, too_many)]))
        .await
        .expect("place");
    assert_eq!(
        cancelled(store, rejected).await.applied.effect,
        Effect::Unchanged {
            status: OrderStatus::Rejected
        }
    );
    assert_eq!(status(store, &rejected).await, Some(OrderStatus::Rejected));

    assert_eq!(
        store
            .apply_cancel(&cancel(OrderId::new()))
            .await
            .expect("cancel"),
        None,
        "an order that does not exist"
    );
}

async fn a_discarded_order_is_recreated_by_its_place_command(store: &dyn OrderStore) {
    let order_id = OrderId::new();
    let command = place(order_id, vec![line(KEYBOARD, 1)]);
    store
        .create_pending(&command.draft())
        .await
        .expect("create");
    store.discard_pending(&order_id).await.expect("discard");
    assert_eq!(status(store, &order_id).await, None);
    store.apply_place(&command).await.expect("place");
    let order = store
        .order(&order_id)
        .await
        .expect("read")
        .expect("recreated");
    assert_eq!(order.status, OrderStatus::Confirmed);
    assert_eq!(order.items, command.items);
    assert_eq!(order.total_amount, command.total_amount);
    assert_eq!(order.created_at, command.created_at);
    assert!(
        store
            .list_orders(1, None)
            .await
            .expect("list")
            .iter()
            .any(|o| o.order_id == order_id),
        "and listed again"
    );
}

async fn orders_are_listed_newest_first_page_by_page(store: &dyn OrderStore) {
    let mut ids = Vec::new();
    for _ in 0..5 {
        let order_id = OrderId::new();
        store
            .create_pending(&draft(order_id, "pager"))
            .await
            .expect("create");
        ids.push(order_id);
    }
    let everything = store.list_orders(1_000, None).await.expect("list");
    let listed: Vec<OrderId> = everything.iter().map(|o| o.order_id).collect();
    let mut newest_first = listed.clone();
    newest_first.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        listed, newest_first,
        "newest (largest time-ordered id) first"
    );
    ids.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(
        listed[..5],
        ids[..],
        "the orders just created are the newest"
    );

    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store.list_orders(2, before.as_ref()).await.expect("page");
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        before = Some(last.order_id);
        paged.extend(page.iter().map(|o| o.order_id));
    }
    assert_eq!(
        paged, listed,
        "pages strictly older than the cursor cover everything once"
    );
    assert!(store.list_orders(0, None).await.expect("empty").is_empty());
}

/// One customer's page through `list_customer_orders`, following the cursor.
async fn customer_pages(store: &dyn OrderStore, customer: &str, page_size: usize) -> Vec<OrderId> {
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_customer_orders(customer, page_size, before.as_ref())
            .await
            .expect("page");
        assert!(page.len() <= page_size);
        assert!(
            page.iter().all(|o| o.customer_id == customer),
            "only {customer}'s orders: {page:?}"
        );
        let Some(last) = page.last() else { break };
        before = Some(last.order_id);
        paged.extend(page.iter().map(|o| o.order_id));
    }
    paged
}

async fn each_customers_orders_are_listed_from_their_own_index(store: &dyn OrderStore) {
    let (alice, bob) = ("ct-alice", "ct-bob:with:colons");
    let mut alices = Vec::new();
    let mut bobs = Vec::new();
    for i in 0..7 {
        let order_id = OrderId::new();
        let customer = if i % 3 == 0 { bob } else { alice };
        store
            .create_pending(&draft(order_id, customer))
            .await
            .expect("create");
        if customer == alice {
            alices.push(order_id);
        } else {
            bobs.push(order_id);
        }
    }
    alices.reverse();
    bobs.reverse();
    assert_eq!(
        customer_pages(store, alice, 2).await,
        alices,
        "newest first, page by page, only alice's"
    );
    assert_eq!(customer_pages(store, bob, 10).await, bobs);
    assert!(
        store
            .list_customer_orders("ct-nobody", 10, None)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        store
            .list_customer_orders("ct-alice:", 10, None)
            .await
            .expect("list")
            .is_empty(),
        "a customer id that extends another's is another customer"
    );

    // The index follows the order through its life: a state change keeps it
    // listed, a discard removes it, its place command recreates it.
    let confirmed = alices[0];
    store
        .apply_place(&PlaceOrder {
            customer_id: alice.to_owned(),
            ..place(confirmed, vec![line(KEYBOARD, 1)])
        })
        .await
        .expect("place");
    let discarded = alices[1];
    store.discard_pending(&discarded).await.expect("discard");
    let listed = customer_pages(store, alice, 100).await;
    assert!(
        listed.contains(&confirmed),
        "a confirmed order stays listed"
    );
    assert!(!listed.contains(&discarded), "a discarded order leaves");
    let recreated = PlaceOrder {
        customer_id: alice.to_owned(),
        ..place(discarded, vec![line(KEYBOARD, 1)])
    };
    store.apply_place(&recreated).await.expect("place");
    assert_eq!(
        customer_pages(store, alice, 100).await,
        alices,
        "listed again"
    );

    // An order recreated by its place command alone is in its customer's index.
    let only_placed = OrderId::new();
    store
        .apply_place(&PlaceOrder {
            customer_id: bob.to_owned(),
            ..place(only_placed, vec![line(KEYBOARD, 1)])
        })
        .await
        .expect("place");
    assert_eq!(
        customer_pages(store, bob, 1).await.first(),
        Some(&only_placed)
    );
    for order_id in [confirmed, discarded, only_placed] {
        cancelled(store, order_id).await;
    }
    assert!(
        store
            .list_customer_orders(alice, 0, None)
            .await
            .expect("empty")
            .is_empty()
    );
}
