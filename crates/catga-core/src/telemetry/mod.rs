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
//!
//! - [`init`](mod@init): installs logging and trace export for the process.
//! - [`json`]: the JSON log line format.
//! - [`propagation`]: trace context in and out of NATS and HTTP headers.
//! - [`http`]: the server span and trace layer of every router.
//! - [`metrics`]: the Prometheus recorder, `/metrics` and the HTTP request metrics.

pub mod http;
pub mod init;
pub mod json;
pub mod metrics;
pub mod propagation;

pub use self::http::{HttpTraceLayer, http_server_span, http_trace_layer};
pub use self::metrics::{HttpMetrics, metrics_handle, metrics_router, record_http_metrics};
pub use init::{TelemetryGuard, init};
pub use json::{JsonSpanFields, json_log_layer};
pub use propagation::{continue_from_message, inject_into_http, inject_into_message, record_ids};

/// Log lines written to memory, for tests that read what was logged.
#[cfg(test)]
#[derive(Clone, Default)]
pub(crate) struct Lines(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

#[cfg(test)]
impl Lines {
    /// Plain-text log lines of this thread, written here until the guard is
    /// dropped. On a current-thread runtime, its tasks' lines too.
    pub(crate) fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let lines = Self::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        (lines, tracing::subscriber::set_default(subscriber))
    }

    /// What was written, as text.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.written()).into_owned()
    }

    pub(crate) fn written(&self) -> Vec<u8> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

#[cfg(test)]
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
