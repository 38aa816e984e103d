//! The HTTP API: the app factory and its state. Failures are [`ApiError`]s
//! (`error.rs`); the `Idempotency-Key` flow of order creation is in
//! `idempotency.rs`.

pub mod docs;
mod error;
mod extract;
mod idempotency;
pub mod openapi;
mod orders;
mod products;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::DefaultBodyLimit,
    http::StatusCode,
    response::IntoResponse,
    routing::{get, post, put},
};
use catga_core::{
    contracts::services, health::Health, idempotency::IdempotencyStore, messaging::Publisher,
    telemetry,
};
use tower::{ServiceBuilder, limit::GlobalConcurrencyLimitLayer};

use crate::auth::{self, Authenticator};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

pub use error::{ApiError, RETRY_AFTER_SECONDS};
pub use orders::{CreateOrderRequest, OrderItemRequest, OrderPage};
pub use products::ProductUpsert;

/// Longest any request may take; the answer is then 503 with `Retry-After`.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an accepted command may wait for JetStream's acknowledgement
/// before the client is told to retry. Well under the request timeout, so an
/// outage answers 503 promptly instead of hanging.
pub const PUBLISH_TIMEOUT: Duration = Duration::from_secs(5);

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<dyn crate::ApiStore>,
    pub publisher: Arc<dyn Publisher>,
    /// `None` when `Catga__EnableIdempotency` is false: `Idempotency-Key` is ignored.
    pub idempotency: Option<Arc<dyn IdempotencyStore>>,
    pub idempotency_ttl: Duration,
    /// Who is calling: every API route but the catalog and the docs is
    /// behind it.
    pub authenticator: Authenticator,
    pub max_body_bytes: usize,
    /// API requests handled at once (health and metrics are not counted).
    pub max_concurrent_requests: usize,
}

/// The order-api application: API, OpenAPI document, health and metrics.
pub fn app(state: AppState, health: Health) -> Router {
    let max_body_bytes = state.max_body_bytes;
    // One limit for the whole API, shared by every route; an overload is
    // answered 503 at once (load shedding) rather than queued without bound.
    let admission = ServiceBuilder::new()
        .layer(HandleErrorLayer::new(overloaded))
        .load_shed()
        .layer(GlobalConcurrencyLimitLayer::new(
            state.max_concurrent_requests.max(1),
        ));
    // A bearer token on every API route except reading the catalog and the
    // API's own description.
    let protected = Router::new()
        .route("/api/orders", post(orders::create).get(orders::list))
        .route("/api/orders/{order_id}", get(orders::get_one))
        .route("/api/orders/{order_id}/cancel", post(orders::cancel))
        .route("/api/products/{product_id}", put(products::upsert))
        .route_layer(axum::middleware::from_fn_with_state(
            state.authenticator.clone(),
            auth::authenticate,
        ));
    let api = Router::new()
        .route("/api/products", get(products::list))
        .route(docs::OPENAPI_PATH, get(openapi::document))
        .merge(protected)
        .with_state(state)
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(admission);
    api.merge(docs::router())
        .merge(catga_core::health::router(health))
        .merge(telemetry::metrics_router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            services::ORDER_API,
            telemetry::record_http_metrics,
        ))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            REQUEST_TIMEOUT,
        ))
        .layer(CatchPanicLayer::custom(|panic| {
            ApiError::panicked(panic).into_response()
        }))
        .layer(telemetry::http_trace_layer())
}

/// More API requests in flight than `Http__MaxConcurrentRequests`. Counted
/// with the other 503s in `catga_requests_total` (the metrics layer is outside).
async fn overloaded(_: tower::BoxError) -> ApiError {
    ApiError::Overloaded
}

async fn not_found() -> ApiError {
    ApiError::NoSuchRoute
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed
}

#[cfg(test)]
mod tests;
