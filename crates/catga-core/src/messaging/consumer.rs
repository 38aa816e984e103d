//! The consumer loop every service runs: pull what can be worked on, keep the
//! ack deadline alive while working, settle every message, dead-letter what can
//! never succeed, and drain on shutdown.

use std::{
    panic::AssertUnwindSafe,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::{FutureExt, StreamExt};
use tokio::task::{JoinError, JoinSet};
use tokio_util::sync::CancellationToken;

use super::{Broker, ConsumerSpec, Delivery, MessagingError, Slots};
use tracing::Instrument;

use crate::{
    contracts::{metrics as names, subjects},
    error::Chain,
    store::StoreError,
    telemetry,
};

/// The failure behind a handler's reason, kept as it is.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a message could not be handled. The consumer loop asks
/// [`HandleError::is_transient`]: retry in place, or dead-letter.
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    /// A dependency is away (Redis down, NATS reconnecting). Retried in place
    /// with backoff for as long as it takes; never dead-lettered.
    #[error("{reason}")]
    Transient {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The message itself can never succeed (undecodable, unknown type,
    /// invalid): dead-lettered at once, as handling it again reads the same bytes.
    #[error("{reason}")]
    Permanent {
        reason: String,
        #[source]
        cause: Option<Cause>,
    },
    /// The order store failed: retried in place for as long as it takes when
    /// transient, otherwise [`DETERMINISTIC_ATTEMPTS`] times, then dead-lettered.
    #[error("order store")]
    Store(#[source] StoreError),
    /// Publishing failed: retried like [`HandleError::Store`].
    #[error("message broker")]
    Messaging(#[from] MessagingError),
}

impl From<StoreError> for HandleError {
    fn from(err: StoreError) -> Self {
        match err {
            // The command itself is wrong (an unknown or repeated product):
            // handling it again reads the same bytes, so no retries.
            StoreError::InvalidCommand(_) => {
                HandleError::permanent("the store refused the command").caused_by(err)
            }
            err => HandleError::Store(err),
        }
    }
}

impl HandleError {
    /// A failure that can pass, in the handler's words.
    pub fn transient(reason: impl Into<String>) -> Self {
        HandleError::Transient {
            reason: reason.into(),
            cause: None,
        }
    }

    /// A message that can never succeed, in the handler's words.
    pub fn permanent(reason: impl Into<String>) -> Self {
        HandleError::Permanent {
            reason: reason.into(),
            cause: None,
        }
    }

    /// The same error, caused by `err` (kept as its source).
    pub fn caused_by(self, err: impl Into<Cause>) -> Self {
        match self {
            HandleError::Transient { reason, .. } => HandleError::Transient {
                reason,
                cause: Some(err.into()),
            },
            HandleError::Permanent { reason, .. } => HandleError::Permanent {
                reason,
                cause: Some(err.into()),
            },
            other => other,
        }
    }

    /// Whether handling the message again later can succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            HandleError::Transient { .. } => true,
            HandleError::Permanent { .. } => false,
            HandleError::Store(err) => err.is_transient(),
            HandleError::Messaging(err) => err.is_transient(),
        }
    }

    /// How many times the message is handled before it is dead-lettered for
    /// this error, when the error is not transient: once for a message that
    /// is itself wrong; a few times for a dependency's deterministic error
    /// (a script error, `WRONGTYPE`, an unexpected reply), which a deployment
    /// in progress or a repaired key may still clear.
    fn attempts(&self) -> u32 {
        match self {
            HandleError::Permanent { .. } => 1,
            _ => DETERMINISTIC_ATTEMPTS,
        }
    }

    /// What the dead-letter reason header says: the failure with its causes
    /// (the handler's own words first, when it gave some).
    fn reason(&self) -> String {
        Chain(self).to_string()
    }
}

/// Handles one message. Must be idempotent: any message may arrive again.
#[async_trait]
pub trait Handler: Send + Sync + 'static {
    async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError>;
}

/// How the loop behaves around the handler.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Service name for metrics, logs and dead-letter headers.
    pub service: &'static str,
    /// How long in-flight messages may take to finish after shutdown starts.
    pub shutdown_grace: Duration,
}

