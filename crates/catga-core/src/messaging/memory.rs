//! [`Broker`] in process memory for the embedded mode, with JetStream's
//! delivery rules: each durable consumer is a queue shared by its subscribers;
//! a delivery is taken only when a subscriber polls with a free slot (nothing
//! waits in a buffer); a delivery not acknowledged within `ack_wait` (extended by `in_progress`)
//! comes back, a nak brings it back after its delay, `term` drops it; after
//! `max_deliver` deliveries it is given up on and handed to
//! [`Broker::dead_letter_exhausted`]; message ids are deduplicated for
//! [`DUPLICATE_WINDOW`]. Every timer is `tokio::time`, so tests can run it in
//! paused time.
//!
//! Nothing survives the process: this is for trying the system out, not for
//! production.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::{sync::Notify, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::shutdown::BackgroundTasks;

use super::{
    Acker, Broker, ConsumerSpec, DUPLICATE_WINDOW, Delivery, MessagingError, OutgoingMessage,
    Publisher, Slots, subject_matches,
};

/// Messages published before any consumer bound their subject, and messages
/// given up on before a dead-letter forwarder runs, are kept up to this many.
const BACKLOG_LIMIT: usize = 10_000;

#[derive(Clone)]
struct Stored {
    sequence: u64,
    message: OutgoingMessage,
}

/// A delivered message waiting to be settled.
struct Unsettled {
    stored: Stored,
    /// Which delivery this is (1 for the first).
    delivered: i64,
    deadline: Instant,
}

/// A message given up on after `deliveries` deliveries.
struct Exhausted {
    stored: Stored,
    deliveries: i64,
}

/// A durable consumer.
struct Consumer {
    filter: String,
    max_deliver: i64,
    ack_wait: Duration,
    /// Ready to deliver, with the delivery number each will have.
    ready: VecDeque<(Stored, i64)>,
    unsettled: HashMap<u64, Unsettled>,
    /// Nak'd messages waiting out their delay.
    delayed: u64,
    /// Wakes a subscriber waiting for `ready`.
    wake: Arc<Notify>,
    exhausted: VecDeque<Exhausted>,
    /// Wakes the dead-letter forwarder waiting for `exhausted`.
    wake_forwarder: Arc<Notify>,
}

impl Consumer {
    fn new(spec: &ConsumerSpec) -> Self {
        Self {
            filter: spec.filter.to_owned(),
            max_deliver: spec.max_deliver,
            ack_wait: spec.ack_wait,
            ready: VecDeque::new(),
            unsettled: HashMap::new(),
            delayed: 0,
            wake: Arc::new(Notify::new()),
            exhausted: VecDeque::new(),
            wake_forwarder: Arc::new(Notify::new()),
        }
    }

    fn push_ready(&mut self, stored: Stored, delivered: i64) {
        self.ready.push_back((stored, delivered));
        self.wake.notify_one();
    }

    /// A delivery that was not acknowledged: delivered again, or given up on
    /// once it has been delivered `max_deliver` times (`max_deliver` ≤ 0 means
    /// no bound, as in JetStream).
    fn redeliver_or_give_up(&mut self, stored: Stored, delivered: i64) {
        if self.max_deliver > 0 && delivered >= self.max_deliver {
            tracing::warn!(
                sequence = stored.sequence,
                subject = %stored.message.subject,
                deliveries = delivered,
                "message given up on after max_deliver deliveries"
            );
            if self.exhausted.len() >= BACKLOG_LIMIT {
                self.exhausted.pop_front();
            }
            self.exhausted.push_back(Exhausted {
                stored,
                deliveries: delivered,
            });
            self.wake_forwarder.notify_one();
        } else {
            self.push_ready(stored, delivered + 1);
        }
    }
}

#[derive(Default)]
struct State {
    sequence: u64,
    /// Message ids inside the deduplication window, and the same ids in
    /// arrival order so expiry pops from the front instead of scanning.
    seen: HashSet<String>,
    seen_order: VecDeque<(Instant, String)>,
    consumers: HashMap<String, Consumer>,
    backlog: VecDeque<Stored>,
}

