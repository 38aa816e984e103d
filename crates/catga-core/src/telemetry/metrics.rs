//! Metrics: one process-wide Prometheus recorder rendered on `/metrics`, and
//! the request counters and latency histograms of every HTTP route.

use std::{
    collections::HashMap,
    sync::{Arc, OnceLock, PoisonError, RwLock},
    time::Instant,
};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::StatusCode,
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

/// The HTTP series of one service, each registered on the first request
/// that needs it and kept: a request is then counted without formatting its
/// labels or looking its series up in the recorder.
#[derive(Clone)]
pub struct HttpMetrics {
    service: &'static str,
    /// Per route template: per standard method and status, its series.
    routes: Arc<RwLock<HashMap<String, Vec<HttpSeries>>>>,
}

#[derive(Clone)]
struct HttpSeries {
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

impl HttpMetrics {
    pub fn new(service: &'static str) -> Self {
        Self {
            service,
            routes: Arc::default(),
        }
    }

    fn series(&self, method: &'static str, route: &str, status: StatusCode) -> HttpSeries {
        let status = status.as_u16();
        let found = |routes: &HashMap<String, Vec<HttpSeries>>| {
            routes.get(route).and_then(|series| {
                series
                    .iter()
                    .find(|s| s.method == method && s.status == status)
                    .cloned()
            })
        };
        if let Some(series) = found(&self.routes.read().unwrap_or_else(PoisonError::into_inner)) {
            return series;
        }
        let mut routes = self.routes.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(series) = found(&routes) {
            return series;
        }
        let outcome = if status >= 500 {
            "error"
        } else if status >= 400 {
            "rejected"
        } else {
            "success"
        };
        let operation = super::http::operation_label(method, route);
        let series = HttpSeries {
            method,
            status,
            requests: metrics::counter!(names::REQUESTS_TOTAL, "service" => self.service, "kind" => "http", "operation" => operation.clone(), "outcome" => outcome, "status" => status.to_string()),
            duration: metrics::histogram!(names::REQUEST_DURATION, "service" => self.service, "kind" => "http", "operation" => operation),
        };
        routes
            .entry(route.to_owned())
            .or_default()
            .push(series.clone());
        series
    }
}

/// Middleware recording `catga_requests_total` and `catga_request_duration`
/// per route template and standard method (never the raw path or an invented
/// method, so hostile traffic cannot grow `/metrics`).
pub async fn record_http_metrics(
    State(metrics): State<HttpMetrics>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let method = super::http::method_label(request.method());
    let route = request.extensions().get::<MatchedPath>().cloned();
    let response = next.run(request).await;
    let series = metrics.series(
        method,
        route
            .as_ref()
            .map_or(super::http::UNMATCHED_ROUTE, MatchedPath::as_str),
        response.status(),
    );
    series.requests.increment(1);
    series.duration.record(started.elapsed().as_secs_f64());
    response
}
