//! The broker contract: the delivery rules `JetStreamBroker` gets from
//! JetStream and `MemoryBroker` implements itself.

use std::{
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use catga_core::{
    CancellationToken,
    contracts::{headers, streams, subjects},
    messaging::{
        Broker, ConsumerOptions, ConsumerSpec, Delivery, HandleError, Handler, MemoryBroker,
        OutgoingMessage, Slots, run_consumer,
    },
};
use catga_tests::Nats;
use futures::{StreamExt, stream::BoxStream};

#[tokio::test(start_paused = true)]
async fn memory_broker_keeps_the_contract() {
    let broker = MemoryBroker::new();
    broker_contract(&broker).await;
    consumer_loop_contract(Arc::new(broker)).await;
}

#[tokio::test]
async fn jetstream_broker_keeps_the_contract() {
    let nats = Nats::start().await;
    let broker = crate::jetstream_broker(&nats).await;
    broker_contract(&broker).await;
    consumer_loop_contract(Arc::new(broker)).await;
}

/// Runs every rule against `broker`, on subjects of its own.
pub async fn broker_contract(broker: &dyn Broker) {
    broker.ensure_topology().await.expect("streams");
    a_message_id_is_stored_once(broker).await;
    a_nak_redelivers(broker).await;
    an_unsettled_delivery_comes_back_after_the_ack_deadline(broker).await;
    in_progress_extends_the_ack_deadline(broker).await;
    term_stops_redelivery(broker).await;
    max_deliver_bounds_deliveries_and_exhausted_messages_are_dead_lettered(broker).await;
    a_consumer_gets_only_what_its_filter_matches(broker).await;
    lag_counts_what_is_not_yet_acknowledged(broker).await;
    a_subscriber_is_sent_only_what_it_has_room_for(broker).await;
}

/// What `run_consumer` adds on any broker: with no dead-letter forwarder
/// running anywhere (none was listening when the broker would have given
/// up), exhausted messages still reach the dead-letter stream.
pub async fn consumer_loop_contract(broker: Arc<dyn Broker>) {
    the_loop_dead_letters_exhausted_messages_without_a_forwarder(broker).await;
}

/// Short, so the JetStream run stays quick; the memory run is in paused time.
const ACK_WAIT: Duration = Duration::from_secs(1);
/// Long enough for anything that will arrive to have arrived.
const PATIENCE: Duration = Duration::from_secs(10);
const SERVICE: &str = "contract";

type Deliveries = BoxStream<'static, Result<Delivery, catga_core::messaging::MessagingError>>;

fn spec(name: &str, filter: &'static str, max_deliver: i64) -> ConsumerSpec {
    ConsumerSpec {
        stream: streams::ORDER_COMMANDS,
        durable: format!("contract-{name}"),
        filter,
        max_deliver,
        ack_wait: ACK_WAIT,
        // Room for more than one: a subscriber holding a delivery can still
        // be sent another (a redelivery, say) when the rules allow it.
        max_in_flight: 4,
    }
}

async fn bind(broker: &dyn Broker, spec: &ConsumerSpec) -> Deliveries {
    broker
        .subscribe(
            spec,
            Slots::new(spec.max_in_flight),
            CancellationToken::new(),
        )
        .await
        .expect("bind")
}

/// Acknowledges `delivery` and checks it does not come back.
async fn ack_for_good(delivery: Delivery, deliveries: &mut Deliveries) {
    delivery.acker.ack().await.expect("ack");
    drop(delivery);
    nothing_for(
        deliveries,
        ACK_WAIT * 3,
        "an acknowledged message came back",
    )
    .await;
}

async fn publish(broker: &dyn Broker, subject: &str, msg_id: &str, body: &'static str) {
    broker
        .publish(OutgoingMessage::new(subject, msg_id, Bytes::from(body)))
        .await
        .expect("stored");
}

async fn next(deliveries: &mut Deliveries) -> Delivery {
    tokio::time::timeout(PATIENCE, deliveries.next())
        .await
        .expect("a delivery in time")
        .expect("the stream goes on")
        .expect("a delivery, not an error")
}

/// Asserts nothing is delivered for `within`.
async fn nothing_for(deliveries: &mut Deliveries, within: Duration, why: &str) {
    if let Ok(Some(delivery)) = tokio::time::timeout(within, deliveries.next()).await {
        panic!("{why}: got {delivery:?}");
    }
}

async fn a_message_id_is_stored_once(broker: &dyn Broker) {
    const SUBJECT: &str = "catga.orders.commands.contract.dedup";
    publish(broker, SUBJECT, "dedup-1", "first").await;
    publish(broker, SUBJECT, "dedup-1", "first, sent again").await;
    publish(broker, SUBJECT, "dedup-2", "second").await;
    let mut deliveries = bind(broker, &spec("dedup", SUBJECT, 5)).await;
    for body in ["first", "second"] {
        let delivery = next(&mut deliveries).await;
        assert_eq!(
            (delivery.payload.as_ref(), delivery.delivered),
            (body.as_bytes(), 1)
        );
        delivery.acker.ack().await.expect("ack");
    }
    nothing_for(&mut deliveries, ACK_WAIT * 3, "stored twice or came back").await;
}

async fn a_nak_redelivers(broker: &dyn Broker) {
    const SUBJECT: &str = "catga.orders.commands.contract.nak";
    let mut deliveries = bind(broker, &spec("nak", SUBJECT, 5)).await;
    publish(broker, SUBJECT, "nak-1", "again").await;
    let first = next(&mut deliveries).await;
    assert_eq!(first.delivered, 1);
    first
        .acker
        .nak(Duration::from_millis(100))
        .await
        .expect("nak");
    let second = next(&mut deliveries).await;
    assert_eq!(
        (second.id.as_str(), second.delivered, &second.payload),
        (first.id.as_str(), 2, &first.payload),
        "the same stored message, delivered a second time"
    );
    ack_for_good(second, &mut deliveries).await;
}

async fn an_unsettled_delivery_comes_back_after_the_ack_deadline(broker: &dyn Broker) {
    const SUBJECT: &str = "catga.orders.commands.contract.deadline";
    let mut deliveries = bind(broker, &spec("deadline", SUBJECT, 5)).await;
    publish(broker, SUBJECT, "deadline-1", "slow").await;
    let first = next(&mut deliveries).await;
    let started = tokio::time::Instant::now();
    // Neither acknowledged nor extended: held, as by a handler that hangs.
    let second = next(&mut deliveries).await;
    assert!(
        started.elapsed() >= ACK_WAIT,
        "not before the deadline: {:?}",
        started.elapsed()
    );
    assert_eq!(
        (second.id.as_str(), second.delivered),
        (first.id.as_str(), 2)
    );
    second.acker.ack().await.expect("ack");
    drop(first);
}

async fn in_progress_extends_the_ack_deadline(broker: &dyn Broker) {
    const SUBJECT: &str = "catga.orders.commands.contract.progress";
    let mut deliveries = bind(broker, &spec("progress", SUBJECT, 5)).await;
    publish(broker, SUBJECT, "progress-1", "slow but alive").await;
    let delivery = next(&mut deliveries).await;
    let keep_alive = async {
        for _ in 0..6 {
            tokio::time::sleep(ACK_WAIT / 3).await;
            delivery.acker.in_progress().await.expect("in progress");
        }
    };
    tokio::select! {
        () = keep_alive => {}
        redelivered = deliveries.next() => {
            panic!("redelivered while in progress: {redelivered:?}");
        }
    }
    ack_for_good(delivery, &mut deliveries).await;
}

async fn term_stops_redelivery(broker: &dyn Broker) {
    const SUBJECT: &str = "catga.orders.commands.contract.term";
    let mut deliveries = bind(broker, &spec("term", SUBJECT, 5)).await;
    publish(broker, SUBJECT, "term-1", "poison").await;
    next(&mut deliveries)
        .await
        .acker
        .term()
        .await
        .expect("term");
    nothing_for(
        &mut deliveries,
        ACK_WAIT * 3,
        "a terminated message came back",
    )
    .await;
}

async fn max_deliver_bounds_deliveries_and_exhausted_messages_are_dead_lettered(
    broker: &dyn Broker,
) {
    const SUBJECT: &str = "catga.orders.commands.contract.exhausted";
    let spec = spec("exhausted", SUBJECT, 2);
    let stop_forwarding = CancellationToken::new();
    let forwarder = broker.dead_letter_exhausted(&spec, SERVICE, stop_forwarding.clone());
    let body = async {
        let mut deliveries = bind(broker, &spec).await;
        broker
            .publish(
                OutgoingMessage::new(SUBJECT, "exhausted-1", Bytes::from("crashes the handler"))
                    .with_header("Contract-Trace", "kept"),
            )
            .await
            .expect("stored");
        // Delivered max_deliver times, never settled (the handler crashes).
        let first = next(&mut deliveries).await;
        let second = next(&mut deliveries).await;
        assert_eq!((first.delivered, second.delivered), (1, 2));
        nothing_for(
            &mut deliveries,
            ACK_WAIT * 4,
            "delivered more than max_deliver times",
        )
        .await;
        // Handed back every time: naks count towards max_deliver too.
        publish(broker, SUBJECT, "exhausted-2", "handed back each time").await;
        for delivered in 1..=2 {
            let delivery = next(&mut deliveries).await;
            assert_eq!(delivery.delivered, delivered);
            delivery.acker.nak(Duration::ZERO).await.expect("nak");
        }
        nothing_for(
            &mut deliveries,
            ACK_WAIT * 4,
            "delivered more than max_deliver times",
        )
        .await;

        let dead_spec = ConsumerSpec {
            stream: streams::DEAD_LETTERS,
            durable: "contract-dead-letters".to_owned(),
            filter: streams::DEAD_LETTERS_SUBJECTS,
            max_deliver: 5,
            ack_wait: ACK_WAIT,
            max_in_flight: 1,
        };
        let mut dead = bind(broker, &dead_spec).await;
        for payload in ["crashes the handler", "handed back each time"] {
            let letter = next(&mut dead).await;
            assert_eq!(letter.subject, subjects::dead_letter_for(SUBJECT));
            assert_eq!(letter.payload, payload);
            assert_eq!(letter.header(headers::DEAD_LETTER_SUBJECT), Some(SUBJECT));
            assert_eq!(letter.header(headers::DEAD_LETTER_DELIVERIES), Some("2"));
            assert_eq!(letter.header(headers::DEAD_LETTER_SERVICE), Some(SERVICE));
            let reason = letter.header(headers::DEAD_LETTER_REASON).unwrap_or("");
            assert!(reason.contains("after 2 deliveries"), "{reason}");
            if payload == "crashes the handler" {
                assert_eq!(
                    letter.header("Contract-Trace"),
                    Some("kept"),
                    "original headers kept"
                );
            }
            letter.acker.ack().await.expect("ack");
        }
        nothing_for(&mut dead, ACK_WAIT * 2, "dead-lettered twice").await;
        drop((first, second));
        stop_forwarding.cancel();
    };
    // The forwarder returns once stopped; the test hangs (and times out) otherwise.
    tokio::join!(forwarder, body);
}

async fn a_consumer_gets_only_what_its_filter_matches(broker: &dyn Broker) {
    let spec = ConsumerSpec {
        stream: streams::ORDER_EVENTS,
        filter: "catga.orders.events.contract.>",
        ..spec("filter", "", 5)
    };
    let mut deliveries = bind(broker, &spec).await;
    for (subject, id) in [
        ("catga.orders.events.contract.a", "filter-1"),
        ("catga.orders.events.elsewhere.b", "filter-2"),
        ("catga.orders.events.contract.c.d", "filter-3"),
        ("catga.orders.events.contract", "filter-4"),
    ] {
        publish(broker, subject, id, "event").await;
    }
    for subject in [
        "catga.orders.events.contract.a",
        "catga.orders.events.contract.c.d",
    ] {
        let delivery = next(&mut deliveries).await;
        assert_eq!(delivery.subject, subject);
        delivery.acker.ack().await.expect("ack");
    }
    nothing_for(&mut deliveries, ACK_WAIT * 2, "outside the filter").await;
}

async fn lag_counts_what_is_not_yet_acknowledged(broker: &dyn Broker) {
    const SUBJECT: &str = "catga.orders.commands.contract.lag";
    let spec = spec("lag", SUBJECT, 5);
    let mut deliveries = bind(broker, &spec).await;
    for id in ["lag-1", "lag-2", "lag-3"] {
        publish(broker, SUBJECT, id, "work").await;
    }
    let held = next(&mut deliveries).await;
    let lag = eventually_lag(broker, &spec, |(pending, ack_pending)| {
        pending + ack_pending == 3 && ack_pending >= 1
    })
    .await;
    assert!(lag.0 <= 2, "{lag:?}");
    held.acker.ack().await.expect("ack");
    for _ in 0..2 {
        next(&mut deliveries).await.acker.ack().await.expect("ack");
    }
    eventually_lag(broker, &spec, |lag| lag == (0, 0)).await;
}

/// Polls the lag until `wanted` holds.
async fn eventually_lag(
    broker: &dyn Broker,
    spec: &ConsumerSpec,
    wanted: impl Fn((u64, u64)) -> bool,
) -> (u64, u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let lag = broker
            .consumer_lag(spec)
            .await
            .expect("lag")
            .expect("both brokers can tell");
        if wanted(lag) {
            return lag;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "lag stuck at {lag:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn a_subscriber_is_sent_only_what_it_has_room_for(broker: &dyn Broker) {
    const SUBJECT: &str = "catga.orders.commands.contract.room";
    let spec = ConsumerSpec {
        max_in_flight: 2,
        ..spec("room", SUBJECT, 5)
    };
    let mut deliveries = bind(broker, &spec).await;
    for id in ["room-1", "room-2", "room-3", "room-4"] {
        publish(broker, SUBJECT, id, "work").await;
    }
    let held = [next(&mut deliveries).await, next(&mut deliveries).await];
    eventually_lag(broker, &spec, |lag| lag == (2, 2)).await;
    // Polled with both slots taken, past several ack deadlines: the two
    // without room were never delivered, so neither used up a delivery
    // while the first two were worked on.
    for _ in 0..6 {
        nothing_for(&mut deliveries, ACK_WAIT / 2, "delivered beyond its room").await;
        for delivery in &held {
            delivery.acker.in_progress().await.expect("progress");
        }
        let lag = broker.consumer_lag(&spec).await.expect("lag");
        assert_eq!(lag, Some((2, 2)), "fetched ahead of the subscriber's room");
    }
    for delivery in held {
        delivery.acker.ack().await.expect("ack");
    }
    for _ in 0..2 {
        let delivery = next(&mut deliveries).await;
        assert_eq!(delivery.delivered, 1, "waited without a delivery");
        delivery.acker.ack().await.expect("ack");
    }
    eventually_lag(broker, &spec, |lag| lag == (0, 0)).await;
}

/// Panics on messages whose body says so; counts the calls per body.
#[derive(Default)]
struct Crashing {
    calls: Mutex<Vec<String>>,
}

impl Crashing {
    fn calls_for(&self, body: &str) -> usize {
        let calls = self.calls.lock().expect("lock");
        calls.iter().filter(|call| *call == body).count()
    }
}

impl Handler for Crashing {
    fn handle<'a, 'b, 'f>(
        &'a self,
        delivery: &'b Delivery,
    ) -> Pin<Box<dyn Future<Output = Result<(), HandleError>> + Send + 'f>>
    where
        'a: 'f,
        'b: 'f,
        Self: 'f,
    {
        Box::pin(async move {
            let body = String::from_utf8_lossy(&delivery.payload).into_owned();
            self.calls.lock().expect("lock").push(body.clone());
            if body == "panics" {
                panic!("handler bug");
            }
            Ok(())
        })
    }
}

async fn the_loop_dead_letters_exhausted_messages_without_a_forwarder(broker: Arc<dyn Broker>) {
    const SUBJECT: &str = "catga.orders.commands.contract.loop";
    let spec = spec("loop", SUBJECT, 2);
    // Bound first: the memory broker keeps only what arrives after.
    let dead_spec = ConsumerSpec {
        stream: streams::DEAD_LETTERS,
        durable: "contract-dead-letters-loop".to_owned(),
        filter: streams::DEAD_LETTERS_SUBJECTS,
        max_deliver: 5,
        ack_wait: ACK_WAIT,
        // The letters are kept below, each holding its slot.
        max_in_flight: 4,
    };
    let mut dead = bind(&*broker, &dead_spec).await;
    // A replica crashed during each of the two deliveries allowed: delivered,
    // never settled (the loop binds without a broker-side bound, as here).
    let crashed = ConsumerSpec {
        max_deliver: -1,
        ..spec.clone()
    };
    let mut deliveries = bind(&*broker, &crashed).await;
    publish(&*broker, SUBJECT, "loop-crashed", "crashed twice").await;
    let first = next(&mut deliveries).await;
    let second = next(&mut deliveries).await;
    assert_eq!((first.delivered, second.delivered), (1, 2));
    drop((first, second, deliveries));

    // The loop starts; no forwarder runs. A message whose handler panics
    // every time joins.
    let handler = Arc::new(Crashing::default());
    let stop = CancellationToken::new();
    let consumer = tokio::spawn(run_consumer(
        Arc::clone(&broker),
        spec.clone(),
        handler.clone(),
        ConsumerOptions {
            service: SERVICE,
            shutdown_grace: Duration::from_secs(1),
        },
        stop.clone(),
    ));
    publish(&*broker, SUBJECT, "loop-panics", "panics").await;

    let mut letters = Vec::new();
    while letters.len() < 2 {
        let letter = next(&mut dead).await;
        letter.acker.ack().await.expect("ack");
        if letter.header(headers::DEAD_LETTER_SUBJECT) == Some(SUBJECT) {
            letters.push(letter);
        }
    }
    for letter in &letters {
        assert_eq!(letter.header(headers::DEAD_LETTER_DELIVERIES), Some("2"));
        let reason = letter.header(headers::DEAD_LETTER_REASON).unwrap_or("");
        assert!(reason.contains("after 2 deliveries"), "{reason}");
        if letter.payload == "panics" {
            assert!(reason.contains("handler bug"), "{reason}");
        }
    }
    let mut payloads: Vec<_> = letters.iter().map(|l| l.payload.clone()).collect();
    payloads.sort();
    assert_eq!(payloads, vec!["crashed twice", "panics"]);
    assert_eq!(
        handler.calls_for("crashed twice"),
        0,
        "its deliveries were used up: dead-lettered without handling"
    );
    assert_eq!(handler.calls_for("panics"), 2, "handled max_deliver times");
    eventually_lag(&*broker, &spec, |lag| lag == (0, 0)).await;
    nothing_for(&mut dead, ACK_WAIT * 2, "dead-lettered twice").await;
    stop.cancel();
    consumer.await.expect("the loop stops");
}