const RETRY_MIN: Duration = Duration::from_millis(100);
/// Handlings in place, with backoff, before a deterministic error of a
/// dependency dead-letters the message. Transient errors have no bound: they
/// never use up a delivery.
pub const DETERMINISTIC_ATTEMPTS: u32 = 3;
const RETRY_MAX: Duration = Duration::from_secs(5);
/// Delay before a message given back at shutdown is offered to another replica.
const HANDBACK_DELAY: Duration = Duration::from_millis(200);
/// How long a stopping loop waits for a pull already under way.
const LAST_PULL_WAIT: Duration = Duration::from_millis(50);
/// How long a stopped loop waits for its last acks to be written.
const LAST_FLUSH_WAIT: Duration = Duration::from_secs(1);
/// `max_deliver` for the broker: redeliver without bound.
const UNBOUNDED: i64 = -1;

/// Runs until `shutdown` fires, then lets in-flight messages finish within the
/// grace period. Messages still running after that are handed back (nak) so
/// another replica takes them at once instead of after the ack timeout.
pub async fn run_consumer(
    broker: Arc<dyn Broker>,
    spec: ConsumerSpec,
    handler: Arc<dyn Handler>,
    options: ConsumerOptions,
    shutdown: CancellationToken,
) {
    // Series exist from the start, so `increase()` also sees the first event.
    metrics::counter!(names::DEAD_LETTERS, "service" => options.service).increment(0);
    metrics::counter!(names::REDELIVERIES, "service" => options.service).increment(0);
    for outcome in [Settled::Success, Settled::DeadLettered, Settled::HandedBack] {
        metrics::counter!(names::MESSAGES_PROCESSED, "service" => options.service, "outcome" => outcome.as_str())
            .increment(0);
    }
    // The broker redelivers without bound; this loop enforces `max_deliver`
    // itself (see `Processing::process_in_span`), so dead-lettering never
    // waits on a broker's give-up advisory that nobody may hear.
    let bound = ConsumerSpec {
        max_deliver: UNBOUNDED,
        ..spec.clone()
    };
    // Cancelled when the grace period is over: stops in-place retries.
    let abandon = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let processing = Arc::new(Processing {
        broker: Arc::clone(&broker),
        handler,
        service: options.service,
        ack_wait: spec.ack_wait,
        max_deliver: spec.max_deliver,
        abandon: abandon.clone(),
        metrics: MessageMetrics::default(),
    });
    // Kept across bindings: a re-bind adds no room while earlier deliveries
    // are still being worked on.
    let slots = Slots::new(spec.max_in_flight);
    'subscribe: while !shutdown.is_cancelled() {
        let bind = format!("bind consumer {}", spec.durable);
        let Some(mut deliveries) = crate::shutdown::retry_until_ok(&bind, &shutdown, || {
            broker.subscribe(&bound, slots.clone(), shutdown.clone())
        })
        .await
        else {
            break;
        };
        tracing::info!(consumer = %spec.durable, stream = spec.stream, "consuming");
        loop {
            while let Some(joined) = tasks.try_join_next() {
                report_task_end(&spec.durable, joined);
            }
            // The broker fetches only what free slots can take, and each
            // delivery holds its slot until its task ends.
            let next = tokio::select! {
                () = shutdown.cancelled() => {
                    // The broker fetches nothing more now, but messages may
                    // be on their way: each is worked on within the grace
                    // rather than left to come back, which would use up
                    // one of its deliveries.
                    while let Ok(Some(Ok(delivery))) =
                        tokio::time::timeout(LAST_PULL_WAIT, deliveries.next()).await
                    {
                        tasks.spawn(processing.clone().run(delivery));
                    }
                    break 'subscribe;
                }
                next = deliveries.next() => next,
            };
            match next {
                Some(Ok(delivery)) => {
                    tasks.spawn(processing.clone().run(delivery));
                }
                Some(Err(err)) => {
                    tracing::warn!(consumer = %spec.durable, error = %Chain(&err), "consumer stream error; re-binding");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'subscribe;
                }
                None => {
                    tracing::warn!(consumer = %spec.durable, "consumer stream ended; re-binding");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'subscribe;
                }
            }
        }
    }
    let in_flight = tasks.len();
    if in_flight > 0 {
        tracing::info!(consumer = %spec.durable, in_flight, "draining in-flight messages");
    }
    let drained = tokio::time::timeout(options.shutdown_grace, async {
        while let Some(joined) = tasks.join_next().await {
            report_task_end(&spec.durable, joined);
        }
    })
    .await;
    if drained.is_err() {
        // Stop retrying; each task hands its message back, then finishes.
        abandon.cancel();
        while let Some(joined) = tasks.join_next().await {
            report_task_end(&spec.durable, joined);
        }
    }
    // Hand-backs (naks) and terms are sent without waiting for the server
    // (acks are confirmed): make sure the last ones left.
    let flushed = tokio::time::timeout(LAST_FLUSH_WAIT, broker.flush())
        .await
        .unwrap_or_else(|_| {
            Err(MessagingError::TimedOut {
                operation: "flush".to_owned(),
                after: LAST_FLUSH_WAIT,
            })
        });
    if let Err(err) = flushed {
        tracing::warn!(consumer = %spec.durable, error = %Chain(&err), "last naks and terms not flushed; their messages come back after the ack deadline and are deduplicated");
    }
    tracing::info!(consumer = %spec.durable, "consumer stopped");
}

