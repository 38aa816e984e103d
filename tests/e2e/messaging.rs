//! JetStream behaviour: replicas share the queue group, duplicates are
//! dropped, poison messages are dead-lettered with their reason.

use std::time::Duration;

use async_nats::jetstream::message::PublishMessage as Publish;
use catga_core::contracts::{headers, metrics, streams, subjects};
use catga_tests::{System, eventually, metric_total};
use futures::StreamExt;

#[tokio::test]
async fn both_order_service_replicas_take_a_share() {
    let system = System::start().await;
    let api = system.client();
    let mut ids = Vec::new();
    for i in 0..40 {
        let reply = api.place(&format!("c-share-{i}"), &[("PROD-001", 1)]).await;
        assert_eq!(reply.status, 202);
        ids.push(reply.body["orderId"].as_str().expect("id").to_owned());
    }
    for id in &ids {
        assert_eq!(api.final_state(id).await["status"], "Confirmed");
    }
    for replica in &system.order_services {
        let handled = replica
            .metric_sum(&format!("{}{{", metrics::MESSAGES_PROCESSED))
            .await;
        assert!(
            handled > 0.0,
            "replica on :{} handled nothing",
            replica.port
        );
    }
}

#[tokio::test]
async fn poison_and_duplicate_commands() {
    let system = System::start().await;
    let api = system.client();
    let js = system.nats.jetstream().await;

    // Undecodable payload and an unknown message type.
    for (subject, payload) in [
        (subjects::PLACE_ORDER, "this is not json"),
        ("catga.orders.commands.refund", "{}"),
    ] {
        js.send_publish(subject, Publish::build().payload(payload.into()))
            .await
            .expect("publish")
            .await
            .expect("stored");
    }

    // A duplicate publish of a real command: one effect only.
    let reply = api.place("c-dup", &[("PROD-001", 2)]).await;
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
    assert_eq!(api.final_state(&order_id).await["status"], "Confirmed");
    let stock_after_first = api.product("PROD-001").await["stock"].clone();
    let command = serde_json::json!({
        "commandId": format!("place:{order_id}"),
        "orderId": order_id,
        "customerId": "c-dup",
        "items": [{"productId": "PROD-001", "productName": "Mechanical Keyboard", "quantity": 2, "unitPrice": 19.99}],
        "totalAmount": "39.98",
        "createdAt": "2026-01-01T00:00:00Z",
    });
    // A different Nats-Msg-Id defeats the broker's deduplication: the store's
    // command idempotency must catch it.
    js.send_publish(
        subjects::PLACE_ORDER,
        Publish::build()
            .payload(serde_json::to_vec(&command).expect("json").into())
            .message_id("a-different-id"),
    )
    .await
    .expect("publish")
    .await
    .expect("stored");

    let dead = js
        .get_stream(streams::DEAD_LETTERS)
        .await
        .expect("dead-letter stream");
    let letters = eventually("two dead letters", Duration::from_secs(15), || {
        let dead = dead.clone();
        async move {
            let mut info = dead.clone();
            let count = info.info().await.ok()?.state.messages;
            (count >= 2).then_some(count)
        }
    })
    .await;
    assert_eq!(letters, 2);
    let consumer = dead
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("consumer");
    let mut batch = consumer
        .fetch()
        .max_messages(2)
        .messages()
        .await
        .expect("fetch");
    let mut reasons = Vec::new();
    while let Some(Ok(message)) = batch.next().await {
        let headers = message.headers.clone().expect("headers");
        let reason = headers
            .get(headers::DEAD_LETTER_REASON)
            .expect("reason")
            .to_string();
        let original = headers
            .get(headers::DEAD_LETTER_SUBJECT)
            .expect("subject")
            .to_string();
        assert!(headers.get(headers::DEAD_LETTER_DELIVERIES).is_some());
        reasons.push((original, reason));
    }
    reasons.sort();
    assert!(
        reasons[0].0 == subjects::PLACE_ORDER && reasons[0].1.contains("undecodable"),
        "{reasons:?}"
    );
    assert!(
        reasons[1].0 == "catga.orders.commands.refund"
            && reasons[1].1.contains("unknown message type"),
        "{reasons:?}"
    );

    // The duplicate changed nothing and produced no second notification:
    // checked once it has been handled (recognised as a duplicate).
    let hits_prefix = format!("{}{{", metrics::IDEMPOTENCY_HITS);
    let hits = eventually(
        "the duplicate command to be handled",
        Duration::from_secs(10),
        || async {
            let hits = metric_total(&system.order_services, &hits_prefix).await;
            (hits >= 1.0).then_some(hits)
        },
    )
    .await;
    assert!(hits >= 1.0, "{hits}");
    assert_eq!(api.product("PROD-001").await["stock"], stock_after_first);
    assert_eq!(system.webhook.for_order(&order_id).len(), 1);
    let dead_lettered = metric_total(
        &system.order_services,
        &format!("{}{{", metrics::DEAD_LETTERS),
    )
    .await;
    assert_eq!(dead_lettered, 2.0);
}
