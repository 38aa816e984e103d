//! Settings every service has (port, names, logs, shutdown, traces) and the
//! idempotency settings (`Catga__*`).

use std::time::Duration;

use super::{ConfigError, Env, TraceExport, keys};
use crate::http::ServerLimits;

/// Connections one replica serves by default: far above the benchmark's 256
/// clients, and at the 64 KiB read buffer plus a 64 KiB body each, within
/// the pod's memory limit even when every one is held open by a slow client.
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub http_port: u16,
    /// Where `/health/*` and `/metrics` are served when not on `http_port`
    /// (order-api's ops port: its public port is behind the LoadBalancer).
    pub ops_port: Option<u16>,
    /// Deadlines and the connection limit of the HTTP server.
    pub http_limits: ServerLimits,
    pub service_name: String,
    pub log_level: String,
    pub log_format: LogFormat,
    /// How long a stopping service waits for in-flight work. Below Kubernetes'
    /// default 30 s termination grace, so the drain finishes before SIGKILL.
    pub shutdown_grace: Duration,
    pub traces: TraceExport,
    /// Warnings about accepted but outdated settings, logged once logging is up.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl CommonSettings {
    pub fn from_env(
        env: &Env,
        default_port: u16,
        default_service_name: &str,
    ) -> Result<Self, ConfigError> {
        let log_format = match env.get(keys::LOG_FORMAT).map(str::to_ascii_lowercase) {
            None => LogFormat::Text,
            Some(f) if f == "text" => LogFormat::Text,
            Some(f) if f == "json" => LogFormat::Json,
            Some(other) => {
                return Err(ConfigError::new(
                    keys::LOG_FORMAT,
                    format!("{other:?} is not text or json"),
                ));
            }
        };
        let log_level = env
            .get(keys::LOG_LEVEL)
            .or_else(|| env.get("RUST_LOG"))
            .unwrap_or("info")
            .to_owned();
        tracing_subscriber::EnvFilter::try_new(&log_level).map_err(|err| {
            ConfigError::new(
                keys::LOG_LEVEL,
                format!("{log_level:?} is not a log filter"),
            )
            .caused_by(err)
        })?;
        let mut warnings = Vec::new();
        let traces = TraceExport::from_env(env, &mut warnings)?;
        Ok(Self {
            http_port: env.number_in(keys::HTTP_PORT, default_port, 1..=u16::MAX)?,
            ops_port: None,
            http_limits: ServerLimits {
                header_timeout: env.seconds_in(keys::HTTP_HEADER_TIMEOUT_SECONDS, 10, 1..=300)?,
                max_connections: env.number_in(
                    keys::HTTP_MAX_CONNECTIONS,
                    DEFAULT_MAX_CONNECTIONS,
                    1..=100_000,
                )?,
            },
            service_name: env
                .get_any(&[keys::OTEL_SERVICE_NAME, keys::OTEL_SERVICE_NAME_STD])
                .unwrap_or(default_service_name)
                .to_owned(),
            log_level,
            log_format,
            shutdown_grace: env.seconds_in(keys::SHUTDOWN_GRACE_SECONDS, 20, 1..=3600)?,
            traces,
            warnings,
        })
    }
}

impl CommonSettings {
    /// Serves `/health/*` and `/metrics` on `Http__OpsPort` (default
    /// `default_ops_port`), which must differ from `Http__Port`.
    pub fn with_ops_port(mut self, env: &Env, default_ops_port: u16) -> Result<Self, ConfigError> {
        let ops_port = env.number_in(keys::HTTP_OPS_PORT, default_ops_port, 1..=u16::MAX)?;
        if ops_port == self.http_port {
            return Err(ConfigError::new(
                keys::HTTP_OPS_PORT,
                format!("{ops_port} is also {}", keys::HTTP_PORT),
            ));
        }
        self.ops_port = Some(ops_port);
        Ok(self)
    }

    /// The port answering `/health/ready` (for the `healthcheck` subcommand).
    pub fn health_port(&self) -> u16 {
        self.ops_port.unwrap_or(self.http_port)
    }
}

/// Idempotency and retry settings (`Catga__*`).
#[derive(Debug, Clone)]
pub struct CatgaSettings {
    pub enable_idempotency: bool,
    pub idempotency_ttl: Duration,
}

impl CatgaSettings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            enable_idempotency: env.bool_or(keys::ENABLE_IDEMPOTENCY, true)?,
            idempotency_ttl: env.seconds_in(
                keys::IDEMPOTENCY_TTL_SECONDS,
                86_400,
                60..=30 * 86_400,
            )?,
        })
    }

    /// Consumers depend on idempotency for exactly-once effects; turning it
    /// off there would silently allow double effects, so it is refused.
    pub fn require_idempotency(&self) -> Result<(), ConfigError> {
        if self.enable_idempotency {
            Ok(())
        } else {
            Err(ConfigError::new(
                keys::ENABLE_IDEMPOTENCY,
                "cannot be false for a consumer: exactly-once effects depend on it",
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_booleans_and_ranges() {
        let env = Env::from_pairs([
            ("Http__Port", "0"),
            ("Catga__EnableIdempotency", "nope"),
            ("Catga__MaxRetryAttempts", "7"),
        ]);
        let err = CommonSettings::from_env(&env, 8080, "x").expect_err("port 0");
        assert_eq!(
            err.to_string(),
            "invalid configuration: Http__Port: 0 is out of range 1..=65535"
        );
        assert_eq!(
            CatgaSettings::from_env(&env).expect_err("bool").setting,
            "Catga__EnableIdempotency"
        );
        let env = Env::from_pairs([("Http__Port", "9000"), ("Logging__Format", "JSON")]);
        let common = CommonSettings::from_env(&env, 8080, "order-api").expect("valid");
        assert_eq!(common.http_port, 9000);
        assert_eq!(common.log_format, LogFormat::Json);
        let env = Env::from_pairs([("OTEL_SERVICE_NAME", "Custom")]);
        assert_eq!(
            CommonSettings::from_env(&env, 1, "d")
                .expect("valid")
                .service_name,
            "Custom"
        );
        for (setting, value) in [
            ("Http__HeaderTimeoutSeconds", "0"),
            ("Http__MaxConnections", "none"),
        ] {
            let err = CommonSettings::from_env(&Env::from_pairs([(setting, value)]), 1, "d")
                .expect_err("invalid");
            assert_eq!(err.setting, setting);
        }
        let limits = CommonSettings::from_env(&Env::default(), 1, "d")
            .expect("valid")
            .http_limits;
        assert_eq!(limits.header_timeout, Duration::from_secs(10));
        assert_eq!(limits.max_connections, DEFAULT_MAX_CONNECTIONS);
        let env = Env::from_pairs([("Logging__Format", "xml")]);
        assert_eq!(
            CommonSettings::from_env(&env, 1, "d")
                .expect_err("xml")
                .setting,
            "Logging__Format"
        );
    }
}
