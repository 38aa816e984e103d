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
mod rate_limit;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    error_handling::HandleErrorLayer,
    extract::{DefaultBodyLimit, Request, State},
    http::StatusCode,
    middleware::Next,
    response::{IntoResponse, Response},
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
pub use rate_limit::{RateLimit, RateLimitSettings};

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
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
    /// API requests handled at once (health and metrics are not counted).
    pub max_concurrent_requests: usize,
    /// Requests per caller; `None` when off.
    pub rate_limit: Option<Arc<RateLimit>>,
}

/// The public order-api application: the API and its OpenAPI document. The
/// probes and `/metrics` are on [`ops_app`], served on another port.
pub fn app(state: AppState) -> Router {
    let (max_body_bytes, body_timeout) = (state.max_body_bytes, state.body_timeout);
    let (rate_limit, authenticator) = (state.rate_limit.clone(), state.authenticator.clone());
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
        .layer(admission)
        // Outside the admission limit: a slow body is waited for without
        // holding a permit, so slow clients cannot starve fast ones.
        .layer(axum::middleware::from_fn_with_state(
            (max_body_bytes, body_timeout),
            read_body_first,
        ));
    // Outermost: a flood is refused before its bodies are read.
    let api = match rate_limit {
        Some(limit) => api.layer(axum::middleware::from_fn_with_state(
            (limit, authenticator),
            rate_limit::limit_per_caller,
        )),
        None => api,
    };
    api.merge(docs::router())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            telemetry::HttpMetrics::new(services::ORDER_API),
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

/// Reads the whole body (within `Http__BodyTimeoutSeconds`) before the
/// request goes on.
async fn read_body_first(
    State((max_body_bytes, body_timeout)): State<(usize, Duration)>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let request = catga_core::http::read_body_within(request, max_body_bytes, body_timeout).await?;
    Ok(next.run(request).await)
}

/// `/health/*` (with each dependency's state) and `/metrics`, for the kubelet
/// and Prometheus on `Http__OpsPort`: not reachable through the LoadBalancer.
pub fn ops_app(health: Health) -> Router {
    catga_core::service::ops_router(health, services::ORDER_API)
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
