//! Streams and consumers are brought to the configured settings at start-up
//! on a real nats-server; what cannot change in place is an error naming the
//! setting.

use std::time::Duration;

use async_nats::jetstream::stream::{self, RetentionPolicy, StorageType};
use catga_core::{
    contracts::{streams, subjects},
    messaging::{Broker, ConsumerSpec, DUPLICATE_WINDOW, MessagingError, STREAMS, Slots},
};
use catga_tests::Nats;
use tokio_util::sync::CancellationToken;

#[tokio::test]
async fn existing_streams_and_consumers_are_brought_to_the_configuration() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    // As an older version (or a hand) left it: shorter age, longer window.
    js.create_stream(stream::Config {
        name: streams::ORDER_EVENTS.to_owned(),
        subjects: vec![streams::ORDER_EVENTS_SUBJECTS.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        max_age: Duration::from_secs(60),
        duplicate_window: Duration::from_secs(30),
        ..Default::default()
    })
    .await
    .expect("old stream");

    let broker = crate::jetstream_broker(&nats).await;
    broker.ensure_topology().await.expect("reconciled");
    let info = js
        .get_stream(streams::ORDER_EVENTS)
        .await
        .expect("stream")
        .cached_info()
        .config
        .clone();
    let configured = STREAMS
        .iter()
        .find(|spec| spec.name == streams::ORDER_EVENTS)
        .expect("events stream");
    assert_eq!(info.max_age, configured.max_age);
    assert_eq!(info.duplicate_window, DUPLICATE_WINDOW);

    // A consumer bound with one ack deadline and delivery bound, then with others.
    let mut spec = ConsumerSpec {
        stream: streams::ORDER_COMMANDS,
        durable: "reconcile".to_owned(),
        filter: subjects::PLACE_ORDER,
        max_deliver: 5,
        ack_wait: Duration::from_secs(30),
        max_in_flight: 1,
    };
    drop(
        broker
            .subscribe(&spec, Slots::new(1), CancellationToken::new())
            .await
            .expect("bind"),
    );
    spec.max_deliver = 9;
    spec.ack_wait = Duration::from_secs(12);
    drop(
        broker
            .subscribe(&spec, Slots::new(1), CancellationToken::new())
            .await
            .expect("bind again"),
    );
    let consumer = js
        .get_stream(streams::ORDER_COMMANDS)
        .await
        .expect("stream")
        .consumer_info("reconcile")
        .await
        .expect("consumer")
        .config;
    assert_eq!(consumer.max_deliver, 9);
    assert_eq!(consumer.ack_wait, Duration::from_secs(12));

    // A filter cannot change in place: the error names it.
    spec.filter = subjects::CANCEL_ORDER;
    let err = broker
        .subscribe(&spec, Slots::new(1), CancellationToken::new())
        .await
        .err()
        .expect("a different filter is refused");
    assert!(
        matches!(
            err,
            MessagingError::Mismatch {
                setting: "filter_subject",
                ..
            }
        ),
        "{err}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn a_stream_whose_retention_differs_is_an_error_naming_it() {
    let nats = Nats::start().await;
    let js = nats.jetstream().await;
    js.create_stream(stream::Config {
        name: streams::ORDER_COMMANDS.to_owned(),
        subjects: vec![streams::ORDER_COMMANDS_SUBJECTS.to_owned()],
        retention: RetentionPolicy::Limits,
        storage: StorageType::File,
        ..Default::default()
    })
    .await
    .expect("old stream");
    let broker = crate::jetstream_broker(&nats).await;
    let err = broker
        .ensure_topology()
        .await
        .expect_err("retention cannot change");
    assert!(
        matches!(
            err,
            MessagingError::Mismatch {
                setting: "retention",
                ..
            }
        ),
        "{err}"
    );
    let line = err.to_string();
    assert!(
        line.contains(streams::ORDER_COMMANDS) && line.contains("retention"),
        "{line}"
    );
}