/// Logs a message task that did not end normally. A handler's panic is caught
/// (and its message handed back) in [`Processing::handle_with_retry`]; this
/// catches a panic anywhere else in the task, so none goes unlogged.
fn report_task_end(consumer: &str, joined: Result<(), JoinError>) {
    match joined {
        Ok(()) => {}
        Err(err) if err.is_panic() => {
            let panic = err.into_panic();
            tracing::error!(
                consumer,
                panic = crate::shutdown::panic_message(&*panic),
                "message task panicked"
            );
        }
        Err(err) => tracing::error!(consumer, error = %err, "message task failed"),
    }
}

struct Processing {
    broker: Arc<dyn Broker>,
    handler: Arc<dyn Handler>,
    service: &'static str,
    ack_wait: Duration,
    /// Deliveries that run the handler; a later one is dead-lettered unrun.
    max_deliver: i64,
    abandon: CancellationToken,
    metrics: MessageMetrics,
}

/// The per-message series, each registered on first use and kept: counting
/// a message then neither builds its label set nor looks it up.
#[derive(Default)]
struct MessageMetrics {
    processed: [OnceLock<metrics::Counter>; SETTLED],
    requests: [[OnceLock<metrics::Counter>; SETTLED]; OPERATIONS],
    durations: [OnceLock<metrics::Histogram>; OPERATIONS],
}

impl MessageMetrics {
    fn record(&self, service: &'static str, subject: &str, settled: Settled, took: Duration) {
        let operation = subject_operation(subject);
        let outcome = settled.as_str();
        let index = settled as usize;
        self.processed[index]
            .get_or_init(|| metrics::counter!(names::MESSAGES_PROCESSED, "service" => service, "outcome" => outcome))
            .increment(1);
        self.requests[operation][index]
            .get_or_init(|| metrics::counter!(names::REQUESTS_TOTAL, "service" => service, "kind" => "message", "operation" => operation_label(operation), "outcome" => outcome))
            .increment(1);
        self.durations[operation]
            .get_or_init(|| metrics::histogram!(names::REQUEST_DURATION, "service" => service, "kind" => "message", "operation" => operation_label(operation)))
            .record(took.as_secs_f64());
    }
}

/// How a message was settled, for metrics.
#[derive(Debug, Clone, Copy)]
enum Settled {
    Success,
    DeadLettered,
    HandedBack,
}

