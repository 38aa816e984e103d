//! Drives order-api: starts orders on a schedule (open loop) or from a fixed
//! number of clients (closed loop), and follows each accepted order to its
//! final state.
//!
//! Latency is measured from the moment a request was due, not from when it
//! was sent, so a server that stalls the generator is charged for the wait
//! (no coordinated omission). End-to-end latency is the order's own
//! `updatedAt` (stamped by order-service when it decided) minus the wall-clock
//! time the order was due, bounded by when the final state was first seen;
//! the polling that finds it therefore sets its cost, not its precision.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use catga_core::{contracts::headers, domain::OrderStatus};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde::Deserialize;
use time::OffsetDateTime;
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use crate::{
    auth::{AuthError, Credentials, LoadAuth, token_subject},
    report::{Latencies, LoadShape, Summary},
    workload::Workload,
};

/// The first look at an order's state comes this long after it was due at
/// the earliest; each later look waits as long as the order has taken so far
/// (so an order is read about log2(latency / 2 ms) times), at most
/// [`MAX_POLL_INTERVAL`].
const FIRST_POLL: Duration = Duration::from_millis(2);
const MAX_POLL_INTERVAL: Duration = Duration::from_millis(500);

/// A run: where, how hard, for how long, with which orders.
#[derive(Debug, Clone)]
pub struct Plan {
    /// order-api's base URL, e.g. `http://order-api:8080`.
    pub base_url: String,
    pub load: LoadShape,
    pub duration: Duration,
    pub workload: Workload,
    /// Follow each accepted order until it is final.
    pub follow: bool,
    /// An order not final this long after it was due counts as unfinished.
    pub follow_timeout: Duration,
    pub request_timeout: Duration,
    /// Open loop only: at most this many POSTs in flight; later ones wait
    /// (and their wait counts in their latency).
    pub max_in_flight: usize,
    /// The `Authorization` the requests carry.
    pub auth: LoadAuth,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("--url {0:?} must be an http:// or https:// URL")]
    Url(String),
    #[error("the load must be positive: a rate above 0 or at least one client")]
    NoLoad,
    #[error("cannot build the HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Auth(#[from] AuthError),
}

/// Live counts, for the progress display.
#[derive(Debug, Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub accepted: AtomicU64,
    pub completed: AtomicU64,
    pub failed: AtomicU64,
    pub follow_requests: AtomicU64,
    /// Orders done with, whatever the outcome.
    pub finished: AtomicU64,
}

impl Counters {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What the run has measured so far.
#[derive(Default)]
struct Record {
    acceptance: Latencies,
    end_to_end: Latencies,
    final_states: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
}

/// The part of an order's representation the generator reads.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderView {
    order_id: String,
    status: OrderStatus,
    #[serde(with = "time::serde::rfc3339")]
    updated_at: OffsetDateTime,
}

struct Run {
    plan: Plan,
    credentials: Credentials,
    client: reqwest::Client,
    orders_url: String,
    counters: Arc<Counters>,
    record: Mutex<Record>,
}

/// Runs `plan`, updating `counters` as it goes.
pub async fn run(mut plan: Plan, counters: Arc<Counters>) -> Result<Summary, LoadError> {
    let base = plan.base_url.trim_end_matches('/').to_owned();
    if !(base.starts_with("http://") || base.starts_with("https://")) {
        return Err(LoadError::Url(plan.base_url.clone()));
    }
    match plan.load {
        LoadShape::FixedRate { per_second } if per_second > 0.0 && per_second.is_finite() => {}
        LoadShape::Concurrency { clients } if clients > 0 => {}
        _ => return Err(LoadError::NoLoad),
    }
    if let LoadAuth::Token(token) = &plan.auth {
        // A token is one customer's: every order is placed for it.
        plan.workload.fixed_customer = Some(token_subject(token.expose())?);
    }
    // Valid until the last order could still be followed, with a margin.
    let token_ttl = plan.duration + plan.follow_timeout + Duration::from_secs(3600);
    let credentials = Credentials::new(&plan.auth, plan.workload.customers, token_ttl)?;
    let client = reqwest::Client::builder()
        .timeout(plan.request_timeout)
        .tcp_nodelay(true)
        .pool_max_idle_per_host(usize::MAX)
        .build()?;
    let run = Arc::new(Run {
        orders_url: format!("{base}/api/orders"),
        plan,
        credentials,
        client,
        counters,
        record: Mutex::new(Record::default()),
    });

    let start = Instant::now();
    let mut orders = JoinSet::new();
    match run.plan.load {
        LoadShape::FixedRate { per_second } => {
            open_loop(&run, per_second, start, &mut orders).await;
        }
        LoadShape::Concurrency { clients } => closed_loop(&run, clients, start, &mut orders),
    }
    // Closed-loop clients stop starting orders at the deadline; open loop has
    // started its last one by now.
    let sending_ends = match run.plan.load {
        LoadShape::FixedRate { .. } => Instant::now(),
        LoadShape::Concurrency { .. } => start + run.plan.duration,
    };
    while orders.join_next().await.is_some() {}
    let finished = Instant::now();
    Ok(run.summary(start, sending_ends.min(finished), finished))
}

