//! The order flow: accept, confirm, notify, cancel, list, oversell, idempotency.

use std::{collections::HashSet, time::Duration};

use catga_tests::{System, eventually, order_body};
use serde_json::json;

#[tokio::test]
async fn an_order_is_confirmed_and_notified_once() {
    let system = System::start().await;
    let api = system.client();
    // The first webhook attempt fails: the notification is retried, not lost.
    system.webhook.fail_next(1);

    let reply = api.place("c-42", &[("PROD-001", 3)]).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let order_id = reply.body["orderId"].as_str().expect("orderId").to_owned();
    assert_eq!(
        reply.header("location"),
        Some(format!("/api/orders/{order_id}").as_str())
    );
    assert_eq!(reply.body["status"], "Pending");
    assert_eq!(reply.body["customerId"], "c-42");
    assert_eq!(reply.body["items"][0]["productName"], "Mechanical Keyboard");
    assert_eq!(reply.body["items"][0]["unitPrice"], json!(19.99));
    // Exact decimal money: 3 x 19.99.
    assert_eq!(reply.body["totalAmount"].to_string(), "59.97");

    // Accepted means readable at once, never 404.
    let right_after = api.get(&format!("/api/orders/{order_id}")).await;
    assert_eq!(right_after.status, 200);

    let done = api.final_state(&order_id).await;
    assert_eq!(done["status"], "Confirmed", "{}", system.all_logs());
    assert!(done["updatedAt"].is_string() && done["createdAt"].is_string());

    let notified = eventually(
        "the webhook notification",
        Duration::from_secs(15),
        || async {
            let got = system.webhook.for_order(&order_id);
            (!got.is_empty()).then_some(got)
        },
    )
    .await;
    assert_eq!(notified.len(), 1);
    assert_eq!(
        notified[0].idempotency_key.as_deref(),
        Some(format!("{order_id}:Confirmed").as_str())
    );
    assert_eq!(notified[0].body["status"], "Confirmed");
    assert!(
        system.webhook.attempts() >= 2,
        "the failed attempt was retried"
    );
    // Nothing more arrives later.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(system.webhook.for_order(&order_id).len(), 1);
}

#[tokio::test]
async fn cancelling_releases_stock_and_cannot_happen_twice() {
    let system = System::start().await;
    let api = system.client();
    let before = api.product("PROD-002").await["stock"]
        .as_i64()
        .expect("stock");

    let reply = api.place("c-7", &[("PROD-002", 5)]).await;
    assert_eq!(reply.status, 202);
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
    assert_eq!(api.final_state(&order_id).await["status"], "Confirmed");
    assert_eq!(
        api.product("PROD-002").await["stock"].as_i64(),
        Some(before - 5)
    );

    let cancel = api
        .post_json(&format!("/api/orders/{order_id}/cancel"), &json!({}), &[])
        .await;
    assert_eq!(cancel.status, 202, "{:?}", cancel.body);
    eventually(
        "the order to be cancelled",
        Duration::from_secs(15),
        || async {
            let order = api.get(&format!("/api/orders/{order_id}")).await.body;
            (order["status"] == "Cancelled").then_some(())
        },
    )
    .await;
    assert_eq!(
        api.product("PROD-002").await["stock"].as_i64(),
        Some(before)
    );

    let again = api
        .post_json(&format!("/api/orders/{order_id}/cancel"), &json!({}), &[])
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.content_type(), "application/problem+json");

    let keys = eventually("both notifications", Duration::from_secs(15), || async {
        let keys: HashSet<_> = system
            .webhook
            .for_order(&order_id)
            .into_iter()
            .filter_map(|r| r.idempotency_key)
            .collect();
        (keys.len() == 2).then_some(keys)
    })
    .await;
    assert!(keys.contains(&format!("{order_id}:Cancelled")));
}

