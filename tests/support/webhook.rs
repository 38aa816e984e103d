//! A webhook receiver standing in for a notification endpoint.

use crate::servers::serve_on_loopback;
use std::sync::{Arc, Mutex};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use serde_json::Value;

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    failures_left: usize,
    attempts: usize,
}

/// An HTTP server standing in for a notification webhook. It can be told to
/// fail the next requests, to exercise retries.
#[derive(Clone)]
pub struct WebhookReceiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new()
            .route("/hooks/orders", post(receive))
            .with_state(Arc::clone(&state));
        let addr = serve_on_loopback(app).await;
        Self {
            url: format!("http://{addr}/hooks/orders"),
            state,
        }
    }

    /// Answers 503 to the next `count` requests.
    pub fn fail_next(&self, count: usize) {
        self.state.lock().expect("lock").failures_left = count;
    }

    /// Successfully delivered notifications, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    /// All requests, failed ones included.
    pub fn attempts(&self) -> usize {
        self.state.lock().expect("lock").attempts
    }

    /// Notifications for `order_id`.
    pub fn for_order(&self, order_id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.body["orderId"].as_str() == Some(order_id))
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut state = state.lock().expect("lock");
    state.attempts += 1;
    if state.failures_left > 0 {
        state.failures_left -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.push(Received {
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    });
    StatusCode::OK
}
