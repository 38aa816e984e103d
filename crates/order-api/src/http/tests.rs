//! In-process tests of the router: no network, memory store and broker.

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Method, Request, StatusCode},
};
use catga_core::{
    domain::default_catalog,
    health::Health,
    idempotency::MemoryIdempotencyStore,
    messaging::MemoryBroker,
    store::{Catalog, MemoryStore},
};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

use super::{AppState, app, openapi::ApiDoc, ops_app};
use crate::auth::{AuthSettings, Authenticator, JwtSecret, Validator, token::TokenSigner};

const SECRET: &str = "0123456789abcdef0123456789abcdef";

fn secret_settings() -> AuthSettings {
    AuthSettings {
        jwt_secret: Some(JwtSecret::new(SECRET).expect("secret")),
        ..AuthSettings::default()
    }
}

/// `Authorization: Bearer …` for `subject`, an admin with `admin`.
fn bearer(subject: &str, admin: bool) -> String {
    let token = TokenSigner::from_settings(&secret_settings())
        .expect("signer")
        .mint(subject, admin.then_some("admin"), Duration::from_secs(600))
        .expect("token");
    format!("Bearer {token}")
}

async fn test_app(idempotency: bool, authenticated: bool) -> Router {
    app(test_state(idempotency, authenticated).await)
}

fn test_ops_app() -> Router {
    ops_app(Health::new("order-api", Vec::new()))
}

async fn test_state(idempotency: bool, authenticated: bool) -> AppState {
    let store = MemoryStore::new();
    store
        .ensure_catalog(&default_catalog())
        .await
        .expect("seeded");
    AppState {
        store: Arc::new(store),
        publisher: Arc::new(MemoryBroker::new()),
        idempotency: idempotency.then(|| {
            Arc::new(MemoryIdempotencyStore::new())
                as Arc<dyn catga_core::idempotency::IdempotencyStore>
        }),
        idempotency_ttl: Duration::from_secs(60),
        authenticator: if authenticated {
            Authenticator::tokens(Validator::new(&secret_settings()).expect("validator"))
        } else {
            Authenticator::Anonymous
        },
        max_body_bytes: 4096,
        body_timeout: Duration::from_secs(10),
        rate_limit: None,
        max_concurrent_requests: 64,
    }
}