/// The in-memory transport. Cloning shares it.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
    /// The ack-deadline and nak-delay timers: tracked, so a panic in one is
    /// logged rather than lost with a detached task.
    timers: BackgroundTasks,
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        crate::lock(&self.state)
    }

    /// Runs `change` on the consumer `durable`, if it exists.
    fn with_consumer<T>(
        &self,
        durable: &str,
        change: impl FnOnce(&mut Consumer) -> T,
    ) -> Option<T> {
        self.lock().consumers.get_mut(durable).map(change)
    }

    /// The consumer `durable`, created from `spec` when absent. A subscriber
    /// (`reconcile`) brings an existing one's ack deadline and delivery bound
    /// to `spec`, as JetStream's bind does; the dead-letter forwarder does not.
    fn bind(state: &mut State, spec: &ConsumerSpec, reconcile: bool) {
        if let Some(consumer) = state.consumers.get_mut(&spec.durable) {
            if reconcile {
                consumer.max_deliver = spec.max_deliver;
                consumer.ack_wait = spec.ack_wait;
            }
            return;
        }
        let mut consumer = Consumer::new(spec);
        let mut kept = VecDeque::with_capacity(state.backlog.len());
        for stored in state.backlog.drain(..) {
            if subject_matches(spec.filter, &stored.message.subject) {
                consumer.push_ready(stored, 1);
            } else {
                kept.push_back(stored);
            }
        }
        state.backlog = kept;
        state.consumers.insert(spec.durable.clone(), consumer);
    }

    /// Takes the next ready message of `durable`, recording it as unsettled
    /// with its ack deadline; otherwise the notifier to wait on.
    fn take_next(&self, durable: &str) -> Result<Delivery, Arc<Notify>> {
        let mut state = self.lock();
        let Some(consumer) = state.consumers.get_mut(durable) else {
            return Err(Arc::new(Notify::new()));
        };
        let Some((stored, delivered)) = consumer.ready.pop_front() else {
            return Err(Arc::clone(&consumer.wake));
        };
        let deadline = Instant::now() + consumer.ack_wait;
        consumer.unsettled.insert(
            stored.sequence,
            Unsettled {
                stored: stored.clone(),
                delivered,
                deadline,
            },
        );
        self.timers.spawn(
            "memory broker ack deadline",
            self.clone()
                .expire_at(durable.to_owned(), stored.sequence, delivered, deadline),
        );
        Ok(Delivery {
            id: format!("memory:{}", stored.sequence),
            subject: stored.message.subject.clone(),
            headers: stored.message.headers.clone(),
            payload: stored.message.payload.clone(),
            delivered,
            acker: Box::new(MemoryAcker {
                broker: self.clone(),
                durable: durable.to_owned(),
                sequence: stored.sequence,
                delivered,
            }),
            slot: None,
        })
    }

    /// Redelivers (or gives up on) delivery `delivered` of `sequence` if it is
    /// still unsettled once its deadline, however often extended, has passed.
    async fn expire_at(
        self,
        durable: String,
        sequence: u64,
        delivered: i64,
        mut deadline: Instant,
    ) {
        loop {
            tokio::time::sleep_until(deadline).await;
            let extended = self.with_consumer(&durable, |consumer| {
                let current = consumer
                    .unsettled
                    .get(&sequence)
                    .filter(|unsettled| unsettled.delivered == delivered)?;
                if current.deadline > Instant::now() {
                    return Some(current.deadline);
                }
                let expired = consumer.unsettled.remove(&sequence)?;
                consumer.redeliver_or_give_up(expired.stored, delivered);
                None
            });
            match extended.flatten() {
                Some(later) => deadline = later,
                None => return,
            }
        }
    }

    /// Settles delivery `delivered` of `sequence`: `None` when it was already
    /// settled (or expired and delivered again).
    fn settle(&self, durable: &str, sequence: u64, delivered: i64) -> Option<Unsettled> {
        self.with_consumer(durable, |consumer| {
            match consumer.unsettled.get(&sequence) {
                Some(unsettled) if unsettled.delivered == delivered => {
                    consumer.unsettled.remove(&sequence)
                }
                _ => None,
            }
        })
        .flatten()
    }
}

#[async_trait]
impl Publisher for MemoryBroker {
    async fn send(&self, message: OutgoingMessage) -> Result<(), MessagingError> {
        let mut state = self.lock();
        let now = Instant::now();
        while let Some((at, _)) = state.seen_order.front() {
            if now.duration_since(*at) < DUPLICATE_WINDOW {
                break;
            }
            if let Some((_, id)) = state.seen_order.pop_front() {
                state.seen.remove(&id);
            }
        }
        if !state.seen.insert(message.msg_id.clone()) {
            return Ok(());
        }
        state.seen_order.push_back((now, message.msg_id.clone()));
        state.sequence += 1;
        let stored = Stored {
            sequence: state.sequence,
            message,
        };
        let mut delivered = false;
        for consumer in state.consumers.values_mut() {
            if subject_matches(&consumer.filter, &stored.message.subject) {
                consumer.push_ready(stored.clone(), 1);
                delivered = true;
            }
        }
        if !delivered {
            if state.backlog.len() >= BACKLOG_LIMIT {
                state.backlog.pop_front();
            }
            state.backlog.push_back(stored);
        }
        Ok(())
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn ensure_topology(&self) -> Result<(), MessagingError> {
        Ok(())
    }

    async fn subscribe(
        &self,
        spec: &ConsumerSpec,
        slots: Slots,
        stop: CancellationToken,
    ) -> Result<BoxStream<'static, Result<Delivery, MessagingError>>, MessagingError> {
        Self::bind(&mut self.lock(), spec, true);
        let deliveries = stream::unfold(
            (self.clone(), spec.durable.clone(), slots, stop),
            |(broker, durable, slots, stop)| async move {
                // A message is taken only into a free slot.
                let slot = tokio::select! {
                    () = stop.cancelled() => return None,
                    slot = slots.take() => slot,
                };
                loop {
                    match broker.take_next(&durable) {
                        Ok(mut delivery) => {
                            delivery.slot = Some(slot);
                            return Some((Ok(delivery), (broker, durable, slots, stop)));
                        }
                        // `notify_one` keeps a permit when nobody waits, so a
                        // message pushed between the check and this wait is
                        // not missed.
                        Err(wake) => tokio::select! {
                            () = stop.cancelled() => return None,
                            () = wake.notified() => {}
                        },
                    }
                }
            },
        );
        Ok(deliveries.boxed())
    }

