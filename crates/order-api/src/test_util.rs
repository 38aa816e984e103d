//! Helpers of the unit tests.

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Request, StatusCode},
};
use tower::ServiceExt;

/// Sends `request` to `app`: status, headers and the body as text.
pub async fn send(app: &Router, request: Request<Body>) -> (StatusCode, HeaderMap, String) {
    let response = app.clone().oneshot(request).await.expect("response");
    let status = response.status();
    let headers = response.headers().clone();
    let body = axum::body::to_bytes(response.into_body(), 16 * 1024 * 1024)
        .await
        .expect("body");
    (status, headers, String::from_utf8_lossy(&body).into_owned())
}