impl Settled {
    fn as_str(self) -> &'static str {
        match self {
            Settled::Success => "success",
            Settled::DeadLettered => "dead_lettered",
            Settled::HandedBack => "handed_back",
        }
    }
}

impl Processing {
    /// Works on `delivery` until it is settled; its slot is freed with it.
    async fn run(self: Arc<Self>, delivery: Delivery) {
        self.process(delivery).await;
    }

    async fn process(&self, delivery: Delivery) {
        let span = tracing::info_span!(
            "process",
            otel.name = %format!("{} process", delivery.subject),
            otel.kind = "consumer",
            messaging.system = "nats",
            messaging.destination.name = %delivery.subject,
            messaging.message.id = %delivery.id,
            messaging.delivery_count = delivery.delivered,
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        telemetry::continue_from_message(&span, &delivery.headers);
        telemetry::record_ids(&span);
        self.process_in_span(delivery).instrument(span).await;
    }

    async fn process_in_span(&self, delivery: Delivery) {
        let started = Instant::now();
        if delivery.delivered > 1 {
            metrics::counter!(names::REDELIVERIES, "service" => self.service).increment(1);
        }
        let settled = if self.max_deliver > 0 && delivery.delivered > self.max_deliver {
            // Every allowed delivery ended unsettled (the replica crashed or
            // lost NATS while handling it): give up here, not in the broker.
            let deliveries = delivery.delivered - 1;
            self.dead_letter(&delivery, &super::exhausted_reason(deliveries), deliveries)
                .await
        } else {
            tokio::select! {
                settled = self.handle_with_retry(&delivery) => settled,
                () = self.keep_alive(&delivery) => Settled::HandedBack,
            }
        };
        self.metrics
            .record(self.service, &delivery.subject, settled, started.elapsed());
    }

    /// Extends the ack deadline while the handler works. Never returns.
    async fn keep_alive(&self, delivery: &Delivery) {
        let period = (self.ack_wait / 3).max(Duration::from_millis(500));
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            ticker.tick().await;
            if let Err(err) = delivery.acker.in_progress().await {
                tracing::debug!(message = %delivery.id, error = %Chain(&err), "in-progress ack failed");
            }
        }
    }

