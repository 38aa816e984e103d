//! The server span of every HTTP request and the trace layer that makes it.

use axum::{extract::MatchedPath, response::Response};
use tracing::Span;

use super::propagation::{continue_from_http, record_ids};

/// The server span of an HTTP request, continuing an incoming `traceparent`.
/// Named `METHOD /route/template`, what Jaeger lists as the operation.
pub fn http_server_span(request: &axum::http::Request<axum::body::Body>) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let span = tracing::info_span!(
        "http request",
        otel.name = %format!("{} {route}", request.method()),
        otel.kind = "server",
        http.request.method = %request.method(),
        http.route = route,
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
        trace_id = tracing::field::Empty,
        span_id = tracing::field::Empty,
    );
    continue_from_http(&span, request.headers());
    record_ids(&span);
    span
}

/// The trace layer every service's router wears.
pub type HttpTraceLayer = tower_http::trace::TraceLayer<
    tower_http::classify::SharedClassifier<tower_http::classify::ServerErrorsAsFailures>,
    fn(&axum::http::Request<axum::body::Body>) -> Span,
    (),
    fn(&Response, std::time::Duration, &Span),
    (),
    (),
    (),
>;

/// A `tower_http` trace layer producing [`http_server_span`]s.
pub fn http_trace_layer() -> HttpTraceLayer {
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(http_server_span as fn(&axum::http::Request<axum::body::Body>) -> Span)
        .on_request(())
        .on_response(record_status as fn(&Response, std::time::Duration, &Span))
        // The status is on the span; a 503 readiness answer is not an error to log.
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
}

fn record_status(response: &Response, latency: std::time::Duration, span: &Span) {
    span.record("http.response.status_code", response.status().as_u16());
    tracing::debug!(
        status = response.status().as_u16(),
        latency_ms = latency.as_millis(),
        "request finished"
    );
}
