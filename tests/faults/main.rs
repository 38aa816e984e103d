//! Fault injection: no accepted order is lost or doubled, whatever dies.
//!
//! A 3-node NATS JetStream cluster (streams with 3 replicas), Redis with AOF
//! (fsync always), two order-api, three order-service and two
//! notification-service replicas and a webhook receiver run while clients
//! place a few thousand orders with `Idempotency-Key`s (retrying as real
//! clients do) and the chaos schedule kills and restarts every kind of
//! process and injects poison and duplicate messages. A checker then compares,
//! order by order, what was answered with what happened.
//!
//! On top of the kills, failpoints crash message handling between its steps
//! at random (after the effect is stored, before the ack, after a webhook
//! send), so every gap the guarantees cover is hit many times per run.
//!
//! Slow: run with `tests/run.sh faults`, which builds the binaries with
//! `--features catga-core/failpoints` first. `CATGA_FAULT_ORDERS` sets the load.

mod redis_failover;
mod redis_freeze;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use async_nats::jetstream::message::PublishMessage;
use catga_core::{
    config::keys,
    contracts::{consumers, headers as header_names, streams, subjects},
};
use catga_tests::{
    Api, JWT_SECRET, NatsCluster, Redis, Service, Tokens, WebhookReceiver, order_body,
};
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// Products of the test and their initial stock: one that runs out (so some
/// orders are rejected), one that nearly does, one with plenty.
const PRODUCTS: [(&str, i64); 3] = [("FAULT-A", 400), ("FAULT-B", 900), ("FAULT-C", 100_000)];
const WORKERS: usize = 12;
/// Crashes injected into message handling (`fail` crate syntax).
const FAILPOINTS: &str =
    "catga::after-apply=2%panic;catga::before-ack=2%panic;catga::after-send=2%panic";
const FAILPOINT_NAMES: [&str; 3] = [
    "catga::after-apply",
    "catga::before-ack",
    "catga::after-send",
];

/// An order a client got `202` for.
#[derive(Debug, Clone)]
struct Accepted {
    order_id: String,
    customer: String,
    product: &'static str,
    quantity: u32,
}

#[derive(Default)]
struct Tally {
    accepted: Vec<Accepted>,
    gave_up: usize,
    retries: usize,
    cancel_requests: usize,
}

/// The running system, with replicas that the chaos task replaces.
struct Cluster {
    nats: NatsCluster,
    redis: Redis,
    webhook: WebhookReceiver,
    env: HashMap<String, String>,
    logs: tempfile::TempDir,
    apis: RwLock<Vec<Service>>,
    order_services: RwLock<Vec<Service>>,
    notifications: RwLock<Vec<Service>>,
}

