//! Logs, traces and metrics.
//!
//! Logs are `tracing` events, as text or JSON (`Logging__Format`), carrying the
//! trace and span ids of the request or message they belong to. Spans are
//! OpenTelemetry spans exported over OTLP/HTTP by a background thread, so a
//! slow or absent collector never delays a request. Trace context crosses
//! service boundaries as W3C `traceparent`, in HTTP and in NATS headers.
//! Metrics go to one process-wide Prometheus recorder rendered on `/metrics`;
//! every series carries a `service` label, so services embedded in one process
//! stay apart.

use std::{sync::OnceLock, time::Instant};

use axum::{
    Router,
    extract::{MatchedPath, Request, State},
    http::HeaderMap,
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use opentelemetry::{
    KeyValue, global,
    propagation::{Extractor, Injector},
    trace::{TraceContextExt, TracerProvider as _},
};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::{
    config::{CommonSettings, LogFormat, TraceExport},
    contracts::metrics as names,
};

/// Latency buckets in seconds, from sub-millisecond to the 10 s request timeout.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Keeps the tracer provider alive; flushes pending spans when dropped.
#[must_use = "dropping the guard shuts tracing down"]
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("trace export shutdown: {err}");
        }
    }
}

fn tracer_provider(settings: &CommonSettings) -> (SdkTracerProvider, Option<String>) {
    let resource = Resource::builder()
        .with_service_name(settings.service_name.clone())
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build();
    let builder = SdkTracerProvider::builder().with_resource(resource);
    let exporter = match &settings.traces {
        TraceExport::Off => None,
        TraceExport::Otlp { endpoint } => Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint.clone())
                .build(),
        ),
        TraceExport::StandardEnv => Some(
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .build(),
        ),
    };
    match exporter {
        None => (builder.build(), None),
        Some(Ok(exporter)) => (builder.with_batch_exporter(exporter).build(), None),
        Some(Err(err)) => (
            builder.build(),
            Some(format!(
                "trace export disabled: cannot build the OTLP exporter: {err}"
            )),
        ),
    }
}

/// The span fields JSON log lines carry: the ids that lead to the span in
/// the trace, where its other attributes are.
const LOGGED_SPAN_FIELDS: [&str; 2] = ["trace_id", "span_id"];

/// Span fields for JSON log lines: [`LOGGED_SPAN_FIELDS`] only, as a JSON
/// object, with fields recorded later spliced in. `tracing_subscriber`'s own
/// `JsonFields` formats every field of every span as it opens, and parses
/// and re-serialises the whole object on every `record`; profiling showed
/// that to cost a third of a request, for lines that are mostly never
/// written.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonSpanFields;

/// Passes on only the logged fields.
struct LoggedFields<'a, 'w>(&'a mut fmt::format::JsonVisitor<'w>);

impl tracing::field::Visit for LoggedFields<'_, '_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if LOGGED_SPAN_FIELDS.contains(&field.name()) {
            self.0.record_debug(field, value);
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if LOGGED_SPAN_FIELDS.contains(&field.name()) {
            self.0.record_str(field, value);
        }
    }
}

impl<'writer> fmt::FormatFields<'writer> for JsonSpanFields {
    fn format_fields<R: tracing_subscriber::field::RecordFields>(
        &self,
        mut writer: fmt::format::Writer<'writer>,
        fields: R,
    ) -> std::fmt::Result {
        let mut visitor = fmt::format::JsonVisitor::new(&mut writer);
        fields.record(&mut LoggedFields(&mut visitor));
        tracing_subscriber::field::VisitOutput::finish(visitor)
    }

    fn add_fields(
        &self,
        current: &'writer mut fmt::FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> std::fmt::Result {
        if current.fields.is_empty() {
            return self.format_fields(current.as_writer(), fields);
        }
        let mut added = String::new();
        self.format_fields(fmt::format::Writer::new(&mut added), fields)?;
        let entries = added
            .strip_prefix('{')
            .and_then(|rest| rest.strip_suffix('}'))
            .unwrap_or_default();
        if entries.is_empty() || !current.fields.ends_with('}') {
            return Ok(());
        }
        current.fields.pop();
        if !current.fields.ends_with('{') {
            current.fields.push(',');
        }
        current.fields.push_str(entries);
        current.fields.push('}');
        Ok(())
    }
}

