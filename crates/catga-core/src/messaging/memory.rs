//! [`Broker`] in process memory for the embedded mode: each durable consumer is
//! a queue shared by its subscribers, naks redeliver after their delay, and
//! message ids are deduplicated for [`DUPLICATE_WINDOW`].
//!
//! Nothing survives the process: this is for trying the system out, not for
//! production.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::{Mutex as AsyncMutex, mpsc};

use super::{
    Acker, Broker, ConsumerSpec, DUPLICATE_WINDOW, Delivery, MessagingError, OutgoingMessage,
    Publisher, subject_matches,
};

/// Messages published before any consumer bound their subject are kept (up to
/// this many) and handed to the first durable that matches.
const BACKLOG_LIMIT: usize = 10_000;

#[derive(Clone)]
struct Stored {
    sequence: u64,
    message: OutgoingMessage,
}

struct Queue {
    filter: String,
    max_deliver: i64,
    sender: mpsc::UnboundedSender<(Stored, i64)>,
    receiver: Arc<AsyncMutex<mpsc::UnboundedReceiver<(Stored, i64)>>>,
}

#[derive(Default)]
struct State {
    sequence: u64,
    /// Message ids inside the deduplication window, and the same ids in
    /// arrival order so expiry pops from the front instead of scanning.
    seen: HashSet<String>,
    seen_order: VecDeque<(Instant, String)>,
    queues: HashMap<String, Queue>,
    backlog: VecDeque<Stored>,
}

/// The in-memory transport. Cloning shares it.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
}

impl MemoryBroker {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
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
        for queue in state.queues.values() {
            if subject_matches(&queue.filter, &stored.message.subject) {
                // The receiver lives as long as the queue entry; a send cannot fail.
                let _ = queue.sender.send((stored.clone(), 1));
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
    ) -> Result<BoxStream<'static, Result<Delivery, MessagingError>>, MessagingError> {
        let (receiver, sender, max_deliver) = {
            let mut state = self.lock();
            if !state.queues.contains_key(&spec.durable) {
                let (sender, receiver) = mpsc::unbounded_channel();
                let State { backlog, .. } = &mut *state;
                let mut kept = VecDeque::with_capacity(backlog.len());
                for stored in backlog.drain(..) {
                    if subject_matches(spec.filter, &stored.message.subject) {
                        let _ = sender.send((stored, 1));
                    } else {
                        kept.push_back(stored);
                    }
                }
                *backlog = kept;
                state.queues.insert(
                    spec.durable.clone(),
                    Queue {
                        filter: spec.filter.to_owned(),
                        max_deliver: spec.max_deliver,
                        sender,
                        receiver: Arc::new(AsyncMutex::new(receiver)),
                    },
                );
            }
            let queue = &state.queues[&spec.durable];
            (
                Arc::clone(&queue.receiver),
                queue.sender.clone(),
                queue.max_deliver,
            )
        };
        let deliveries = stream::unfold(receiver, move |receiver| {
            let sender = sender.clone();
            async move {
                let next = receiver.lock().await.recv().await;
                next.map(|(stored, delivered)| {
                    let delivery = Delivery {
                        id: format!("memory:{}", stored.sequence),
                        subject: stored.message.subject.clone(),
                        headers: stored.message.headers.clone(),
                        payload: stored.message.payload.clone(),
                        delivered,
                        acker: Box::new(MemoryAcker {
                            stored,
                            delivered,
                            max_deliver,
                            sender,
                        }),
                    };
                    (Ok(delivery), receiver)
                })
            }
        });
        Ok(deliveries.boxed())
    }

    fn is_connected(&self) -> bool {
        true
    }

    async fn consumer_lag(&self, _: &ConsumerSpec) -> Result<Option<(u64, u64)>, MessagingError> {
        Ok(None)
    }

    /// In memory a message is never given up on by the transport: nothing to do.
    async fn dead_letter_exhausted(
        &self,
        _: &ConsumerSpec,
        _: &'static str,
        _: tokio_util::sync::CancellationToken,
    ) {
    }
}

struct MemoryAcker {
    stored: Stored,
    delivered: i64,
    max_deliver: i64,
    sender: mpsc::UnboundedSender<(Stored, i64)>,
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(&self) -> Result<(), MessagingError> {
        Ok(())
    }

    async fn nak(&self, delay: Duration) -> Result<(), MessagingError> {
        if self.delivered >= self.max_deliver {
            return Ok(());
        }
        let sender = self.sender.clone();
        let again = (self.stored.clone(), self.delivered + 1);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = sender.send(again);
        });
        Ok(())
    }

    async fn term(&self) -> Result<(), MessagingError> {
        Ok(())
    }

    async fn in_progress(&self) -> Result<(), MessagingError> {
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
        let mut deliveries = broker.subscribe(&spec).await.expect("bound");
        let mut bodies = Vec::new();
        while let Ok(Some(Ok(delivery))) =
            tokio::time::timeout(Duration::from_millis(50), deliveries.next()).await
        {
            bodies.push(delivery.payload);
        }
        assert_eq!(bodies, vec![Bytes::from("1"), Bytes::from("2")]);
    }
}