/// Starts order `n` at `start + n / rate`, whatever the earlier ones do.
async fn open_loop(run: &Arc<Run>, per_second: f64, start: Instant, orders: &mut JoinSet<()>) {
    let total = (per_second * run.plan.duration.as_secs_f64()).round() as u64;
    let in_flight = Arc::new(Semaphore::new(run.plan.max_in_flight.max(1)));
    for seq in 0..total {
        let due = start + Duration::from_secs_f64(seq as f64 / per_second);
        if due > Instant::now() {
            tokio::time::sleep_until(due).await;
        }
        let permit = in_flight.clone().acquire_owned().await;
        let run = run.clone();
        orders.spawn(async move {
            let Ok(permit) = permit else { return };
            run.order(seq, due, Some(permit)).await;
        });
        // Reap what has finished so the set holds only live orders.
        while orders.try_join_next().is_some() {}
    }
}

/// `clients` loops, each placing an order and following it before the next.
fn closed_loop(run: &Arc<Run>, clients: usize, start: Instant, orders: &mut JoinSet<()>) {
    let deadline = start + run.plan.duration;
    let next_seq = Arc::new(AtomicU64::new(0));
    for _ in 0..clients {
        let run = run.clone();
        let next_seq = next_seq.clone();
        orders.spawn(async move {
            loop {
                let due = Instant::now();
                if due >= deadline {
                    break;
                }
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                run.order(seq, due, None).await;
            }
        });
    }
}

impl Run {
    async fn order(
        &self,
        seq: u64,
        due: Instant,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        Counters::bump(&self.counters.sent);
        self.place(seq, due, permit).await;
        Counters::bump(&self.counters.finished);
    }

    /// POSTs order `seq` and, if it is accepted and followed, follows it.
    async fn place(
        &self,
        seq: u64,
        due: Instant,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) {
        let due_wall = OffsetDateTime::now_utc() - due.elapsed();
        let order = self.plan.workload.order(seq);
        let authorization = self.credentials.for_customer(order.customer);
        let mut request = self
            .client
            .post(&self.orders_url)
            .header(CONTENT_TYPE, "application/json")
            .body(order.body);
        if let Some(key) = self.plan.workload.idempotency_key(seq) {
            request = request.header(headers::IDEMPOTENCY_KEY, key);
        }
        if let Some(value) = authorization {
            request = request.header(AUTHORIZATION, value.clone());
        }
        let answer = match request.send().await {
            Ok(response) if response.status() == reqwest::StatusCode::ACCEPTED => {
                response.bytes().await.map_err(|err| request_error(&err))
            }
            Ok(response) => {
                let status = response.status().as_u16();
                // Read the refusal to its end so the connection goes back to
                // the pool instead of being closed (a 503 storm would
                // otherwise open a new connection per request).
                let _ = response.bytes().await;
                Err(format!("HTTP {status}"))
            }
            Err(err) => Err(request_error(&err)),
        };
        drop(permit);
        let body = match answer {
            Ok(body) => body,
            Err(kind) => return self.fail(kind),
        };
        Counters::bump(&self.counters.accepted);
        self.with_record(|r| r.acceptance.record(due.elapsed()));
        if !self.plan.follow {
            return;
        }
        match serde_json::from_slice::<OrderView>(&body) {
            Ok(view) => {
                self.follow(&view.order_id, authorization, due, due_wall)
                    .await;
            }
            Err(_) => self.fail("202 without an order in the body".to_owned()),
        }
    }