    async fn handle_with_retry(&self, delivery: &Delivery) -> Settled {
        let mut backoff = RETRY_MIN;
        let mut deterministic = 0;
        loop {
            let handled = AssertUnwindSafe(self.handler.handle(delivery))
                .catch_unwind()
                .await;
            let outcome = match handled {
                Ok(outcome) => outcome,
                Err(panic) => {
                    // A bug, not the message's fault as far as we know: hand
                    // it back, until its last delivery, which dead-letters it.
                    let panic = crate::shutdown::panic_message(&*panic);
                    let last = self.max_deliver > 0 && delivery.delivered >= self.max_deliver;
                    tracing::error!(
                        message = %delivery.id,
                        subject = %delivery.subject,
                        panic,
                        then = if last { "dead-lettering it (its last delivery)" } else { "handing it back" },
                        "handler panicked"
                    );
                    if last {
                        let reason = format!(
                            "{}; last: panic in the handler: {panic}",
                            super::exhausted_reason(delivery.delivered)
                        );
                        return self
                            .dead_letter(delivery, &reason, delivery.delivered)
                            .await;
                    }
                    return self.hand_back(delivery).await;
                }
            };
            match outcome {
                Ok(()) => {
                    // A crash between the effect and its acknowledgement.
                    fail::fail_point!("catga::before-ack");
                    // A lost ack only means a redelivery, which the handler's
                    // idempotency absorbs.
                    if let Err(err) = delivery.acker.ack().await {
                        tracing::warn!(message = %delivery.id, error = %Chain(&err), "ack failed; the message will be redelivered and deduplicated");
                    }
                    return Settled::Success;
                }
                Err(err) if !err.is_transient() => {
                    deterministic += 1;
                    if deterministic >= err.attempts() {
                        return self
                            .dead_letter(delivery, &err.reason(), delivery.delivered)
                            .await;
                    }
                    tracing::warn!(message = %delivery.id, subject = %delivery.subject, error = %Chain(&err), attempt = deterministic, retry_in = ?backoff, "deterministic failure; trying again before dead-lettering");
                    tokio::select! {
                        () = self.abandon.cancelled() => return self.hand_back(delivery).await,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
                Err(err) => {
                    tracing::warn!(message = %delivery.id, subject = %delivery.subject, error = %Chain(&err), retry_in = ?backoff, "transient failure; retrying");
                    tokio::select! {
                        () = self.abandon.cancelled() => return self.hand_back(delivery).await,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn hand_back(&self, delivery: &Delivery) -> Settled {
        if let Err(err) = delivery.acker.nak(HANDBACK_DELAY).await {
            tracing::warn!(message = %delivery.id, error = %Chain(&err), "hand-back failed; redelivered after the ack timeout");
        }
        Settled::HandedBack
    }

    /// Copies the message with its reason to the dead-letter stream, then
    /// stops its redelivery. If the copy cannot be stored, the message is
    /// handed back instead: it is never dropped.
    /// `deliveries` is how many deliveries ran the handler.
    async fn dead_letter(&self, delivery: &Delivery, reason: &str, deliveries: i64) -> Settled {
        let message = super::dead_letter_message(
            &delivery.subject,
            &delivery.id,
            &delivery.headers,
            delivery.payload.clone(),
            reason,
            deliveries,
            self.service,
        );
        match self.broker.publish(message).await {
            Ok(()) => {
                tracing::error!(message = %delivery.id, subject = %delivery.subject, %reason, "dead-lettered");
                metrics::counter!(names::DEAD_LETTERS, "service" => self.service).increment(1);
                if let Err(err) = delivery.acker.term().await {
                    tracing::warn!(message = %delivery.id, error = %Chain(&err), "term failed; the copy in the dead-letter stream is deduplicated");
                }
                Settled::DeadLettered
            }
            Err(err) => {
                tracing::warn!(message = %delivery.id, error = %Chain(&err), "cannot dead-letter yet; handing back");
                self.hand_back(delivery).await
            }
        }
    }
}

/// The message kinds with a label of their own: the subject's last token.
const KNOWN_SUBJECTS: [&str; 5] = [
    subjects::PLACE_ORDER,
    subjects::CANCEL_ORDER,
    subjects::ORDER_CONFIRMED,
    subjects::ORDER_REJECTED,
    subjects::ORDER_CANCELLED,
];
/// The known kinds, then every other subject.
const OPERATIONS: usize = KNOWN_SUBJECTS.len() + 1;
/// How many ways a message is settled ([`Settled`]).
const SETTLED: usize = 3;

/// The message kind of `subject`, as an index into [`KNOWN_SUBJECTS`] (its
/// length for any other subject), so arbitrary subjects cannot grow the
/// label set.
fn subject_operation(subject: &str) -> usize {
    KNOWN_SUBJECTS
        .iter()
        .position(|known| *known == subject)
        .unwrap_or(KNOWN_SUBJECTS.len())
}

/// The label of a message kind: the known subject's last token, else `other`.
fn operation_label(operation: usize) -> &'static str {
    KNOWN_SUBJECTS
        .get(operation)
        .and_then(|known| known.rsplit('.').next())
        .unwrap_or("other")
}

#[cfg(test)]
mod tests {
    use std::{
        collections::VecDeque,
        sync::{
            Mutex,
            atomic::{AtomicUsize, Ordering},
        },
    };

    use bytes::Bytes;
    use futures::stream::BoxStream;

    use super::*;
    use crate::{
        contracts::{headers, streams},
        messaging::{MemoryBroker, OutgoingMessage, Publisher},
    };

    /// Fails with each of `failures` in turn, then succeeds; records the
    /// delivery count of each call.
    struct Scripted {
        failures: Mutex<VecDeque<HandleError>>,
        deliveries: Mutex<Vec<i64>>,
    }

    impl Scripted {
        fn new(failures: Vec<HandleError>) -> Arc<Self> {
            Arc::new(Scripted {
                failures: Mutex::new(failures.into()),
                deliveries: Mutex::new(Vec::new()),
            })
        }

        fn deliveries(&self) -> Vec<i64> {
            self.deliveries.lock().expect("lock").clone()
        }
    }

    #[async_trait]
    impl Handler for Scripted {
        async fn handle(&self, delivery: &Delivery) -> Result<(), HandleError> {
            self.deliveries
                .lock()
                .expect("lock")
                .push(delivery.delivered);
            match self.failures.lock().expect("lock").pop_front() {
                Some(err) => Err(err),
                None => Ok(()),
            }
        }
    }

    fn spec(durable: &str, filter: &'static str) -> ConsumerSpec {
        ConsumerSpec {
            stream: streams::ORDER_COMMANDS,
            durable: durable.to_owned(),
            filter,
            max_deliver: 3,
            ack_wait: Duration::from_secs(30),
            max_in_flight: 4,
        }
    }

    /// The loop on a memory broker with `handler`, the dead-letter stream
    /// read, and one command published.
    struct Running {
        broker: MemoryBroker,
        commands: ConsumerSpec,
        dead: BoxStream<'static, Result<Delivery, MessagingError>>,
        shutdown: CancellationToken,
        consumer: tokio::task::JoinHandle<()>,
    }

    async fn run_on_one_command(handler: Arc<dyn Handler>) -> Running {
        let broker = MemoryBroker::new();
        let commands = spec("order-processing", subjects::PLACE_ORDER);
        let dead = broker
            .subscribe(
                &spec("dead", streams::DEAD_LETTERS_SUBJECTS),
                Slots::new(4),
                CancellationToken::new(),
            )
            .await
            .expect("bind");
        let shutdown = CancellationToken::new();
        let consumer = tokio::spawn(run_consumer(
            Arc::new(broker.clone()),
            commands.clone(),
            handler,
            ConsumerOptions {
                service: "test",
                shutdown_grace: Duration::from_secs(1),
            },
            shutdown.clone(),
        ));
        broker
            .publish(OutgoingMessage::new(
                subjects::PLACE_ORDER,
                "one",
                Bytes::from("{}"),
            ))
            .await
            .expect("stored");
        Running {
            broker,
            commands,
            dead,
            shutdown,
            consumer,
        }
    }

    impl Running {
        /// The dead letter, if one comes within a minute.
        async fn dead_letter(&mut self) -> Option<Delivery> {
            tokio::time::timeout(Duration::from_secs(60), self.dead.next())
                .await
                .ok()
                .flatten()
                .map(|letter| letter.expect("a dead letter"))
        }

        /// Checks the command was settled, then stops the loop.
        async fn stop(self) {
            assert_eq!(
                self.broker.consumer_lag(&self.commands).await.expect("lag"),
                Some((0, 0)),
                "the message is settled either way"
            );
            self.shutdown.cancel();
            self.consumer.await.expect("the loop stops");
        }
    }

    /// Runs the loop over one message with a handler failing with
    /// `failures`; returns how often it was called and the dead letter, if any.
    async fn consume_one(failures: Vec<HandleError>) -> (usize, Option<Delivery>) {
        let handler = Scripted::new(failures);
        let mut running = run_on_one_command(handler.clone()).await;
        let letter = running.dead_letter().await;
        running.stop().await;
        (handler.deliveries().len(), letter)
    }

    fn redis_down() -> StoreError {
        StoreError::Redis(redis::RedisError::from(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "refused",
        )))
    }

    struct Panics {
        calls: AtomicUsize,
    }

    #[async_trait]
    impl Handler for Panics {
        async fn handle(&self, _: &Delivery) -> Result<(), HandleError> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            panic!("handler bug");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_handler_is_logged_and_its_message_handed_back_until_dead_lettered() {
        // A current-thread runtime: every task logs here.
        let (logs, _logging) = crate::telemetry::Lines::capture();
        let handler = Arc::new(Panics {
            calls: AtomicUsize::new(0),
        });
        // No exhausted-message forwarder runs: the loop dead-letters the
        // message itself on its last delivery.
        let mut running = run_on_one_command(handler.clone()).await;
        let letter = running
            .dead_letter()
            .await
            .expect("dead-lettered once max_deliver is reached");
        assert_eq!(
            handler.calls.load(Ordering::SeqCst),
            3,
            "handed back after each panic, delivered max_deliver times"
        );
        let reason = letter.header(headers::DEAD_LETTER_REASON).unwrap_or("");
        assert!(
            reason.starts_with(super::super::exhausted_reason(3).as_str()),
            "{reason}"
        );
        assert!(reason.contains("handler bug"), "{reason}");
        assert_eq!(letter.header(headers::DEAD_LETTER_DELIVERIES), Some("3"));
        running.stop().await;
        let logged = logs.text();
        assert_eq!(logged.matches("handler panicked").count(), 3, "{logged}");
        assert!(logged.contains("handler bug"), "{logged}");
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_are_retried_in_place_and_never_dead_lettered() {
        let (calls, letter) = consume_one(vec![
            HandleError::Store(redis_down()),
            HandleError::Messaging(MessagingError::TimedOut {
                operation: "publish".into(),
                after: Duration::from_secs(5),
            }),
            HandleError::transient("webhook unreachable"),
        ])
        .await;
        assert_eq!(calls, 4, "three failures, then success");
        assert!(letter.is_none(), "{letter:?}");
    }

    fn corrupt() -> HandleError {
        HandleError::Store(StoreError::Corrupt("marker".into()))
    }

    #[tokio::test(start_paused = true)]
    async fn deterministic_failures_are_tried_a_few_times_then_dead_lettered_with_their_causes() {
        // Issue 12 changed the rule: a dependency's deterministic error is
        // tried DETERMINISTIC_ATTEMPTS times in place (it was dead-lettered
        // on the first), and never more.
        let (calls, letter) = consume_one(vec![corrupt(), corrupt(), corrupt(), corrupt()]).await;
        assert_eq!(
            calls, DETERMINISTIC_ATTEMPTS as usize,
            "tried a few times, not forever"
        );
        let letter = letter.expect("dead-lettered");
        assert_eq!(
            letter.subject,
            subjects::dead_letter_for(subjects::PLACE_ORDER)
        );
        assert_eq!(
            letter.header(headers::DEAD_LETTER_REASON),
            Some("order store: the store holds data that cannot be read: marker")
        );

        // One that clears within the attempts is not dead-lettered.
        let (calls, letter) = consume_one(vec![corrupt(), corrupt()]).await;
        assert_eq!(calls, 3, "two failures, then success");
        assert!(letter.is_none(), "{letter:?}");

        // A message that is itself wrong is not handled again.
        let (calls, letter) = consume_one(vec![HandleError::permanent("undecodable")]).await;
        assert_eq!(calls, 1, "not retried");
        assert_eq!(
            letter
                .expect("dead-lettered")
                .header(headers::DEAD_LETTER_REASON),
            Some("undecodable"),
            "the handler's own words, as before"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn transient_failures_never_use_up_a_delivery_however_long_they_last() {
        // Twice the retry ceiling per failure, for longer than many ack
        // deadlines: still the first delivery, then success.
        let failures: Vec<HandleError> =
            (0..40).map(|_| HandleError::Store(redis_down())).collect();
        let handler = Scripted::new(failures);
        let running = run_on_one_command(handler.clone()).await;
        tokio::time::sleep(Duration::from_secs(600)).await;
        let deliveries = handler.deliveries();
        assert_eq!(deliveries.len(), 41);
        assert!(deliveries.iter().all(|d| *d == 1), "{deliveries:?}");
        running.stop().await;
    }
}
