//! The server span of every HTTP request and the trace layer that makes it.

use axum::{extract::MatchedPath, http::Method, response::Response};
use tracing::Span;

use super::propagation::{continue_from_http, record_ids};

/// The route label of every request no route matched (any path).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method as a label: one of the standard methods, else `OTHER`, so
/// invented methods cannot add series or operations.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "OTHER",
    }
}

/// The route template a request matched, else [`UNMATCHED_ROUTE`].
pub fn route_label<B>(request: &axum::http::Request<B>) -> &str {
    request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
}

/// `METHOD /route/template` from bounded labels only: what Jaeger lists as
/// the operation and the `operation` label of the HTTP metrics.
pub fn operation_label(method: &str, route: &str) -> String {
    format!("{method} {route}")
}

/// [`operation_label`] of a request.
pub fn http_operation<B>(request: &axum::http::Request<B>) -> String {
    operation_label(method_label(request.method()), route_label(request))
}

/// The server span of an HTTP request, continuing an incoming `traceparent`.
/// Named by [`http_operation`].
pub fn http_server_span(request: &axum::http::Request<axum::body::Body>) -> Span {
    let route = route_label(request);
    let span = tracing::info_span!(
        "http request",
        otel.name = %http_operation(request),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invented_methods_and_unmatched_paths_share_one_label() {
        let request = |method: &str, path: &str| {
            axum::http::Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .expect("request")
        };
        assert_eq!(http_operation(&request("GET", "/x/1")), "GET unmatched");
        assert_eq!(
            http_operation(&request("BREW", "/pot/9")),
            "OTHER unmatched"
        );
        assert_eq!(http_operation(&request("patch", "/y")), "OTHER unmatched");
        assert_eq!(method_label(&Method::DELETE), "DELETE");
    }
}