/// The JSON log layer: one object per line, the event's fields flattened,
/// the current span's name and ids under `span`.
pub fn json_log_layer<S, W>(
    writer: W,
) -> fmt::Layer<S, JsonSpanFields, fmt::format::Format<fmt::format::Json>, W>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    W: for<'w> fmt::MakeWriter<'w> + 'static,
{
    fmt::layer()
        .json()
        .flatten_event(true)
        .with_current_span(true)
        .with_span_list(false)
        .fmt_fields(JsonSpanFields)
        .with_writer(writer)
}

/// Installs logging and tracing for the process. Later calls (tests, embedded
/// services) keep the first installation.
pub fn init(settings: &CommonSettings) -> TelemetryGuard {
    // W3C `traceparent`; inject and extract below go through this one propagator.
    global::set_text_map_propagator(TraceContextPropagator::new());
    let (provider, exporter_error) = tracer_provider(settings);
    let tracer = provider.tracer("catga");
    let filter = EnvFilter::try_new(&settings.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let otel = tracing_opentelemetry::layer().with_tracer(tracer);
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    let installed = match settings.log_format {
        LogFormat::Json => registry.with(json_log_layer(std::io::stdout)).try_init(),
        LogFormat::Text => registry.with(fmt::layer()).try_init(),
    };
    if installed.is_err() {
        tracing::debug!("log subscriber already installed");
        return TelemetryGuard { provider: None };
    }
    opentelemetry::global::set_tracer_provider(provider.clone());
    tracing::info!(service = %settings.service_name, version = env!("CARGO_PKG_VERSION"), traces = ?settings.traces, "starting");
    for warning in settings.warnings.iter().chain(&exporter_error) {
        tracing::warn!("{warning}");
    }
    TelemetryGuard {
        provider: Some(provider),
    }
}

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
    let parent = global::get_text_map_propagator(|p| {
        p.extract(&opentelemetry_http::HeaderExtractor(request.headers()))
    });
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
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
/// per route template (never the raw path, so cardinality stays bounded).
pub async fn record_http_metrics(
    State(service): State<&'static str>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status();
    let outcome = if status.is_server_error() {
        "error"
    } else if status.is_client_error() {
        "rejected"
    } else {
        "success"
    };
    let operation = format!("{method} {route}");
    metrics::counter!(names::REQUESTS_TOTAL, "service" => service, "kind" => "http", "operation" => operation.clone(), "outcome" => outcome, "status" => status.as_u16().to_string())
        .increment(1);
    metrics::histogram!(names::REQUEST_DURATION, "service" => service, "kind" => "http", "operation" => operation)
        .record(started.elapsed().as_secs_f64());
    response
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// Log lines written to memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn json_log_lines_carry_the_span_ids_recorded_after_it_opened() {
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber =
            tracing_subscriber::registry().with(json_log_layer(move || writer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!(
                "http request",
                http.route = "/api/orders",
                trace_id = tracing::field::Empty,
                span_id = tracing::field::Empty,
                status = tracing::field::Empty,
            );
            span.record("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736");
            span.record("span_id", "00f067aa0ba902b7");
            span.record("status", 202);
            span.in_scope(|| tracing::info!(quote = "a \"}\" inside", "inside"));
        });
        let written = lines.0.lock().expect("lines").clone();
        let line: serde_json::Value =
            serde_json::from_slice(written.trim_ascii()).expect("one JSON line");
        let span = &line["span"];
        assert_eq!(span["name"], "http request", "{line}");
        assert_eq!(
            span["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
            "{line}"
        );
        assert_eq!(span["span_id"], "00f067aa0ba902b7", "{line}");
        assert!(
            span.get("http.route").is_none(),
            "attributes stay in the trace: {line}"
        );
        assert!(
            span.get("status").is_none(),
            "attributes stay in the trace: {line}"
        );
        assert_eq!(line["message"], "inside", "{line}");
        assert_eq!(line["quote"], "a \"}\" inside", "{line}");
    }
}
