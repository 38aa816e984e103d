//! Where spans go: the guide's `OpenTelemetry__JaegerEndpoint` and the standard
//! `OTEL_*` variables.

use super::{ConfigError, Env, keys};

/// Where spans go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceExport {
    /// No collector configured: spans still carry ids (in logs, propagated to
    /// other services) but are not exported.
    Off,
    /// OTLP/HTTP (protobuf) to this traces URL.
    Otlp { endpoint: String },
    /// The standard `OTEL_EXPORTER_OTLP_*` variables, read by the exporter.
    StandardEnv,
}

impl TraceExport {
    /// Chooses the exporter: `OTEL_SDK_DISABLED`, then the standard
    /// `OTEL_EXPORTER_OTLP_*` variables, then the guide's
    /// `OpenTelemetry__JaegerEndpoint` mapped to Jaeger's OTLP/HTTP receiver.
    pub(super) fn from_env(env: &Env, warnings: &mut Vec<String>) -> Result<Self, ConfigError> {
        if env.bool_or(keys::OTEL_SDK_DISABLED, false)? {
            return Ok(TraceExport::Off);
        }
        for key in [
            keys::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
            keys::OTEL_EXPORTER_OTLP_PROTOCOL,
        ] {
            if let Some(protocol) = env.get(key).filter(|p| *p != "http/protobuf") {
                return Err(ConfigError::new(
                    key,
                    format!("{protocol:?} is not supported; use http/protobuf (port 4318)"),
                ));
            }
        }
        if env
            .get_any(&[
                keys::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                keys::OTEL_EXPORTER_OTLP_ENDPOINT,
            ])
            .is_some()
        {
            return Ok(TraceExport::StandardEnv);
        }
        let Some(raw) = env.get(keys::OTEL_JAEGER_ENDPOINT) else {
            return Ok(TraceExport::Off);
        };
        let url = url::Url::parse(raw).map_err(|err| {
            ConfigError::new(keys::OTEL_JAEGER_ENDPOINT, "not a URL").caused_by(err)
        })?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| ConfigError::new(keys::OTEL_JAEGER_ENDPOINT, "the URL has no host"))?;
        let scheme = url.scheme();
        let endpoint = match url.port() {
            Some(4318) | None if url.path().ends_with("/v1/traces") => raw.to_owned(),
            Some(4318) => format!("{scheme}://{host}:4318/v1/traces"),
            port => {
                let endpoint = format!("{scheme}://{host}:4318/v1/traces");
                let what = match port {
                    Some(14268) => "is Jaeger's old Thrift collector port",
                    Some(4317) => "is OTLP/gRPC, which this build does not speak",
                    _ => "is not Jaeger's OTLP/HTTP port",
                };
                let shown = super::redacted_url(&url);
                warnings.push(format!(
                    "{}={shown} {what}; exporting to {endpoint} (Jaeger's OTLP/HTTP receiver) instead. \
                     Set {}={endpoint} (or OTEL_EXPORTER_OTLP_ENDPOINT={scheme}://{host}:4318) to silence this warning",
                    keys::OTEL_JAEGER_ENDPOINT,
                    keys::OTEL_JAEGER_ENDPOINT,
                ));
                endpoint
            }
        };
        Ok(TraceExport::Otlp { endpoint })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::config::CommonSettings;

    #[test]
    fn trace_export_honours_the_guide_and_the_standard() {
        let common =
            |pairs: Vec<(&str, &str)>| CommonSettings::from_env(&Env::from_pairs(pairs), 1, "s");
        let guide = common(vec![(
            "OpenTelemetry__JaegerEndpoint",
            "http://jaeger-collector:14268",
        )])
        .expect("valid");
        assert_eq!(
            guide.traces,
            TraceExport::Otlp {
                endpoint: "http://jaeger-collector:4318/v1/traces".into()
            }
        );
        assert_eq!(guide.warnings.len(), 1);
        assert!(
            guide.warnings[0].contains("Thrift"),
            "{}",
            guide.warnings[0]
        );
        let otlp = common(vec![(
            "OpenTelemetry__JaegerEndpoint",
            "http://jaeger:4318",
        )])
        .expect("valid");
        assert_eq!(
            otlp.traces,
            TraceExport::Otlp {
                endpoint: "http://jaeger:4318/v1/traces".into()
            }
        );
        assert!(otlp.warnings.is_empty());
        let standard = common(vec![
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OpenTelemetry__JaegerEndpoint", "http://jaeger:4318"),
        ])
        .expect("valid");
        assert_eq!(standard.traces, TraceExport::StandardEnv);
        assert_eq!(common(vec![]).expect("valid").traces, TraceExport::Off);
        assert_eq!(
            common(vec![("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")])
                .expect_err("grpc")
                .setting,
            "OTEL_EXPORTER_OTLP_PROTOCOL"
        );
        assert_eq!(
            common(vec![("OpenTelemetry__JaegerEndpoint", "jaeger")])
                .expect_err("bad")
                .setting,
            "OpenTelemetry__JaegerEndpoint"
        );
    }
}
