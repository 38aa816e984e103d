//! Losing the Redis master costs seconds, not the system, and loses no
//! acknowledged effect: a master with two replicas and three real Sentinels
//! under steady keyed load; the master is killed (-9), then, once the old
//! master is back as a replica, the new master too. The services follow
//! without a restart; the checker compares order by order.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use catga_core::{config::keys, contracts::streams, domain::default_catalog};
use catga_tests::{Api, SentinelGroup, System, order_body, role};
use serde_json::Value;

pub(crate) const WORKERS: usize = 6;
const PRODUCTS: [&str; 3] = ["PROD-001", "PROD-002", "PROD-003"];

pub(crate) struct Placed {
    order_id: String,
    customer: String,
}

/// Places orders with an `Idempotency-Key` each, retrying with the same key
/// on 503, 409 and dropped connections, until `stop`. Records every 503.
/// `worker` numbers are unique across every client of one system.
async fn client(
    api: Api,
    worker: usize,
    next: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    placed: Arc<Mutex<Vec<Placed>>>,
    unavailable: Arc<Mutex<Vec<Instant>>>,
) {
    while !stop.load(Ordering::Relaxed) {
        let index = next.fetch_add(1, Ordering::Relaxed);
        let customer = format!("failover-{worker}-{index}");
        let key = format!("failover-order-{index}");
        let body = order_body(&customer, &[(PRODUCTS[index % PRODUCTS.len()], 1)]);
        // Customers may place orders only for themselves.
        let caller = api.as_customer(&customer);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            assert!(Instant::now() < deadline, "order {index} never accepted");
            let reply = caller
                .try_send(
                    reqwest::Method::POST,
                    "/api/orders",
                    &[
                        ("content-type", "application/json"),
                        ("idempotency-key", &key),
                    ],
                    Some(serde_json::to_vec(&body).expect("json")),
                )
                .await;
            match reply {
                Ok(reply) if reply.status == 202 => {
                    placed.lock().expect("lock").push(Placed {
                        order_id: reply.body["orderId"].as_str().expect("id").to_owned(),
                        customer,
                    });
                    break;
                }
                Ok(reply) if reply.status == 503 => {
                    unavailable.lock().expect("lock").push(Instant::now());
                }
                Ok(reply) if reply.status == 409 => {}
                Err(_) => {}
                Ok(reply) => panic!("unexpected {} {:?}", reply.status, reply.body),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Keyed clients placing orders on a system until stopped.
pub(crate) struct KeyedLoad {
    stop: Arc<AtomicBool>,
    placed: Arc<Mutex<Vec<Placed>>>,
    unavailable: Arc<Mutex<Vec<Instant>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl KeyedLoad {
    /// Starts [`WORKERS`] clients on `system`'s order-api.
    pub(crate) fn start(system: &System) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let placed = Arc::new(Mutex::new(Vec::new()));
        let unavailable = Arc::new(Mutex::new(Vec::new()));
        let next = Arc::new(AtomicUsize::new(0));
        let workers = (0..WORKERS)
            .map(|worker| {
                tokio::spawn(client(
                    system.client(),
                    worker,
                    next.clone(),
                    stop.clone(),
                    placed.clone(),
                    unavailable.clone(),
                ))
            })
            .collect();
        Self {
            stop,
            placed,
            unavailable,
            workers,
        }
    }

    /// Stops the clients once each has its order in hand accepted: the
    /// orders placed, and when each 503 came.
    pub(crate) async fn stop(self) -> (Vec<Placed>, Vec<Instant>) {
        self.stop.store(true, Ordering::Relaxed);
        for worker in self.workers {
            worker.await.expect("client");
        }
        let placed = std::mem::take(&mut *self.placed.lock().expect("lock"));
        let unavailable = std::mem::take(&mut *self.unavailable.lock().expect("lock"));
        (placed, unavailable)
    }
}

/// Seconds between the first and the last 503 in `[from, to)`.
fn seconds_of_503(unavailable: &[Instant], from: Instant, to: Instant) -> f64 {
    let within: Vec<&Instant> = unavailable
        .iter()
        .filter(|at| **at >= from && **at < to)
        .collect();
    match (within.iter().min(), within.iter().max()) {
        (Some(first), Some(last)) => last.duration_since(**first).as_secs_f64(),
        _ => 0.0,
    }
}

#[tokio::test]
#[ignore = "slow fault-injection suite: run with tests/run.sh faults"]
async fn redis_master_failovers_lose_no_acknowledged_order() {
    let group = SentinelGroup::start(2).await;
    let configuration = group.configuration();
    let system = System::start_with(&[
        (keys::REDIS_CONFIGURATION, configuration.as_str()),
        (keys::LOG_LEVEL, "info"),
        // The checker reads every order as one caller.
        (keys::HTTP_RATE_LIMIT_PER_SECOND, "0"),
    ])
    .await;
    let load = KeyedLoad::start(&system);

    // 1. Kill the master; Sentinel promotes a replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let first_master = group.master_port().await.expect("master");
    let first_kill = Instant::now();
    group.node(first_master).process.kill();
    let second_master = group
        .wait_for_new_master(first_master, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    // 2. The old master comes back as a replica; then the new master dies.
    group.node(first_master).restart().await;
    catga_tests::eventually(
        "the old master rejoins as a replica",
        Duration::from_secs(30),
        || async { (role(first_master).await.as_deref() == Some("slave")).then_some(()) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let second_kill = Instant::now();
    group.node(second_master).process.kill();
    let third_master = group
        .wait_for_new_master(second_master, Duration::from_secs(60))
        .await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (placed, unavailable) = load.stop().await;
    let end = Instant::now();

    let checked = check(&system, &placed).await;

    println!("\n===== Redis failover tally =====");
    println!("  orders accepted: {}", placed.len());
    println!(
        "  failover 1 (:{first_master} -> :{second_master}): {:.1} s of 503",
        seconds_of_503(&unavailable, first_kill, second_kill)
    );
    println!(
        "  failover 2 (:{second_master} -> :{third_master}): {:.1} s of 503",
        seconds_of_503(&unavailable, second_kill, end)
    );
    println!("  {checked}");
    assert!(placed.len() > 50, "too little load: {}", placed.len());
    checked.assert_clean("a failover");
}

/// What the checker found, order by order.
pub(crate) struct Checked {
    lost: usize,
    doubled: usize,
    pending: usize,
    stock_errors: Vec<String>,
    not_notified: usize,
    dead_letters: u64,
}

impl std::fmt::Display for Checked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "lost {}, doubled {}, pending {}, not notified {}, dead-lettered {}",
            self.lost, self.doubled, self.pending, self.not_notified, self.dead_letters
        )
    }
}

impl Checked {
    /// 0 lost, 0 doubled, nothing pending, stock balanced and never
    /// negative, and nothing dead-lettered: `fault` is transient, never a
    /// poison message. (Every event notified is waited for in [`check`].)
    pub(crate) fn assert_clean(&self, fault: &str) {
        assert_eq!(self.lost, 0, "acknowledged orders lost");
        assert_eq!(self.doubled, 0, "orders doubled");
        assert_eq!(self.pending, 0, "orders left pending");
        assert!(self.stock_errors.is_empty(), "{:?}", self.stock_errors);
        assert_eq!(self.dead_letters, 0, "nothing is dead-lettered for {fault}");
    }
}

/// Applies the rules to every order a client got a 202 for.
pub(crate) async fn check(system: &System, placed: &[Placed]) -> Checked {
    let api = system.client();
    // Order by order: every 202 has exactly one order, in a final state.
    let mut finals: HashMap<String, Value> = HashMap::new();
    for order in placed {
        let state = api.final_state(&order.order_id).await;
        finals.insert(order.order_id.clone(), state);
    }
    let listed = {
        let mut orders = Vec::new();
        let mut path = "/api/orders?limit=100".to_owned();
        loop {
            let page = api.get(&path).await.body;
            orders.extend(page["items"].as_array().cloned().unwrap_or_default());
            match page["nextCursor"].as_str() {
                Some(cursor) => path = format!("/api/orders?limit=100&cursor={cursor}"),
                None => break orders,
            }
        }
    };
    let mut per_customer: HashMap<&str, usize> = HashMap::new();
    for order in &listed {
        if let Some(customer) = order["customerId"].as_str() {
            *per_customer.entry(customer).or_default() += 1;
        }
    }
    let lost = placed
        .iter()
        .filter(|p| !listed.iter().any(|o| o["orderId"] == p.order_id.as_str()))
        .count();
    let doubled = placed
        .iter()
        .filter(|p| per_customer.get(p.customer.as_str()).copied().unwrap_or(0) > 1)
        .count();
    let pending = listed.iter().filter(|o| o["status"] == "Pending").count();

    // Stock balances and is never negative.
    let products = api.get("/api/products").await.body;
    let initials = PRODUCTS.map(|product| {
        let initial = default_catalog()
            .into_iter()
            .find(|p| p.product_id == product)
            .map(|p| p.stock)
            .expect("catalog product");
        (product, initial)
    });
    let stock_errors = crate::stock_errors(&products, initials, listed.iter());

    // Every final state was notified.
    let expected: HashSet<String> = finals
        .values()
        .map(|o| {
            format!(
                "{}:{}",
                o["orderId"].as_str().unwrap_or(""),
                o["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    let missing = catga_tests::eventually("every event notified", Duration::from_secs(60), || {
        let seen: HashSet<String> = system
            .webhook
            .received()
            .into_iter()
            .filter_map(|r| r.idempotency_key)
            .collect();
        let missing = expected.difference(&seen).count();
        async move { (missing == 0).then_some(missing) }
    })
    .await;

    // Nothing dead-lettered: a failover is transient, never a poison message.
    let dead_letters = system
        .nats
        .jetstream()
        .await
        .get_stream(streams::DEAD_LETTERS)
        .await
        .expect("dead-letter stream")
        .cached_info()
        .state
        .messages;

    Checked {
        lost,
        doubled,
        pending,
        stock_errors,
        not_notified: missing,
        dead_letters,
    }
}
