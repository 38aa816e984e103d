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

    let reasons = dead_letters(&js, 2).await;
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

/// NATS takes commands from any publisher: order-service applies only a
/// command order-api could have sent. Each forged one is dead-lettered with
/// its reason and changes no stock; an honest order still goes through.
#[tokio::test]
async fn forged_commands_are_dead_lettered_and_change_no_stock() {
    let system = System::start().await;
    let api = system.client();
    let js = system.nats.jetstream().await;
    let stock_before = api.product("PROD-003").await["stock"].clone();
    let hub = |quantity: u32| serde_json::json!({"productId": "PROD-003", "productName": "USB-C Hub", "quantity": quantity, "unitPrice": 89.0});
    let forged = [
        // The stock check counts each line alone: 150 + 150 of the 200 hubs.
        (
            vec![hub(150), hub(150)],
            "26700.00",
            "appears more than once",
        ),
        (vec![hub(1)], "0.01", "totalAmount must be 89"),
        (
            vec![
                serde_json::json!({"productId": "PROD-404", "productName": "Nothing", "quantity": 1, "unitPrice": 1.0}),
            ],
            "1.00",
            "unknown product PROD-404",
        ),
    ];
    let mut forged_ids = Vec::new();
    for (items, total, _) in &forged {
        let order_id = catga_core::domain::OrderId::new();
        forged_ids.push(order_id);
        let command = serde_json::json!({
            "commandId": format!("place:{order_id}"),
            "orderId": order_id,
            "customerId": "c-forger",
            "items": items,
            "totalAmount": total,
            "createdAt": "2026-01-01T00:00:00Z",
        });
        js.send_publish(
            subjects::PLACE_ORDER,
            Publish::build()
                .payload(serde_json::to_vec(&command).expect("json").into())
                .message_id(format!("forged:{order_id}")),
        )
        .await
        .expect("publish")
        .await
        .expect("stored");
    }

    let letters = dead_letters(&js, 3).await;
    assert!(
        letters
            .iter()
            .all(|(subject, _)| subject == subjects::PLACE_ORDER),
        "{letters:?}"
    );
    let reasons: Vec<&String> = letters.iter().map(|(_, reason)| reason).collect();
    for (_, _, why) in &forged {
        assert!(
            reasons.iter().any(|reason| reason.contains(why)),
            "no dead letter says {why:?}: {reasons:?}"
        );
    }
    assert_eq!(api.product("PROD-003").await["stock"], stock_before);
    for order_id in forged_ids {
        let reply = api.get(&format!("/api/orders/{order_id}")).await;
        assert_eq!(reply.status, 404, "forged order {order_id} was recorded");
    }

    let reply = api.place("c-honest", &[("PROD-003", 2)]).await;
    assert_eq!(reply.status, 202);
    let order_id = reply.body["orderId"].as_str().expect("id");
    assert_eq!(api.final_state(order_id).await["status"], "Confirmed");
    assert_eq!(
        api.product("PROD-003").await["stock"],
        stock_before.as_i64().expect("stock") - 2
    );
}

/// Waits for exactly `expected` dead letters and reads them: (original
/// subject, reason) each, sorted.
async fn dead_letters(js: &async_nats::jetstream::Context, expected: u64) -> Vec<(String, String)> {
    let dead = js
        .get_stream(streams::DEAD_LETTERS)
        .await
        .expect("dead-letter stream");
    let letters = eventually("the dead letters", Duration::from_secs(15), || {
        let mut info = dead.clone();
        async move {
            let count = info.info().await.ok()?.state.messages;
            (count >= expected).then_some(count)
        }
    })
    .await;
    assert_eq!(letters, expected);
    let consumer = dead
        .create_consumer(async_nats::jetstream::consumer::pull::Config::default())
        .await
        .expect("consumer");
    let wanted = usize::try_from(expected).expect("small");
    let mut batch = consumer
        .fetch()
        .max_messages(wanted)
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
    assert_eq!(reasons.len(), wanted, "{reasons:?}");
    reasons
}
