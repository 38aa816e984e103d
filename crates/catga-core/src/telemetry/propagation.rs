//! W3C trace context (`traceparent`) in and out of NATS message headers and
//! HTTP headers, through the one propagator [`init`](super::init()) installs.

use axum::http::HeaderMap;
use opentelemetry::{
    global,
    propagation::{Extractor, Injector},
    trace::TraceContextExt,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Records the OpenTelemetry trace and span ids on `span` (fields `trace_id`
/// and `span_id`, declared empty at creation), so every log line inside it
/// can be found from the trace and the other way round.
pub fn record_ids(span: &Span) {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if span_context.is_valid() {
        span.record("trace_id", tracing::field::display(span_context.trace_id()));
        span.record("span_id", tracing::field::display(span_context.span_id()));
    }
}

struct PairInjector<'a>(&'a mut Vec<(String, String)>);

impl Injector for PairInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.retain(|(name, _)| !name.eq_ignore_ascii_case(key));
        self.0.push((key.to_owned(), value));
    }
}

struct PairExtractor<'a>(&'a [(String, String)]);

impl Extractor for PairExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(key))
            .map(|(_, value)| value.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(name, _)| name.as_str()).collect()
    }
}

/// Writes the current span's context (`traceparent`) into message headers.
pub fn inject_into_message(headers: &mut Vec<(String, String)>) {
    let context = Span::current().context();
    global::get_text_map_propagator(|p| p.inject_context(&context, &mut PairInjector(headers)));
}

/// Makes the context in message headers the parent of `span`.
pub fn continue_from_message(span: &Span, headers: &[(String, String)]) {
    let parent = global::get_text_map_propagator(|p| p.extract(&PairExtractor(headers)));
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// Writes the current span's context into outgoing HTTP headers.
pub fn inject_into_http(headers: &mut HeaderMap) {
    let context = Span::current().context();
    global::get_text_map_propagator(|p| {
        p.inject_context(&context, &mut opentelemetry_http::HeaderInjector(headers));
    });
}

/// Makes the context in incoming HTTP headers the parent of `span`.
pub fn continue_from_http(span: &Span, headers: &HeaderMap) {
    let parent = global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(headers))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}
