//! Installs logging (text or JSON) and OpenTelemetry trace export.

use opentelemetry::{KeyValue, global, trace::TracerProvider as _};
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::{Resource, propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use super::json::json_log_layer;
use crate::config::{CommonSettings, LogFormat, TraceExport};

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
