//! Bad input gets a clear 4xx problem document and changes nothing.

use catga_tests::{JWT_SECRET, System, admin_token};
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn bad_requests_get_problem_details() {
    let system = System::start().await;
    // Customer "c", the customer the bodies name.
    let api = system.client().as_customer("c");
    let json_ct = [("content-type", "application/json")];
    let long = "x".repeat(65);
    let many: Vec<_> = (0..51)
        .map(|i| json!({"productId": format!("P{i}"), "quantity": 1}))
        .collect();
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("malformed JSON", b"{\"customerId\": ".to_vec(), 400),
        ("not an object", b"[1,2]".to_vec(), 422),
        // (customerId may be left out: it is the token's)
        ("missing field", br#"{"customerId":"c"}"#.to_vec(), 422),
        ("wrong type", br#"{"customerId":42,"items":[]}"#.to_vec(), 422),
        ("empty customer", br#"{"customerId":"  ","items":[{"productId":"PROD-001","quantity":1}]}"#.to_vec(), 422),
        ("over-long customer", json!({"customerId": long, "items":[{"productId":"PROD-001","quantity":1}]}).to_string().into_bytes(), 422),
        ("zero quantity", br#"{"customerId":"c","items":[{"productId":"PROD-001","quantity":0}]}"#.to_vec(), 422),
        ("negative quantity", br#"{"customerId":"c","items":[{"productId":"PROD-001","quantity":-1}]}"#.to_vec(), 422),
        ("absurd quantity", br#"{"customerId":"c","items":[{"productId":"PROD-001","quantity":1000000000000}]}"#.to_vec(), 422),
        ("fractional quantity", br#"{"customerId":"c","items":[{"productId":"PROD-001","quantity":1.5}]}"#.to_vec(), 422),
        ("no items", br#"{"customerId":"c","items":[]}"#.to_vec(), 422),
        ("too many items", json!({"customerId": "c", "items": many}).to_string().into_bytes(), 422),
        ("duplicate lines", br#"{"customerId":"c","items":[{"productId":"PROD-001","quantity":1},{"productId":"PROD-001","quantity":1}]}"#.to_vec(), 422),
        ("unknown product", br#"{"customerId":"c","items":[{"productId":"NOPE","quantity":1}]}"#.to_vec(), 422),
        ("client-sent price", br#"{"customerId":"c","items":[{"productId":"PROD-001","quantity":1,"unitPrice":0.01}]}"#.to_vec(), 422),
        ("empty body", Vec::new(), 400),
    ];
    for (name, body, status) in cases {
        let reply = api
            .send(Method::POST, "/api/orders", &json_ct, Some(body))
            .await;
        assert_eq!(reply.status, status, "{name}: {:?}", reply.body);
        assert_eq!(reply.content_type(), "application/problem+json", "{name}");
        assert_eq!(reply.body["status"], json!(status), "{name}");
        assert!(
            reply.body["title"].is_string() && reply.body["type"].is_string(),
            "{name}"
        );
    }

    let text = api
        .send(
            Method::POST,
            "/api/orders",
            &[("content-type", "text/plain")],
            Some(b"hi".to_vec()),
        )
        .await;
    assert_eq!(text.status, 415);
    assert_eq!(text.content_type(), "application/problem+json");

    let huge = vec![b' '; 70 * 1024];
    let too_big = api
        .send(Method::POST, "/api/orders", &json_ct, Some(huge))
        .await;
    assert_eq!(too_big.status, 413);
    assert_eq!(too_big.content_type(), "application/problem+json");

    for path in [
        "/api/orders/01a22681-80fb-74d7-90dc-d3c415b0c7a8",
        "/api/orders/not-a-uuid",
        "/api/nothing-here",
    ] {
        let reply = api.get(path).await;
        assert_eq!(reply.status, 404, "{path}");
        assert_eq!(reply.content_type(), "application/problem+json", "{path}");
    }
    for query in ["limit=0", "limit=101", "limit=abc", "cursor=zzz"] {
        let reply = api.get(&format!("/api/orders?{query}")).await;
        assert_eq!(reply.status, 400, "{query}");
        assert_eq!(reply.content_type(), "application/problem+json");
    }
    let bad_key = api
        .post_json(
            "/api/orders",
            &json!({"customerId": "c", "items": [{"productId": "PROD-001", "quantity": 1}]}),
            &[("idempotency-key", "")],
        )
        .await;
    assert_eq!(bad_key.status, 400);

    // Nothing above created an order (the admin lists everyone's).
    let listed = system.client().get("/api/orders").await;
    assert_eq!(listed.body["items"], json!([]));
}

#[tokio::test]
async fn catalog_administration_needs_an_admin_token() {
    let system = System::start().await;
    // Each request below names its own token, or none.
    let api = system.client().without_token();
    let body =
        serde_json::to_vec(&json!({"name": "Pen", "unitPrice": 1.5, "stock": 3})).expect("json");
    let put = |auth: Option<String>, body: Vec<u8>| {
        let api = api.clone();
        async move {
            let mut headers = vec![("content-type".to_owned(), "application/json".to_owned())];
            if let Some(auth) = auth {
                headers.push(("authorization".to_owned(), auth));
            }
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            api.send(Method::PUT, "/api/products/PEN-1", &headers, Some(body))
                .await
        }
    };
    let none = put(None, body.clone()).await;
    assert_eq!(none.status, 401);
    assert_eq!(none.header("www-authenticate"), Some("Bearer"));
    let forged = put(
        Some(format!(
            "Bearer {}",
            admin_token("another-secret-of-sufficient-length!!", "admin")
        )),
        body.clone(),
    )
    .await;
    assert_eq!(forged.status, 401);
    let user = put(
        Some(format!("Bearer {}", admin_token(JWT_SECRET, "customer"))),
        body.clone(),
    )
    .await;
    assert_eq!(user.status, 403);
    let admin = format!("Bearer {}", admin_token(JWT_SECRET, "admin"));
    let ok = put(Some(admin.clone()), body).await;
    assert_eq!(ok.status, 200, "{:?}", ok.body);
    assert_eq!(ok.body["unitPrice"], json!(1.5));
    let bad_price = put(
        Some(admin),
        serde_json::to_vec(&json!({"name": "Pen", "unitPrice": 1.555, "stock": 3})).expect("json"),
    )
    .await;
    assert_eq!(bad_price.status, 422);
    assert_eq!(api.product("PEN-1").await["stock"], json!(3));
}
