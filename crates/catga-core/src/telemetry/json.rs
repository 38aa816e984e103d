//! JSON log lines: one object per line, carrying the current span's trace and span ids.

use tracing_subscriber::fmt;

/// The span fields JSON log lines carry: the ids that lead to the span in
/// the trace, where its other attributes are.
const LOGGED_SPAN_FIELDS: [&str; 2] = ["trace_id", "span_id"];

/// Span fields for JSON log lines: `trace_id` and `span_id` only, as a JSON
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

#[cfg(test)]
mod tests {
    use tracing_subscriber::prelude::*;

    use super::*;
    use crate::telemetry::Lines;

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
        let written = lines.written();
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