    fn is_connected(&self) -> bool {
        true
    }

    async fn consumer_lag(
        &self,
        spec: &ConsumerSpec,
    ) -> Result<Option<(u64, u64)>, MessagingError> {
        let lag = self.with_consumer(&spec.durable, |consumer| {
            let pending = u64::try_from(consumer.ready.len()).unwrap_or(u64::MAX);
            let unsettled = u64::try_from(consumer.unsettled.len()).unwrap_or(u64::MAX);
            (pending.saturating_add(consumer.delayed), unsettled)
        });
        Ok(Some(lag.unwrap_or((0, 0))))
    }

    async fn dead_letter_exhausted(
        &self,
        spec: &ConsumerSpec,
        service: &'static str,
        shutdown: tokio_util::sync::CancellationToken,
    ) {
        let wake = {
            let mut state = self.lock();
            Self::bind(&mut state, spec, false);
            Arc::clone(&state.consumers[&spec.durable].wake_forwarder)
        };
        loop {
            let next = self.with_consumer(&spec.durable, |consumer| consumer.exhausted.pop_front());
            let Some(exhausted) = next.flatten() else {
                tokio::select! {
                    biased;
                    () = shutdown.cancelled() => return,
                    () = wake.notified() => continue,
                }
            };
            let message = super::dead_letter_message(
                &exhausted.stored.message.subject,
                &format!("memory:{}", exhausted.stored.sequence),
                &exhausted.stored.message.headers,
                exhausted.stored.message.payload.clone(),
                &super::exhausted_reason(exhausted.deliveries),
                exhausted.deliveries,
                service,
            );
            // In memory a publish cannot fail.
            if self.publish(message).await.is_ok() {
                metrics::counter!(crate::contracts::metrics::DEAD_LETTERS, "service" => service)
                    .increment(1);
            }
        }
    }
}

struct MemoryAcker {
    broker: MemoryBroker,
    durable: String,
    sequence: u64,
    delivered: i64,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), MessagingError> {
        self.broker
            .settle(&self.durable, self.sequence, self.delivered);
        Ok(())
    }

    async fn nak(&self, delay: Duration) -> Result<(), MessagingError> {
        let Some(unsettled) = self
            .broker
            .settle(&self.durable, self.sequence, self.delivered)
        else {
            return Ok(());
        };
        if delay.is_zero() {
            self.broker.with_consumer(&self.durable, |consumer| {
                consumer.redeliver_or_give_up(unsettled.stored, self.delivered);
            });
            return Ok(());
        }
        self.broker
            .with_consumer(&self.durable, |consumer| consumer.delayed += 1);
        let (broker, durable, delivered) =
            (self.broker.clone(), self.durable.clone(), self.delivered);
        self.broker
            .timers
            .spawn("memory broker nak delay", async move {
                tokio::time::sleep(delay).await;
                broker.with_consumer(&durable, |consumer| {
                    consumer.delayed = consumer.delayed.saturating_sub(1);
                    consumer.redeliver_or_give_up(unsettled.stored, delivered);
                });
            });
        Ok(())
    }

    async fn term(&self) -> Result<(), MessagingError> {
        self.broker
            .settle(&self.durable, self.sequence, self.delivered);
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), MessagingError> {
        self.broker.with_consumer(&self.durable, |consumer| {
            let ack_wait = consumer.ack_wait;
            if let Some(unsettled) = consumer
                .unsettled
                .get_mut(&self.sequence)
                .filter(|unsettled| unsettled.delivered == self.delivered)
            {
                unsettled.deadline = Instant::now() + ack_wait;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use futures::StreamExt;

    use super::*;

    #[tokio::test]
    async fn a_repeated_message_id_is_delivered_once() {
        let broker = MemoryBroker::new();
        for (id, body) in [("a", "1"), ("a", "1 again"), ("b", "2")] {
            broker
                .send(OutgoingMessage::new("x.y", id, Bytes::from(body)))
                .await
                .expect("stored");
        }
        let spec = ConsumerSpec {
            stream: "S",
            durable: "d".into(),
            filter: "x.>",
            max_deliver: 3,
            ack_wait: Duration::from_secs(1),
            max_in_flight: 1,
        };
        let mut deliveries = broker
            .subscribe(&spec, Slots::new(1), CancellationToken::new())
            .await
            .expect("bound");
        let mut bodies = Vec::new();
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(50), deliveries.next()).await
        {
            bodies.push(delivery.payload);
        }
        assert_eq!(bodies, vec![Bytes::from("1"), Bytes::from("2")]);
    }
}