async fn call(
    app: &Router,
    method: Method,
    uri: &str,
    body: Option<Value>,
    headers: &[(&str, &str)],
) -> (StatusCode, String, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let body = match body {
        Some(body) => {
            request = request.header("content-type", "application/json");
            Body::from(body.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).expect("request"))
        .await
        .expect("response");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    (
        status,
        content_type,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn order() -> Value {
    json!({"customerId": "c-1", "items": [{"productId": "PROD-001", "quantity": 1}]})
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = test_app(true, true).await;
    let doc = serde_json::to_value(<ApiDoc as utoipa::OpenApi>::openapi()).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    assert_eq!(paths.len(), 5);
    let mut operations = 0;
    for (path, item) in paths {
        let concrete = path
            .replace("{order_id}", "01a22681-80fb-74d7-90dc-d3c415b0c7a8")
            .replace("{product_id}", "PROD-001");
        for method in item.as_object().expect("item").keys() {
            let method: Method = method.to_uppercase().parse().expect("method");
            let (status, _, body) = call(&app, method.clone(), &concrete, None, &[]).await;
            // The router's own fallbacks are the only "no such route" answers.
            assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            assert_ne!(body["title"], "No such resource", "{method} {path}");
            operations += 1;
        }
    }
    assert_eq!(operations, 6);
    let (status, _, served) = call(&app, Method::GET, "/api/openapi.json", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(served, doc);
    assert_eq!(
        served["openapi"].as_str().map(|v| v.starts_with('3')),
        Some(true)
    );
}

#[tokio::test]
async fn accepted_orders_are_pending_and_readable() {
    let app = test_app(true, false).await;
    let (status, _, body) = call(&app, Method::POST, "/api/orders", Some(order()), &[]).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let id = body["orderId"].as_str().expect("id");
    let (status, _, read) = call(&app, Method::GET, &format!("/api/orders/{id}"), None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(read["status"], "Pending");
}

#[tokio::test]
async fn idempotency_can_be_switched_off() {
    let app = test_app(false, false).await;
    let key = [("idempotency-key", "k")];
    let (_, _, a) = call(&app, Method::POST, "/api/orders", Some(order()), &key).await;
    let (_, _, b) = call(&app, Method::POST, "/api/orders", Some(order()), &key).await;
    assert_ne!(a["orderId"], b["orderId"]);
}

#[tokio::test]
async fn catalog_administration_needs_the_admin_role() {
    let product = || Some(json!({"name": "x", "unitPrice": 1, "stock": 1}));
    // Anonymous access (authentication off) never administers the catalog.
    let open = test_app(true, false).await;
    let (status, content_type, _) =
        call(&open, Method::PUT, "/api/products/X", product(), &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(content_type, "application/problem+json");

    let app = test_app(true, true).await;
    let customer = bearer("c-1", false);
    let (status, _, _) = call(
        &app,
        Method::PUT,
        "/api/products/X",
        product(),
        &[("authorization", &customer)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Refused before the body is read.
    let (status, _, _) = call(
        &app,
        Method::PUT,
        "/api/products/X",
        Some(json!({"bogus": true})),
        &[("authorization", &customer)],
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let admin = bearer("ops-1", true);
    let (status, _, body) = call(
        &app,
        Method::PUT,
        "/api/products/X",
        product(),
        &[("authorization", &admin)],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Reading the catalog needs no token.
    let (status, _, _) = call(&app, Method::GET, "/api/products", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_order_route_needs_a_token_and_the_documents_do_not() {
    let app = test_app(true, true).await;
    let id = "01a22681-80fb-74d7-90dc-d3c415b0c7a8";
    for (method, path) in [
        (Method::POST, "/api/orders".to_owned()),
        (Method::GET, "/api/orders".to_owned()),
        (Method::GET, format!("/api/orders/{id}")),
        (Method::POST, format!("/api/orders/{id}/cancel")),
        (Method::PUT, "/api/products/X".to_owned()),
    ] {
        let (status, content_type, body) = call(&app, method.clone(), &path, None, &[]).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {path}");
        assert_eq!(content_type, "application/problem+json", "{method} {path}");
        assert_eq!(body["status"], 401);
    }
    for path in ["/api/products", "/api/openapi.json"] {
        let (status, _, _) = call(&app, Method::GET, path, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

#[tokio::test]
async fn each_customer_sees_and_cancels_only_their_own_orders() {
    let app = test_app(true, true).await;
    let (alice, bob, admin) = (
        bearer("alice", false),
        bearer("bob", false),
        bearer("ops", true),
    );
    let as_ = |token: &str| vec![("authorization", token.to_owned())];
    let headers =
        |list: &[(&'static str, String)]| -> Vec<(&'static str, String)> { list.to_vec() };
    let post = |token: String, body: Value, key: Option<&'static str>| {
        let app = app.clone();
        async move {
            let mut list = headers(&as_(&token));
            if let Some(key) = key {
                list.push(("idempotency-key", key.to_owned()));
            }
            let list: Vec<(&str, &str)> = list.iter().map(|(k, v)| (*k, v.as_str())).collect();
            call(&app, Method::POST, "/api/orders", Some(body), &list).await
        }
    };
    let items = json!([{"productId": "PROD-001", "quantity": 1}]);

    // The customer comes from the token; the body may leave it out or repeat it.
    let (status, _, a1) = post(alice.clone(), json!({"items": items}), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a1}");
    assert_eq!(a1["customerId"], "alice");
    let (status, _, a2) = post(
        alice.clone(),
        json!({"customerId": "alice", "items": items}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{a2}");
    let (status, content_type, body) = post(
        alice.clone(),
        json!({"customerId": "bob", "items": items}),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(content_type, "application/problem+json");
    let (status, _, b1) = post(bob.clone(), json!({"items": items}), None).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{b1}");

    let get = |token: String, path: String| {
        let app = app.clone();
        async move { call(&app, Method::GET, &path, None, &[("authorization", &token)]).await }
    };
    let a1_path = format!("/api/orders/{}", a1["orderId"].as_str().expect("id"));
    let (status, _, _) = get(alice.clone(), a1_path.clone()).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, foreign) = get(bob.clone(), a1_path.clone()).await;
    let (_, _, missing) = get(
        bob.clone(),
        "/api/orders/01a22681-80fb-74d7-90dc-d3c415b0c7a8".to_owned(),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(
        foreign["title"], missing["title"],
        "the same answer as a missing order"
    );
    assert_eq!(foreign["type"], missing["type"]);
    let (status, _, _) = get(admin.clone(), a1_path.clone()).await;
    assert_eq!(status, StatusCode::OK, "admin reads every order");

    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|o| o["orderId"].as_str().expect("id").to_owned())
            .collect()
    };
    let (_, _, listed) = get(alice.clone(), "/api/orders".to_owned()).await;
    assert_eq!(
        ids(&listed),
        [
            a2["orderId"].as_str().expect("id"),
            a1["orderId"].as_str().expect("id")
        ]
    );
    let (_, _, listed) = get(alice.clone(), "/api/orders?limit=1".to_owned()).await;
    let cursor = listed["nextCursor"].as_str().expect("cursor").to_owned();
    let (_, _, next) = get(
        alice.clone(),
        format!("/api/orders?limit=1&cursor={cursor}"),
    )
    .await;
    assert_eq!(ids(&next), [a1["orderId"].as_str().expect("id")]);
    let (_, _, listed) = get(bob.clone(), "/api/orders".to_owned()).await;
    assert_eq!(ids(&listed), [b1["orderId"].as_str().expect("id")]);
    let (_, _, listed) = get(admin.clone(), "/api/orders".to_owned()).await;
    assert_eq!(ids(&listed).len(), 3, "admin lists everyone's");

    let cancel = |token: String, path: String| {
        let app = app.clone();
        async move {
            call(
                &app,
                Method::POST,
                &format!("{path}/cancel"),
                None,
                &[("authorization", &token)],
            )
            .await
        }
    };
    let (status, _, _) = cancel(bob.clone(), a1_path.clone()).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "bob cannot cancel alice's order"
    );
    let (status, _, _) = cancel(admin.clone(), a1_path.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "admin cancels every order");

    // The same Idempotency-Key from two customers: two orders.
    let (status, _, first) = post(alice.clone(), json!({"items": items}), Some("shared-key")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, _, second) = post(bob.clone(), json!({"items": items}), Some("shared-key")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_ne!(first["orderId"], second["orderId"]);
    assert_eq!(second["customerId"], "bob");
    let (_, _, replay) = post(alice.clone(), json!({"items": items}), Some("shared-key")).await;
    assert_eq!(
        replay["orderId"], first["orderId"],
        "each still replays its own"
    );
}

#[tokio::test]
async fn anonymous_access_takes_the_customer_from_the_body() {
    let app = test_app(true, false).await;
    let (status, _, body) = call(
        &app,
        Method::POST,
        "/api/orders",
        Some(json!({"items": [{"productId": "PROD-001", "quantity": 1}]})),
        &[],
    )
    .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["field"], "customerId");
}

#[tokio::test]
async fn wrong_methods_and_health() {
    let app = test_app(true, false).await;
    let (status, content_type, _) = call(&app, Method::DELETE, "/api/orders", None, &[]).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(content_type, "application/problem+json");
    let ops = test_ops_app();
    for path in ["/health", "/health/live", "/health/ready"] {
        let (status, _, body) = call(&ops, Method::GET, path, None, &[]).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["service"], "order-api");
    }
    let (status, _, _) = call(&ops, Method::GET, "/metrics", None, &[]).await;
    assert_eq!(status, StatusCode::OK);
    // Not on the public port.
    for path in ["/health", "/health/ready", "/metrics"] {
        let (status, _, _) = call(&app, Method::GET, path, None, &[]).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
}

/// A broker that holds every publish until released: requests stay in flight.
struct HeldPublisher(Arc<tokio::sync::Notify>);

#[async_trait::async_trait]
impl catga_core::messaging::Publisher for HeldPublisher {
    async fn send(
        &self,
        _message: catga_core::messaging::OutgoingMessage,
    ) -> Result<(), catga_core::messaging::MessagingError> {
        self.0.notified().await;
        Ok(())
    }
}

#[tokio::test]
async fn requests_over_the_concurrency_limit_are_shed_and_probes_still_answer() {
    let release = Arc::new(tokio::sync::Notify::new());
    let mut state = test_state(false, false).await;
    state.publisher = Arc::new(HeldPublisher(release.clone()));
    state.max_concurrent_requests = 1;
    let app = app(state);
    let order = json!({"customerId": "c-1", "items": [{"productId": "PROD-001", "quantity": 1}]});

    let first = tokio::spawn({
        let app = app.clone();
        let order = order.clone();
        async move { call(&app, Method::POST, "/api/orders", Some(order), &[]).await }
    });
    // Wait until the first request holds the only slot.
    let mut shed = None;
    for _ in 0..200 {
        let (status, content_type, body) = call(
            &app,
            Method::GET,
            "/api/orders/00000000-0000-0000-0000-000000000000",
            None,
            &[],
        )
        .await;
        if status == StatusCode::SERVICE_UNAVAILABLE {
            shed = Some((content_type, body));
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (content_type, body) = shed.expect("a second request is shed while the first is in flight");
    assert_eq!(content_type, "application/problem+json");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("overloaded")),
        "{body}"
    );

    let ops = test_ops_app();
    let (status, _, _) = call(&ops, Method::GET, "/health/live", None, &[]).await;
    assert_eq!(status, StatusCode::OK, "probes are outside the limit");
    let (status, _, _) = call(&ops, Method::GET, "/metrics", None, &[]).await;
    assert_eq!(status, StatusCode::OK, "metrics are outside the limit");

    release.notify_one();
    let (status, _, body) = first.await.expect("first request");
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, _, _) = call(&app, Method::GET, "/api/products", None, &[]).await;
    assert_eq!(status, StatusCode::OK, "the slot is free again");
}

#[tokio::test]
async fn a_key_in_flight_is_refused_then_its_answer_replayed() {
    let release = Arc::new(tokio::sync::Notify::new());
    let mut state = test_state(true, false).await;
    state.publisher = Arc::new(HeldPublisher(release.clone()));
    let store = state.store.clone();
    let app = app(state);
    let key = [("idempotency-key", "in-flight-1")];

    let first = tokio::spawn({
        let app = app.clone();
        async move { call(&app, Method::POST, "/api/orders", Some(order()), &key).await }
    });
    // The pending order is written after the claim and before the publish
    // that is held: once it is there, the first request holds the key.
    let mut pending = false;
    for _ in 0..200 {
        if !store.list_orders(1, None).await.expect("list").is_empty() {
            pending = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(pending, "the first request reaches the publish");

    let (status, content_type, body) =
        call(&app, Method::POST, "/api/orders", Some(order()), &key).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(content_type, "application/problem+json");
    assert!(
        body["type"]
            .as_str()
            .is_some_and(|t| t.ends_with("request-in-flight")),
        "{body}"
    );

    release.notify_one();
    let (status, _, accepted) = first.await.expect("first request");
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let (status, _, replayed) = call(&app, Method::POST, "/api/orders", Some(order()), &key).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(replayed, accepted);
}

#[test]
fn the_document_declares_who_may_call_what() {
    let doc = serde_json::to_value(<ApiDoc as utoipa::OpenApi>::openapi()).expect("json");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, item) in paths {
        for (method, operation) in item.as_object().expect("item") {
            let responses = operation["responses"].as_object().expect("responses");
            let public = (path.as_str(), method.as_str()) == ("/api/products", "get");
            assert_eq!(
                operation["security"] == json!([{"bearer": []}]),
                !public,
                "{method} {path}: bearer token required exactly when protected"
            );
            assert_eq!(
                responses.contains_key("401"),
                !public,
                "{method} {path}: 401 declared exactly when protected"
            );
            if path.starts_with("/api/orders/") {
                assert!(responses.contains_key("404"), "{method} {path}");
            }
        }
    }
    for (path, method) in [
        ("/api/orders", "post"),
        ("/api/products/{product_id}", "put"),
    ] {
        assert!(
            doc["paths"][path][method]["responses"]
                .as_object()
                .is_some_and(|r| r.contains_key("403")),
            "{method} {path} declares 403"
        );
    }
}
