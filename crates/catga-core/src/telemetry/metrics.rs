//! Metrics: one process-wide Prometheus recorder rendered on `/metrics`, and
//! the request counters and latency histograms of every HTTP route.

use std::{sync::OnceLock, time::Instant};

use axum::{
    Router,
    extract::{Request, State},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::contracts::metrics as names;

/// Latency buckets in seconds, from sub-millisecond to the 10 s request timeout.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full(names::REQUEST_DURATION.to_owned()),
                    &DURATION_BUCKETS,
                )
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed; then ours simply
            // renders nothing, which the metrics tests would catch.
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed");
            }
            handle
        })
        .clone()
}

/// `GET /metrics` in the Prometheus text format.
pub fn metrics_router() -> Router {
    let handle = metrics_handle();
    Router::new().route(
        "/metrics",
        get(move || {
            let handle = handle.clone();
            async move {
                handle.run_upkeep();
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    handle.render(),
                )
                    .into_response()
            }
        }),
    )
}

/// Middleware recording `catga_requests_total` and `catga_request_duration`
/// per route template and standard method (never the raw path or an invented
/// method, so hostile traffic cannot grow `/metrics`).
pub async fn record_http_metrics(
    State(service): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let operation = super::http::http_operation(&request);
    let response = next.run(request).await;
    let status = response.status();
    let outcome = if status.is_server_error() {
        "error"
    } else if status.is_client_error() {
        "rejected"
    } else {
        "success"
    };
    metrics::counter!(names::REQUESTS_TOTAL, "service" => service, "kind" => "http", "operation" => operation.clone(), "outcome" => outcome, "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!(names::REQUEST_DURATION, "service" => service, "kind" => "http", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    response
}
