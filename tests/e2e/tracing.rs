//! One order, one trace: order-api, the JetStream hops, order-service with
//! its Redis calls, notification-service and the webhook, exported over OTLP.

use std::{collections::HashMap, time::Duration};

use catga_tests::{OtlpReceiver, ReceivedSpan, System, eventually};

#[tokio::test]
async fn one_order_is_one_trace_across_all_three_services() {
    let otlp = OtlpReceiver::start().await;
    let system = System::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "100"),
    ])
    .await;
    let api = system.client();
    let reply = api.place("c-traced", &[("PROD-001", 1)]).await;
    assert_eq!(reply.status, 202);
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
    assert_eq!(api.final_state(&order_id).await["status"], "Confirmed");

    let root = eventually(
        "the POST /api/orders span",
        Duration::from_secs(15),
        || async {
            otlp.spans()
                .into_iter()
                .find(|s| s.name == "POST /api/orders" && s.service == "OrderApi")
        },
    )
    .await;
    assert!(
        root.parent_span_id.is_empty(),
        "no incoming traceparent: a root span"
    );

    let expected = [
        ("OrderApi", "POST /api/orders"),
        ("OrderApi", "redis create_pending"),
        ("OrderApi", "catga.orders.commands.place publish"),
        ("OrderService", "catga.orders.commands.place process"),
        ("OrderService", "redis apply_place"),
        ("OrderService", "catga.orders.events.confirmed publish"),
        (
            "NotificationService",
            "catga.orders.events.confirmed process",
        ),
        ("NotificationService", "redis idempotency claim"),
        ("NotificationService", "POST webhook"),
    ];
    let trace = eventually(
        "every hop in the trace",
        Duration::from_secs(15),
        || async {
            let trace = otlp.trace(&root.trace_id);
            expected
                .iter()
                .all(|(service, name)| {
                    trace
                        .iter()
                        .any(|s| s.service == *service && s.name == *name)
                })
                .then_some(trace)
        },
    )
    .await;

    // Every span but the root has its parent in the same trace.
    let by_id: HashMap<&str, &ReceivedSpan> =
        trace.iter().map(|s| (s.span_id.as_str(), s)).collect();
    for span in &trace {
        if span.span_id != root.span_id {
            assert!(
                by_id.contains_key(span.parent_span_id.as_str()),
                "{span:?} has no parent in the trace"
            );
        }
    }
    let find = |name: &str| trace.iter().find(|s| s.name == name).expect(name);
    let parent_of = |name: &str| by_id[find(name).parent_span_id.as_str()].name.clone();
    assert_eq!(
        parent_of("catga.orders.commands.place publish"),
        "POST /api/orders"
    );
    assert_eq!(
        parent_of("catga.orders.commands.place process"),
        "catga.orders.commands.place publish"
    );
    assert_eq!(
        parent_of("redis apply_place"),
        "catga.orders.commands.place process"
    );
    assert_eq!(
        parent_of("catga.orders.events.confirmed publish"),
        "catga.orders.commands.place process"
    );
    assert_eq!(
        parent_of("catga.orders.events.confirmed process"),
        "catga.orders.events.confirmed publish"
    );
    assert_eq!(
        parent_of("POST webhook"),
        "catga.orders.events.confirmed process"
    );

    // The webhook request carries the same trace.
    let notified = system.webhook.for_order(&order_id);
    let traceparent = notified[0]
        .traceparent
        .as_deref()
        .expect("traceparent on the webhook");
    assert!(traceparent.contains(&root.trace_id), "{traceparent}");

    // An incoming traceparent is honoured.
    let incoming = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let reply = api
        .as_customer("c-traced-2")
        .post_json(
            "/api/orders",
            &catga_tests::order_body("c-traced-2", &[("PROD-001", 1)]),
            &[("traceparent", incoming)],
        )
        .await;
    assert_eq!(reply.status, 202);
    let continued = eventually("the continued trace", Duration::from_secs(15), || async {
        otlp.trace("4bf92f3577b34da6a3ce929d0e0e4736")
            .into_iter()
            .find(|s| s.name == "POST /api/orders")
    })
    .await;
    assert_eq!(continued.parent_span_id, "00f067aa0ba902b7");
}

#[tokio::test]
async fn an_absent_collector_never_fails_a_request() {
    // Nothing listens on this port: exports fail in the background only.
    let dead = format!("http://127.0.0.1:{}", catga_tests::free_port());
    let system = System::start_with(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", dead.as_str()),
        ("OTEL_BSP_SCHEDULE_DELAY", "50"),
    ])
    .await;
    let api = system.client();
    for i in 0..5 {
        let reply = api
            .place(&format!("c-nocollector-{i}"), &[("PROD-002", 1)])
            .await;
        assert_eq!(reply.status, 202);
        let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
        assert_eq!(api.final_state(&order_id).await["status"], "Confirmed");
    }
}