#[tokio::test]
async fn concurrent_orders_never_oversell() {
    let system = System::start().await;
    let api = system.client();
    let stored = api
        .upsert_product("PROD-LIMITED", "Limited Edition", "12.50", 10)
        .await;
    assert_eq!(stored.status, 200, "{:?}", stored.body);

    let placed = futures::future::join_all((0..30).map(|i| {
        let api = api.clone();
        async move { api.place(&format!("c-{i}"), &[("PROD-LIMITED", 1)]).await }
    }))
    .await;
    let ids: Vec<String> = placed
        .iter()
        .map(|r| {
            assert_eq!(r.status, 202, "{:?}", r.body);
            r.body["orderId"].as_str().expect("id").to_owned()
        })
        .collect();
    let mut confirmed = 0;
    let mut rejected = 0;
    for id in &ids {
        let order = api.final_state(id).await;
        match order["status"].as_str() {
            Some("Confirmed") => confirmed += 1,
            Some("Rejected") => {
                rejected += 1;
                assert!(
                    order["reason"]
                        .as_str()
                        .unwrap_or("")
                        .contains("insufficient stock")
                );
            }
            other => panic!("unexpected status {other:?}"),
        }
    }
    assert_eq!((confirmed, rejected), (10, 20));
    assert_eq!(api.product("PROD-LIMITED").await["stock"], json!(0));
}

#[tokio::test]
async fn idempotency_keys_replay_conflict_and_race() {
    let system = System::start().await;
    let api = system.client().as_customer("c-idem");
    let body = order_body("c-idem", &[("PROD-003", 1)]);
    let key = [("idempotency-key", "order-attempt-1")];

    let first = api.post_json("/api/orders", &body, &key).await;
    assert_eq!(first.status, 202);
    let replay = api.post_json("/api/orders", &body, &key).await;
    assert_eq!(replay.status, 202);
    assert_eq!(replay.body["orderId"], first.body["orderId"]);
    assert_eq!(replay.header("location"), first.header("location"));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));

    let other_body = order_body("c-idem", &[("PROD-003", 2)]);
    let mismatch = api.post_json("/api/orders", &other_body, &key).await;
    assert_eq!(mismatch.status, 422);
    assert_eq!(mismatch.content_type(), "application/problem+json");

    // Two identical requests racing: one order, never two.
    let racing_key = [("idempotency-key", "order-attempt-2")];
    let (a, b) = tokio::join!(
        api.post_json("/api/orders", &body, &racing_key),
        api.post_json("/api/orders", &body, &racing_key)
    );
    let ids: HashSet<_> = [&a, &b]
        .iter()
        .filter(|r| r.status == 202)
        .map(|r| r.body["orderId"].clone())
        .collect();
    assert_eq!(ids.len(), 1, "{a:?} {b:?}");
    for reply in [&a, &b] {
        assert!(reply.status == 202 || reply.status == 409, "{reply:?}");
    }
    let customers = api.get("/api/orders?limit=100").await.body["items"]
        .as_array()
        .expect("items")
        .len();
    assert_eq!(customers, 2, "one order per key");
}

#[tokio::test]
async fn orders_are_listed_newest_first_with_a_cursor() {
    let system = System::start().await;
    let api = system.client();
    let mut placed = Vec::new();
    for i in 0..5 {
        let reply = api.place(&format!("c-list-{i}"), &[("PROD-001", 1)]).await;
        placed.push(reply.body["orderId"].as_str().expect("id").to_owned());
    }
    placed.reverse();
    let first = api.get("/api/orders?limit=2").await;
    assert_eq!(first.status, 200);
    let mut seen: Vec<String> = Vec::new();
    let mut page = first.body;
    loop {
        for order in page["items"].as_array().expect("items") {
            seen.push(order["orderId"].as_str().expect("id").to_owned());
        }
        match page["nextCursor"].as_str() {
            Some(cursor) => {
                page = api
                    .get(&format!("/api/orders?limit=2&cursor={cursor}"))
                    .await
                    .body
            }
            None => break,
        }
    }
    assert_eq!(seen, placed);
    let default = api.get("/api/orders").await;
    assert_eq!(default.body["items"].as_array().map(Vec::len), Some(5));
}
