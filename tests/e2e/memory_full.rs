//! Redis at `maxmemory` under `noeviction` (issue 14): order-api refuses new
//! orders with a clear `503`, order-service holds the command it cannot
//! apply without using up its deliveries or dead-lettering it, and the order
//! is decided once memory is freed. Nothing is lost.

use std::time::Duration;

use catga_core::contracts::streams;
use catga_tests::System;

async fn set_maxmemory(system: &System, bytes: &str) {
    let mut connection = system.redis.connection().await;
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(bytes)
        .query_async(&mut connection)
        .await
        .expect("CONFIG SET maxmemory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_redis_refuses_new_orders_with_503_and_loses_no_accepted_one() {
    let system = System::start().await;
    let api = system.client();
    // An order accepted while no replica consumes: its command waits in the stream.
    for replica in &system.order_services {
        replica.process.kill();
    }
    let accepted = api.place("c-full", &[("PROD-002", 1)]).await;
    assert_eq!(accepted.status, 202, "{:?}", accepted.body);
    let order_id = accepted.body["orderId"].as_str().expect("id").to_owned();

    // One byte: every write that may grow memory is refused.
    set_maxmemory(&system, "1").await;
    let refused = api.place("c-full", &[("PROD-002", 1)]).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.content_type(), "application/problem+json");
    assert!(
        refused.body["type"]
            .as_str()
            .unwrap_or_default()
            .ends_with("/storage-full"),
        "{:?}",
        refused.body
    );
    assert!(refused.header("retry-after").is_some());

    // A replica comes back: the command meets the full store and is held.
    system.order_services[0].process.start_again();
    system.order_services[0]
        .wait_ready(Duration::from_secs(30))
        .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let held = api.get(&format!("/api/orders/{order_id}")).await;
    assert_eq!(held.status, 200);
    assert_eq!(held.body["status"], "Pending", "{:?}", held.body);
    let logs = system.order_services[0].process.logs();
    assert!(
        logs.contains("OOM"),
        "the replica says why it waits:\n{logs}"
    );
    let mut dead_letters = system
        .nats
        .jetstream()
        .await
        .get_stream(streams::DEAD_LETTERS)
        .await
        .expect("dead-letter stream");
    let info = dead_letters.info().await.expect("info");
    assert_eq!(info.state.messages, 0, "nothing dead-lettered for memory");

    // Memory freed: the held command is applied, once.
    set_maxmemory(&system, "0").await;
    assert_eq!(api.final_state(&order_id).await["status"], "Confirmed");
    let again = api.place("c-full", &[("PROD-002", 1)]).await;
    assert_eq!(again.status, 202, "{:?}", again.body);
}