    /// Reads the order until it is final.
    async fn follow(
        &self,
        order_id: &str,
        authorization: Option<&HeaderValue>,
        due: Instant,
        due_wall: OffsetDateTime,
    ) {
        let url = format!("{}/{order_id}", self.orders_url);
        let deadline = due + self.plan.follow_timeout;
        loop {
            let wait = due.elapsed().clamp(FIRST_POLL, MAX_POLL_INTERVAL);
            if Instant::now() + wait > deadline {
                return self.fail(format!(
                    "not final within {}",
                    humantime::format_duration(self.plan.follow_timeout)
                ));
            }
            tokio::time::sleep(wait).await;
            Counters::bump(&self.counters.follow_requests);
            // A failed read is retried until the deadline: the order was
            // accepted, so only its final state is in question.
            let mut request = self.client.get(&url);
            if let Some(value) = authorization {
                request = request.header(AUTHORIZATION, value.clone());
            }
            let Ok(response) = request.send().await else {
                continue;
            };
            let Ok(order) = response.json::<OrderView>().await else {
                continue;
            };
            if order.status == OrderStatus::Pending {
                continue;
            }
            let latency = end_to_end(due_wall, order.updated_at, due.elapsed());
            Counters::bump(&self.counters.completed);
            self.with_record(|r| {
                r.end_to_end.record(latency);
                *r.final_states
                    .entry(order.status.as_str().to_owned())
                    .or_default() += 1;
            });
            return;
        }
    }

    fn fail(&self, kind: String) {
        Counters::bump(&self.counters.failed);
        self.with_record(|r| *r.errors.entry(kind).or_default() += 1);
    }

    fn with_record(&self, update: impl FnOnce(&mut Record)) {
        // A panic elsewhere cannot leave a half-made record: each update is
        // one increment or one histogram insert.
        let mut record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        update(&mut record);
    }

    fn summary(&self, start: Instant, sending_ends: Instant, finished: Instant) -> Summary {
        let record = self.record.lock().unwrap_or_else(PoisonError::into_inner);
        let sending = sending_ends.duration_since(start).as_secs_f64();
        let total = finished.duration_since(start).as_secs_f64();
        let accepted = Counters::get(&self.counters.accepted);
        let completed = Counters::get(&self.counters.completed);
        Summary {
            target: self.plan.base_url.clone(),
            load: self.plan.load,
            duration_s: sending,
            drain_s: total - sending,
            sent: Counters::get(&self.counters.sent),
            accepted,
            completed,
            final_states: record.final_states.clone(),
            errors: record.errors.clone(),
            accepted_per_s: accepted as f64 / sending.max(f64::EPSILON),
            completed_per_s: completed as f64 / total.max(f64::EPSILON),
            follow_requests: Counters::get(&self.counters.follow_requests),
            acceptance: record.acceptance.summary(),
            end_to_end: self.plan.follow.then(|| record.end_to_end.summary()),
        }
    }
}

/// POST → final: from when the order was due (`due_wall`) to when
/// order-service decided it (`updated_at`), never more than when the
/// generator saw it final (`seen` after it was due). A clock behind the
/// generator's (an `updated_at` before `due_wall`) falls back to `seen`.
fn end_to_end(due_wall: OffsetDateTime, updated_at: OffsetDateTime, seen: Duration) -> Duration {
    Duration::try_from(updated_at - due_wall)
        .unwrap_or(seen)
        .min(seen)
}

/// A short name for why a request failed, for the error tally.
fn request_error(err: &reqwest::Error) -> String {
    let kind = if err.is_timeout() {
        "timeout"
    } else if err.is_connect() {
        "cannot connect"
    } else if err.is_body() || err.is_decode() {
        "broken response"
    } else {
        "request failed"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn end_to_end_is_the_decision_time_bounded_by_when_it_was_seen() {
        let due = OffsetDateTime::UNIX_EPOCH;
        let seen = Duration::from_millis(40);
        let decided = due + Duration::from_millis(7);
        assert_eq!(end_to_end(due, decided, seen), Duration::from_millis(7));
        // A clock ahead of the generator's cannot make it longer than seen.
        let late = due + Duration::from_millis(90);
        assert_eq!(end_to_end(due, late, seen), seen);
        // A clock behind it falls back to when it was seen.
        let early = due - Duration::from_millis(5);
        assert_eq!(end_to_end(due, early, seen), seen);
    }
}