impl Cluster {
    async fn start() -> Self {
        let (nats, redis, webhook) = tokio::join!(
            NatsCluster::start(3),
            Redis::start(),
            WebhookReceiver::start()
        );
        nats.wait_for_jetstream().await;
        let logs = tempfile::TempDir::new().expect("log dir");
        let mut env = catga_tests::service_env(&nats.urls(), &redis.configuration(), &webhook.url);
        env.extend(
            [
                (keys::NATS_STREAM_REPLICAS, "3"),
                // Short, so work of a killed replica comes back within the test.
                (keys::NATS_ACK_WAIT_SECONDS, "4"),
                (keys::MAX_RETRY_ATTEMPTS, "20"),
                (keys::SHUTDOWN_GRACE_SECONDS, "10"),
                (keys::WEBHOOK_TIMEOUT_SECONDS, "2"),
                ("FAILPOINTS", FAILPOINTS),
                (keys::LOG_LEVEL, "info"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        catga_tests::run_topology_step(&env).await;
        let path = logs.path().to_owned();
        let start = |name: &'static str| {
            let (env, path) = (env.clone(), path.clone());
            async move { Service::start(name, &env, &path).await }
        };
        let (a1, a2, o1, o2, o3, n1, n2) = tokio::join!(
            start("order-api"),
            start("order-api"),
            start("order-service"),
            start("order-service"),
            start("order-service"),
            start("notification-service"),
            start("notification-service"),
        );
        Self {
            nats,
            redis,
            webhook,
            env,
            logs,
            apis: RwLock::new(vec![a1, a2]),
            order_services: RwLock::new(vec![o1, o2, o3]),
            notifications: RwLock::new(vec![n1, n2]),
        }
    }

    async fn start_service(&self, name: &'static str) -> Service {
        Service::start(name, &self.env, self.logs.path()).await
    }

    /// The API of replica `i` (modulo the replicas alive).
    async fn api(&self, i: usize) -> Api {
        let apis = self.apis.read().await;
        Api::with_tokens(
            apis[i % apis.len()].url(""),
            Tokens::Secret(JWT_SECRET.to_owned()),
        )
    }

    async fn all_logs(&self) -> String {
        let mut out = String::new();
        for group in [&self.apis, &self.order_services, &self.notifications] {
            for service in group.read().await.iter() {
                out.push_str(&format!("===== {} :{}\n", service.name, service.port));
                let logs = service.process.logs();
                let tail: Vec<&str> = logs.lines().rev().take(40).collect();
                for line in tail.into_iter().rev() {
                    out.push_str(line);
                    out.push('\n');
                }
            }
        }
        out
    }
}

/// Places one logical order, retrying with the same key until answered 202
/// (or giving up after a minute, as a client would).
async fn place_with_retries(cluster: &Cluster, index: usize, tally: &Mutex<Tally>) {
    let product = PRODUCTS[index % PRODUCTS.len()].0;
    let quantity = u32::try_from(index / 3 % 3 + 1).expect("small");
    let customer = format!("fault-customer-{index}");
    let key = format!("fault-order-{index}");
    let body = order_body(&customer, &[(product, quantity)]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut attempt = 0;
    while Instant::now() < deadline {
        let api = cluster.api(index + attempt).await.as_customer(&customer);
        attempt += 1;
        match api
            .try_send(
                reqwest::Method::POST,
                "/api/orders",
                &[
                    ("content-type", "application/json"),
                    ("idempotency-key", &key),
                ],
                Some(serde_json::to_vec(&body).expect("json")),
            )
            .await
        {
            Ok(reply) if reply.status == 202 => {
                let order_id = reply.body["orderId"].as_str().expect("orderId").to_owned();
                let mut tally = tally.lock().expect("lock");
                tally.retries += attempt - 1;
                tally.accepted.push(Accepted {
                    order_id,
                    customer,
                    product,
                    quantity,
                });
                return;
            }
            // 503 (dependency away), 409 (an earlier attempt still holds the
            // key), or no answer (replica killed): retry with the same key.
            Ok(reply) if matches!(reply.status, 503 | 409 | 500) => {}
            Err(_) => {}
            Ok(reply) => panic!(
                "order {index}: unexpected {} {:?}",
                reply.status, reply.body
            ),
        }
        tokio::time::sleep(Duration::from_millis(100 * attempt.min(10) as u64)).await;
    }
    tally.lock().expect("lock").gave_up += 1;
}

/// Asks to cancel an accepted order (some clients change their mind).
async fn cancel_with_retries(cluster: &Cluster, order: &Accepted, attempt_base: usize) -> bool {
    for attempt in 0..50 {
        let api = cluster.api(attempt_base + attempt).await;
        match api
            .try_send(
                reqwest::Method::POST,
                &format!("/api/orders/{}/cancel", order.order_id),
                &[("content-type", "application/json")],
                Some(b"{}".to_vec()),
            )
            .await
        {
            Ok(reply) if reply.status == 202 => return true,
            Ok(reply) if reply.status == 409 => return false,
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
    false
}

/// Publishes messages that can never succeed, straight onto the subjects.
async fn inject_poison(cluster: &Cluster) -> usize {
    let js = cluster.nats.jetstream().await;
    let poison = [
        (subjects::PLACE_ORDER, "{\"not\": \"a command\""),
        ("catga.orders.commands.teleport", "{}"),
        (subjects::ORDER_CONFIRMED, "garbage"),
    ];
    for (subject, payload) in poison {
        for _ in 0..20 {
            let sent = async {
                js.send_publish(subject, PublishMessage::build().payload(payload.into()))
                    .await
                    .ok()?
                    .await
                    .ok()
            }
            .await;
            if sent.is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
    poison.len()
}

/// Republishes accepted place commands under new message ids, defeating the
/// broker's deduplication: only the store's idempotency can stop them.
async fn inject_duplicates(cluster: &Cluster, orders: &[Accepted]) -> usize {
    let js = cluster.nats.jetstream().await;
    let api = cluster.api(0).await;
    let mut sent = 0;
    for order in orders {
        let Ok(reply) = api
            .try_send(
                reqwest::Method::GET,
                &format!("/api/orders/{}", order.order_id),
                &[],
                None,
            )
            .await
        else {
            continue;
        };
        if reply.status != 200 {
            continue;
        }
        let o = reply.body;
        let command = json!({
            "commandId": format!("place:{}", order.order_id),
            "orderId": order.order_id,
            "customerId": o["customerId"],
            "items": o["items"],
            "totalAmount": o["totalAmount"].to_string(),
            "createdAt": o["createdAt"],
        });
        let published = async {
            js.send_publish(
                subjects::PLACE_ORDER,
                PublishMessage::build()
                    .payload(serde_json::to_vec(&command).ok()?.into())
                    .message_id(format!("duplicate-{}", order.order_id)),
            )
            .await
            .ok()?
            .await
            .ok()
        }
        .await;
        if published.is_some() {
            sent += 1;
        }
    }
    sent
}

/// Replaces the replica at `index` of `group`: SIGKILL (crash) or SIGTERM
/// (rolling restart, which must exit 0), then a fresh replica.
async fn replace(
    cluster: &Cluster,
    group: &RwLock<Vec<Service>>,
    index: usize,
    name: &'static str,
    crash: bool,
) {
    let fresh = cluster.start_service(name).await;
    let mut old = {
        let mut replicas = group.write().await;
        let i = index % replicas.len();
        std::mem::replace(&mut replicas[i], fresh)
    };
    if crash {
        old.process.kill();
    } else {
        let status = old.process.terminate(Duration::from_secs(20)).await;
        assert!(status.success(), "{name} exited {status} after SIGTERM");
    }
}

/// The chaos schedule, while the load runs.
async fn chaos(
    cluster: Arc<Cluster>,
    tally: Arc<Mutex<Tally>>,
    log: Arc<Mutex<Vec<String>>>,
) -> (usize, usize) {
    let note = |what: String| {
        println!("chaos: {what}");
        log.lock().expect("lock").push(what);
    };
    let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));

    pause(1500).await;
    note("kill -9 order-service replica 0, start a new one".into());
    replace(&cluster, &cluster.order_services, 0, "order-service", true).await;

    pause(1500).await;
    let poison = inject_poison(&cluster).await;
    note(format!("injected {poison} poison messages"));

    pause(1000).await;
    note("kill -9 NATS node 1".into());
    cluster.nats.nodes[1].process.kill();
    pause(3000).await;
    note("restart NATS node 1".into());
    // Same port and JetStream directory.
    cluster.nats.nodes[1].restart().await;

    pause(1500).await;
    note("kill -9 Redis (AOF, fsync always), restart".into());
    cluster.redis.0.restart().await;

    pause(1500).await;
    note("kill -9 order-api replica 1 mid-load, start a new one".into());
    replace(&cluster, &cluster.apis, 1, "order-api", true).await;

    pause(1000).await;
    note("rolling restart (SIGTERM) of every order-service and notification-service".into());
    for i in 0..3 {
        replace(&cluster, &cluster.order_services, i, "order-service", false).await;
    }
    for i in 0..2 {
        replace(
            &cluster,
            &cluster.notifications,
            i,
            "notification-service",
            false,
        )
        .await;
    }

    pause(500).await;
    note("kill -9 notification-service replica 0 and order-service replica 2".into());
    replace(
        &cluster,
        &cluster.notifications,
        0,
        "notification-service",
        true,
    )
    .await;
    replace(&cluster, &cluster.order_services, 2, "order-service", true).await;

    let sample: Vec<Accepted> = tally
        .lock()
        .expect("lock")
        .accepted
        .iter()
        .take(25)
        .cloned()
        .collect();
    let duplicates = inject_duplicates(&cluster, &sample).await;
    assert!(
        duplicates > 0,
        "no duplicate was republished out of {} sampled orders",
        sample.len()
    );
    note(format!(
        "republished {duplicates} accepted commands under new message ids"
    ));
    (poison, duplicates)
}

/// Every order in the store, newest first.
/// Stock balances and is never negative: for each `(product, initial)`,
/// `initial` less what `orders` (single-line) confirmed equals the stock in
/// `products` (the catalog as `GET /api/products` answers it). Cancelled
/// orders released theirs, so only Confirmed ones count.
pub(crate) fn stock_errors<'a>(
    products: &Value,
    initials: impl IntoIterator<Item = (&'a str, i64)>,
    orders: impl Iterator<Item = &'a Value> + Clone,
) -> Vec<String> {
    let mut errors = Vec::new();
    for (product, initial) in initials {
        let confirmed: i64 = orders
            .clone()
            .filter(|o| o["status"] == "Confirmed" && o["items"][0]["productId"] == product)
            .map(|o| o["items"][0]["quantity"].as_i64().unwrap_or(0))
            .sum();
        let stock = products
            .as_array()
            .and_then(|all| all.iter().find(|p| p["productId"] == product))
            .and_then(|p| p["stock"].as_i64())
            .expect("product");
        if stock < 0 || initial - confirmed != stock {
            errors.push(format!(
                "{product}: initial {initial} - confirmed {confirmed} != stock {stock}"
            ));
        }
    }
    errors
}

async fn all_orders(api: &Api) -> Vec<Value> {
    let mut orders = Vec::new();
    let mut path = "/api/orders?limit=100".to_owned();
    loop {
        let page = api.get(&path).await.body;
        orders.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["nextCursor"].as_str() {
            Some(cursor) => path = format!("/api/orders?limit=100&cursor={cursor}"),
            None => return orders,
        }
    }
}

#[tokio::test]
#[ignore = "slow fault-injection suite: run with tests/run.sh faults"]
async fn no_accepted_order_is_lost_or_doubled_under_faults() {
    let total: usize = std::env::var("CATGA_FAULT_ORDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let cluster = Arc::new(Cluster::start().await);
    let admin = cluster.api(0).await;
    for (product, stock) in PRODUCTS {
        let reply = admin.upsert_product(product, product, "9.99", stock).await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
    }
    let started = Instant::now();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let chaos_log = Arc::new(Mutex::new(Vec::new()));
    let next = Arc::new(AtomicUsize::new(0));

    let chaos_task = tokio::spawn(chaos(cluster.clone(), tally.clone(), chaos_log.clone()));
    let workers: Vec<_> = (0..WORKERS)
        .map(|_| {
            let (cluster, tally, next) = (cluster.clone(), tally.clone(), next.clone());
            tokio::spawn(async move {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    if index >= total {
                        return;
                    }
                    place_with_retries(&cluster, index, &tally).await;
                    // One order in twenty is cancelled by its customer.
                    if index % 20 == 7 {
                        let order = tally.lock().expect("lock").accepted.last().cloned();
                        if let Some(order) = order
                            && cancel_with_retries(&cluster, &order, index).await
                        {
                            tally.lock().expect("lock").cancel_requests += 1;
                        }
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("load worker");
    }
    let (poison, duplicates) = chaos_task.await.expect("chaos");
    let load_time = started.elapsed();

    // Quiesce: every accepted order reaches a final state.
    let api = cluster.api(0).await;
    let accepted = tally.lock().expect("lock").accepted.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    let finals: HashMap<String, Value> = loop {
        let orders = all_orders(&api).await;
        let finals: HashMap<String, Value> = orders
            .into_iter()
            .map(|o| (o["orderId"].as_str().unwrap_or_default().to_owned(), o))
            .collect();
        let pending = accepted
            .iter()
            .filter(|a| {
                finals
                    .get(&a.order_id)
                    .is_none_or(|o| o["status"] == "Pending")
            })
            .count();
        if pending == 0 {
            break finals;
        }
        assert!(
            Instant::now() < deadline,
            "{pending} accepted orders never reached a final state\n{}",
            cluster.all_logs().await
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Exactly one order per accepted key, none lost, each as it was placed.
    let mut per_customer: HashMap<&str, usize> = HashMap::new();
    for order in finals.values() {
        if let Some(customer) = order["customerId"].as_str() {
            *per_customer.entry(customer).or_default() += 1;
        }
    }
    let mut lost = 0;
    let mut doubled = 0;
    let mut by_status: BTreeMap<String, usize> = BTreeMap::new();
    for order in &accepted {
        match finals.get(&order.order_id) {
            None => lost += 1,
            Some(o) => {
                assert_eq!(o["items"][0]["productId"], order.product, "{o}");
                assert_eq!(o["items"][0]["quantity"], order.quantity, "{o}");
                *by_status
                    .entry(o["status"].as_str().unwrap_or("?").to_owned())
                    .or_default() += 1;
            }
        }
        if per_customer
            .get(order.customer.as_str())
            .copied()
            .unwrap_or(0)
            > 1
        {
            doubled += 1;
        }
    }

    // Stock balances: initial - confirmed (cancelled released theirs) = final, never negative.
    let products = api.get("/api/products").await.body;
    let stock_errors = stock_errors(&products, PRODUCTS, finals.values());

    // Every final state's event reached the webhook.
    let expected_events: HashSet<String> = accepted
        .iter()
        .filter_map(|a| finals.get(&a.order_id))
        .map(|o| {
            format!(
                "{}:{}",
                o["orderId"].as_str().unwrap_or(""),
                o["status"].as_str().unwrap_or("")
            )
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(90);
    let (missing, duplicate_deliveries) = loop {
        let received = cluster.webhook.received();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in &received {
            if let Some(key) = &r.idempotency_key {
                *seen.entry(key.clone()).or_default() += 1;
            }
        }
        let missing: Vec<&String> = expected_events
            .iter()
            .filter(|e| !seen.contains_key(*e))
            .collect();
        let duplicates: usize = seen.values().map(|n| n - 1).sum();
        if missing.is_empty() || Instant::now() > deadline {
            break (missing.into_iter().cloned().collect::<Vec<_>>(), duplicates);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Nothing is left undelivered or unacknowledged: a dropped ack shows here.
    // A notification-service killed mid-send leaves its send lease (the
    // webhook's worst case plus a margin, about 30 s here); the redelivered
    // event waits in place until it runs out, so give it twice that.
    let js = cluster.nats.jetstream().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let unsettled = loop {
        let mut unsettled = Vec::new();
        for (stream, consumer) in [
            (streams::ORDER_COMMANDS, consumers::ORDER_PROCESSING),
            (streams::ORDER_EVENTS, consumers::NOTIFICATIONS),
        ] {
            let info = async {
                js.get_stream(stream)
                    .await
                    .ok()?
                    .consumer_info(consumer)
                    .await
                    .ok()
            }
            .await;
            match info {
                Some(info) if info.num_pending == 0 && info.num_ack_pending == 0 => {}
                Some(info) => unsettled.push(format!(
                    "{consumer}: {} pending, {} unacknowledged",
                    info.num_pending, info.num_ack_pending
                )),
                None => unsettled.push(format!("{consumer}: no info")),
            }
        }
        if unsettled.is_empty() || Instant::now() > deadline {
            break unsettled;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };

    // Poison messages are in the dead-letter stream with their reason.
    let mut dead = js
        .get_stream(streams::DEAD_LETTERS)
        .await
        .expect("dead-letter stream");
    let dead_letters = dead.info().await.expect("info").state.messages;
    let mut poison_found = 0;
    for seq in 1..=dead_letters {
        if let Ok(message) = dead.get_raw_message(seq).await {
            let reason = message
                .headers
                .get(header_names::DEAD_LETTER_REASON)
                .map(|v| v.to_string());
            if reason.is_some_and(|r| r.contains("undecodable") || r.contains("unknown")) {
                poison_found += 1;
            }
        }
    }

    // The failpoints really fired (the binaries were built with them).
    let mut crashes: BTreeMap<&str, usize> = BTreeMap::new();
    for entry in std::fs::read_dir(cluster.logs.path())
        .expect("log dir")
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        for name in FAILPOINT_NAMES {
            *crashes.entry(name).or_default() += text
                .lines()
                .filter(|l| l.contains(&format!("failpoint {name} panic")))
                .count();
        }
    }

    let redeliveries: f64 = {
        let services = cluster.order_services.read().await;
        catga_tests::metric_total(&services, "catga_redeliveries_total{").await
    };
    let tally = tally.lock().expect("lock");
    println!("\n===== fault-injection tally ({load_time:.1?} of load) =====");
    for line in chaos_log.lock().expect("lock").iter() {
        println!("  chaos: {line}");
    }
    println!("  orders attempted:        {total}");
    println!("  orders accepted (202):   {}", accepted.len());
    println!("  client retries:          {}", tally.retries);
    println!("  clients gave up:         {}", tally.gave_up);
    println!("  cancel requests:         {}", tally.cancel_requests);
    for (status, count) in &by_status {
        println!("  final {status:<10}       {count}");
    }
    println!("  lost:                    {lost}");
    println!("  doubled:                 {doubled}");
    println!("  stock errors:            {}", stock_errors.len());
    println!("  events expected:         {}", expected_events.len());
    println!("  events missing:          {}", missing.len());
    println!(
        "  duplicate deliveries:    {duplicate_deliveries} (same Idempotency-Key; receivers drop them)"
    );
    println!("  redeliveries (current order-service replicas): {redeliveries}");
    println!("  poison injected:         {poison}, dead-lettered with reason: {poison_found}");
    println!("  unsettled at the end:    {unsettled:?}");
    println!("  injected crashes:        {crashes:?}");
    println!("  duplicate publishes:     {duplicates}");

    assert!(
        accepted.len() > total / 2,
        "too few orders accepted to judge"
    );
    assert_eq!(lost, 0, "accepted orders lost");
    assert_eq!(doubled, 0, "orders doubled");
    assert!(stock_errors.is_empty(), "{stock_errors:?}");
    assert!(
        missing.is_empty(),
        "events never notified: {:?}",
        &missing[..missing.len().min(10)]
    );
    assert!(
        poison_found >= poison,
        "poison messages missing from the dead-letter stream"
    );
    assert!(
        unsettled.is_empty(),
        "messages left unsettled: {unsettled:?}"
    );
    assert!(
        crashes.values().all(|n| *n > 0),
        "failpoints did not fire: build with --features catga-core/failpoints ({crashes:?})"
    );
}

#[tokio::test]
#[ignore = "needs binaries built with failpoints: run with tests/run.sh faults"]
async fn a_command_that_crashes_every_delivery_is_dead_lettered() {
    // Every handling crashes after the Redis step: on its second and last
    // delivery the consumer dead-letters the message itself (no advisory
    // needed) instead of leaving it stranded in the work queue.
    let system = catga_tests::System::start_with(&[
        ("FAILPOINTS", "catga::after-apply=panic"),
        ("Catga__MaxRetryAttempts", "2"),
        ("NATS__AckWaitSeconds", "1"),
    ])
    .await;
    let api = system.client();
    let reply = api.place("c-poison-pill", &[("PROD-001", 1)]).await;
    assert_eq!(reply.status, 202);
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();

    let js = system.nats.jetstream().await;
    let dead = js
        .get_stream(streams::DEAD_LETTERS)
        .await
        .expect("dead-letter stream");
    let letter = catga_tests::eventually("the dead letter", Duration::from_secs(30), || {
        let dead = dead.clone();
        async move { dead.get_raw_message(1).await.ok() }
    })
    .await;
    assert_eq!(
        letter.subject.as_str(),
        format!("catga.deadletter.{}", subjects::PLACE_ORDER)
    );
    let reason = letter
        .headers
        .get(header_names::DEAD_LETTER_REASON)
        .map(|v| v.to_string())
        .unwrap_or_default();
    assert!(reason.contains("after 2 deliveries"), "{reason}");
    assert_eq!(
        letter
            .headers
            .get(header_names::DEAD_LETTER_DELIVERIES)
            .map(|v| v.to_string())
            .as_deref(),
        Some("2")
    );
    let command: Value = serde_json::from_slice(&letter.payload).expect("the original command");
    assert_eq!(command["orderId"], order_id.as_str());
    // The work queue no longer holds it.
    let commands = js
        .get_stream(streams::ORDER_COMMANDS)
        .await
        .expect("stream");
    catga_tests::eventually(
        "the command stream to empty",
        Duration::from_secs(10),
        || {
            let mut commands = commands.clone();
            async move { (commands.info().await.ok()?.state.messages == 0).then_some(()) }
        },
    )
    .await;
    let dead_lettered =
        catga_tests::metric_total(&system.order_services, "catga_dead_letters_total{").await;
    assert_eq!(dead_lettered, 1.0);
}

#[tokio::test]
#[ignore = "needs binaries built with failpoints: run with tests/run.sh faults"]
async fn an_order_api_killed_between_the_pending_write_and_the_publish_leaves_no_orphan() {
    let system = catga_tests::System::start_with(&[(keys::PENDING_REPUBLISH_SECONDS, "2")]).await;
    // A second order-api that aborts right after writing the pending order.
    let mut env = system.env.clone();
    env.insert("FAILPOINTS".into(), "catga::after-pending=return".into());
    let doomed = Service::start("order-api", &env, system.logs.path()).await;
    let customer = "c-orphan";
    let body = serde_json::to_vec(&order_body(customer, &[("PROD-001", 1)])).expect("json");
    let sent = system
        .client_of(&doomed)
        .as_customer(customer)
        .try_send(
            reqwest::Method::POST,
            "/api/orders",
            &[("content-type", "application/json")],
            Some(body),
        )
        .await;
    assert!(sent.is_err(), "the process died mid-request: {sent:?}");
    catga_tests::eventually("order-api to die", Duration::from_secs(10), || async {
        (doomed.ready_status().await.is_none()).then_some(())
    })
    .await;

    // The surviving order-api finds the orphan and re-publishes its command.
    let api = system.client();
    let order_id =
        catga_tests::eventually("the pending order", Duration::from_secs(10), || async {
            api.get("/api/orders?limit=100").await.body["items"]
                .as_array()?
                .iter()
                .find(|o| o["customerId"] == customer)
                .and_then(|o| o["orderId"].as_str().map(str::to_owned))
        })
        .await;
    let state = api.final_state(&order_id).await;
    assert_eq!(state["status"], "Confirmed", "{}", system.all_logs());
    // Once: one event notified for it, and stock taken once.
    let product = api.get("/api/products").await;
    let stock = product.body.as_array().and_then(|products| {
        products
            .iter()
            .find(|p| p["productId"] == "PROD-001")
            .and_then(|p| p["stock"].as_i64())
    });
    let initial = catga_core::domain::default_catalog()
        .into_iter()
        .find(|p| p.product_id == "PROD-001")
        .map(|p| p.stock);
    assert_eq!(stock, initial.map(|s| s - 1), "stock taken exactly once");
}
