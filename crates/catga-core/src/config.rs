//! Settings shared by the services, read from `Section__Key` environment
//! variables (the deployment guide's names).
//!
//! Everything parses from an [`Env`] map so tests build configurations without
//! touching the process environment. A bad value is a [`ConfigError`] whose
//! display is one line naming the setting; binaries print it and exit.

use std::{collections::HashMap, fmt, str::FromStr, time::Duration};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

/// A snapshot of configuration variables.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

/// A setting whose value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(setting: &str, message: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            message: message.into(),
        }
    }
}

impl Env {
    /// The process environment.
    pub fn from_process() -> Self {
        Self {
            vars: std::env::vars().collect(),
        }
    }

    /// A fixed map, for tests and embedding.
    pub fn from_pairs<K: Into<String>, V: Into<String>>(
        pairs: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        Self {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// A copy with `key` set to `value`.
    pub fn with(mut self, key: &str, value: &str) -> Self {
        self.vars.insert(key.to_owned(), value.to_owned());
        self
    }

    /// The trimmed value of `key`; unset and blank are the same.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The first of `keys` that is set.
    pub fn get_any(&self, keys: &[&str]) -> Option<&str> {
        keys.iter().find_map(|key| self.get(key))
    }

    /// Parses `key` with `FromStr`, or returns `default` when unset.
    pub fn parse_or<T>(&self, key: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => raw
                .parse()
                .map_err(|err| ConfigError::new(key, format!("{raw:?} is not valid: {err}"))),
        }
    }

    /// A boolean accepting `true/false`, `1/0`, `yes/no` (any case).
    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => parse_bool(raw)
                .ok_or_else(|| ConfigError::new(key, format!("{raw:?} is not true or false"))),
        }
    }

    /// A whole number within `range`.
    pub fn number_in<T>(
        &self,
        key: &str,
        default: T,
        range: std::ops::RangeInclusive<T>,
    ) -> Result<T, ConfigError>
    where
        T: FromStr + PartialOrd + fmt::Display + Copy,
        T::Err: fmt::Display,
    {
        let value = self.parse_or(key, default)?;
        if range.contains(&value) {
            Ok(value)
        } else {
            Err(ConfigError::new(
                key,
                format!(
                    "{value} is out of range {}..={}",
                    range.start(),
                    range.end()
                ),
            ))
        }
    }

    /// A duration given in whole seconds within `range`.
    pub fn seconds_in(
        &self,
        key: &str,
        default: u64,
        range: std::ops::RangeInclusive<u64>,
    ) -> Result<Duration, ConfigError> {
        self.number_in(key, default, range).map(Duration::from_secs)
    }
}

fn parse_bool(raw: &str) -> Option<bool> {
    match raw.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// Setting names, so every reader and every manifest test uses the same strings.
pub mod keys {
    pub const NATS_URL: &str = "NATS__Url";
    pub const NATS_QUEUE_GROUP: &str = "NATS__QueueGroup";
    pub const NATS_STREAM_REPLICAS: &str = "NATS__StreamReplicas";
    pub const NATS_ACK_WAIT_SECONDS: &str = "NATS__AckWaitSeconds";
    pub const REDIS_CONFIGURATION: &str = "Redis__Configuration";
    pub const REDIS_PASSWORD: &str = "REDIS_PASSWORD";
    pub const ENABLE_IDEMPOTENCY: &str = "Catga__EnableIdempotency";
    pub const MAX_RETRY_ATTEMPTS: &str = "Catga__MaxRetryAttempts";
    pub const IDEMPOTENCY_TTL_SECONDS: &str = "Catga__IdempotencyTtlSeconds";
    pub const SHUTDOWN_GRACE_SECONDS: &str = "Catga__ShutdownGraceSeconds";
    pub const HTTP_PORT: &str = "Http__Port";
    pub const HTTP_MAX_BODY_BYTES: &str = "Http__MaxBodyBytes";
    pub const HTTP_MAX_CONCURRENT_REQUESTS: &str = "Http__MaxConcurrentRequests";
    pub const OTEL_SERVICE_NAME: &str = "OpenTelemetry__ServiceName";
    pub const OTEL_SERVICE_NAME_STD: &str = "OTEL_SERVICE_NAME";
    pub const OTEL_JAEGER_ENDPOINT: &str = "OpenTelemetry__JaegerEndpoint";
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    pub const OTEL_SDK_DISABLED: &str = "OTEL_SDK_DISABLED";
    pub const LOG_LEVEL: &str = "Logging__Level";
    pub const LOG_FORMAT: &str = "Logging__Format";
    pub const WEBHOOK_URL: &str = "Notification__WebhookUrl";
    pub const WEBHOOK_TIMEOUT_SECONDS: &str = "Notification__WebhookTimeoutSeconds";
    pub const JWT_SECRET: &str = "Auth__JwtSecret";
    /// The identity provider's issuer URL; its OIDC discovery document gives the keys.
    pub const AUTH_AUTHORITY: &str = "Auth__Authority";
    /// A JWKS URL used directly (instead of discovery).
    pub const AUTH_JWKS_URL: &str = "Auth__JwksUrl";
    /// The `iss` tokens must carry (defaults to the authority).
    pub const AUTH_ISSUER: &str = "Auth__Issuer";
    /// The `aud` tokens must carry, when set.
    pub const AUTH_AUDIENCE: &str = "Auth__Audience";
    /// The claim naming the customer (default `sub`).
    pub const AUTH_CUSTOMER_CLAIM: &str = "Auth__CustomerClaim";
    /// The claim carrying roles (default `role`).
    pub const AUTH_ADMIN_CLAIM: &str = "Auth__AdminClaim";
    /// The value of that claim that makes an admin (default `admin`).
    pub const AUTH_ADMIN_VALUE: &str = "Auth__AdminValue";
    /// `true` lets a distributed order-api run without authentication.
    pub const AUTH_ALLOW_ANONYMOUS: &str = "Auth__AllowAnonymous";
}

/// Settings every service has.
#[derive(Debug, Clone)]
pub struct CommonSettings {
    pub http_port: u16,
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
    fn from_env(env: &Env, warnings: &mut Vec<String>) -> Result<Self, ConfigError> {
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
            ConfigError::new(keys::OTEL_JAEGER_ENDPOINT, format!("not a URL: {err}"))
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
                warnings.push(format!(
                    "{}={raw} {what}; exporting to {endpoint} (Jaeger's OTLP/HTTP receiver) instead. \
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
        tracing_subscriber::EnvFilter::try_new(&log_level)
            .map_err(|err| ConfigError::new(keys::LOG_LEVEL, err.to_string()))?;
        let mut warnings = Vec::new();
        let traces = TraceExport::from_env(env, &mut warnings)?;
        Ok(Self {
            http_port: env.number_in(keys::HTTP_PORT, default_port, 1..=u16::MAX)?,
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

/// How to reach NATS and how the JetStream topology is shaped. Server URLs
/// may carry credentials: `Debug` and [`NatsSettings::redacted_servers`] hide them.
#[derive(Clone)]
pub struct NatsSettings {
    pub servers: Vec<String>,
    pub queue_group: String,
    pub stream_replicas: usize,
    pub ack_wait: Duration,
    /// Deliveries before a message is dead-lettered (`Catga__MaxRetryAttempts`).
    pub max_deliver: i64,
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("servers", &self.redacted_servers())
            .field("queue_group", &self.queue_group)
            .field("stream_replicas", &self.stream_replicas)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .finish()
    }
}

impl Default for NatsSettings {
    /// Local NATS and the default topology settings.
    fn default() -> Self {
        Self {
            servers: vec![Self::DEFAULT_URL.to_owned()],
            queue_group: crate::contracts::consumers::ORDER_PROCESSING.to_owned(),
            stream_replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
        }
    }
}

impl NatsSettings {
    /// The server URLs with any password or token replaced by `***`, for logs.
    pub fn redacted_servers(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| match url::Url::parse(server) {
                Ok(mut url) if !url.username().is_empty() || url.password().is_some() => {
                    let _ = url.set_username("***");
                    let _ = url.set_password(None);
                    url.to_string()
                }
                _ => server.clone(),
            })
            .collect()
    }

    pub const DEFAULT_URL: &'static str = "nats://127.0.0.1:4222";

    /// Reads NATS settings; `None` when `NATS__Url` is unset and `required` is false.
    pub fn from_env(env: &Env, required: bool) -> Result<Option<Self>, ConfigError> {
        let raw = match env.get(keys::NATS_URL) {
            Some(raw) => raw,
            None if required => Self::DEFAULT_URL,
            None => return Ok(None),
        };
        let servers = parse_nats_servers(raw)?;
        let queue_group = env
            .get(keys::NATS_QUEUE_GROUP)
            .unwrap_or(crate::contracts::consumers::ORDER_PROCESSING)
            .to_owned();
        if !queue_group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                keys::NATS_QUEUE_GROUP,
                format!("{queue_group:?} may only contain letters, digits, '-' and '_'"),
            ));
        }
        Ok(Some(Self {
            servers,
            queue_group,
            stream_replicas: env.number_in(keys::NATS_STREAM_REPLICAS, 1, 1..=5)?,
            ack_wait: env.seconds_in(keys::NATS_ACK_WAIT_SECONDS, 30, 1..=3600)?,
            max_deliver: env.number_in(keys::MAX_RETRY_ATTEMPTS, 5, 1..=100)?,
        }))
    }
}

fn parse_nats_servers(raw: &str) -> Result<Vec<String>, ConfigError> {
    let mut servers = Vec::new();
    for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let with_scheme = if part.contains("://") {
            part.to_owned()
        } else {
            format!("nats://{part}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|err| {
            ConfigError::new(keys::NATS_URL, format!("{part:?} is not a URL: {err}"))
        })?;
        if !matches!(url.scheme(), "nats" | "tls" | "ws" | "wss") {
            return Err(ConfigError::new(
                keys::NATS_URL,
                format!("{part:?} must use nats://, tls://, ws:// or wss://"),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                keys::NATS_URL,
                format!("{part:?} has no host"),
            ));
        }
        servers.push(with_scheme);
    }
    if servers.is_empty() {
        return Err(ConfigError::new(keys::NATS_URL, "no server given"));
    }
    Ok(servers)
}

/// How to reach Redis. Holds the password; its `Display` never shows it.
#[derive(Clone)]
pub struct RedisSettings {
    host: String,
    port: u16,
    database: i64,
    username: Option<String>,
    password: Option<String>,
    tls: bool,
    pub connect_timeout: Duration,
}

impl fmt::Debug for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for RedisSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let auth = if self.password.is_some() { "***@" } else { "" };
        write!(
            f,
            "{scheme}://{auth}{}:{}/{}",
            self.host, self.port, self.database
        )
    }
}

impl RedisSettings {
    pub const DEFAULT_CONFIGURATION: &'static str = "127.0.0.1:6379";

    /// Accepts StackExchange.Redis style `host:port[,password=…][,ssl=true]`
    /// (what the guide's `Redis__Configuration` uses) and `redis://` /
    /// `rediss://` URLs. `REDIS_PASSWORD`, when set, supplies the password.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let raw = env
            .get(keys::REDIS_CONFIGURATION)
            .unwrap_or(Self::DEFAULT_CONFIGURATION);
        let mut settings = if raw.starts_with("redis://") || raw.starts_with("rediss://") {
            Self::parse_url(raw)?
        } else {
            Self::parse_options(raw)?
        };
        if let Some(password) = env.get(keys::REDIS_PASSWORD) {
            settings.password = Some(password.to_owned());
        }
        Ok(settings)
    }

    fn parse_url(raw: &str) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::new(keys::REDIS_CONFIGURATION, message);
        // Never echo the raw value: it may hold a password.
        let url = url::Url::parse(raw).map_err(|e| err(format!("not a valid URL: {e}")))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| err("the URL has no host".to_owned()))?
            .to_owned();
        let database = match url.path().trim_start_matches('/') {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| err(format!("database {db:?} is not a number")))?,
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8()
                .map(|s| s.into_owned())
                .map_err(|_| err("credentials are not valid UTF-8".to_owned()))
        };
        Ok(Self {
            host,
            port: url.port().unwrap_or(6379),
            database,
            username: match url.username() {
                "" => None,
                user => Some(decode(user)?),
            },
            password: url.password().map(decode).transpose()?,
            tls: url.scheme() == "rediss",
            connect_timeout: Duration::from_secs(5),
        })
    }

    fn parse_options(raw: &str) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::new(keys::REDIS_CONFIGURATION, message);
        let mut parts = raw.split(',').map(str::trim).filter(|p| !p.is_empty());
        let endpoint = parts
            .next()
            .ok_or_else(|| err("no host:port given".to_owned()))?;
        if endpoint.contains('=') {
            return Err(err("must start with host:port".to_owned()));
        }
        let (host, port) = match endpoint.rsplit_once(':') {
            Some((host, port)) => (
                host,
                port.parse::<u16>()
                    .map_err(|_| err(format!("port {port:?} is not a number")))?,
            ),
            None => (endpoint, 6379),
        };
        if host.is_empty() {
            return Err(err("host is empty".to_owned()));
        }
        let mut settings = Self {
            host: host.to_owned(),
            port,
            database: 0,
            username: None,
            password: None,
            tls: false,
            connect_timeout: Duration::from_secs(5),
        };
        for option in parts {
            let (name, value) = option.split_once('=').ok_or_else(|| {
                err(format!(
                    "option {option:?} is not name=value (only one endpoint is supported)"
                ))
            })?;
            match name.trim().to_ascii_lowercase().as_str() {
                "password" => settings.password = Some(value.to_owned()),
                "user" => settings.username = Some(value.to_owned()),
                "ssl" => {
                    settings.tls = parse_bool(value)
                        .ok_or_else(|| err(format!("ssl={value:?} is not true or false")))?
                }
                "defaultdatabase" => {
                    settings.database = value
                        .parse()
                        .map_err(|_| err(format!("defaultDatabase={value:?} is not a number")))?
                }
                "connecttimeout" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        err(format!("connectTimeout={value:?} is not milliseconds"))
                    })?;
                    settings.connect_timeout = Duration::from_millis(ms);
                }
                // Accepted for compatibility with the .NET client's strings; our
                // client always retries in the background, never aborts.
                "abortconnect" | "connectretry" | "synctimeout" | "asynctimeout" | "keepalive" => {}
                other => return Err(err(format!("unknown option {other:?}"))),
            }
        }
        Ok(settings)
    }

    /// The connection URL for the client library. Contains the password: never log it.
    pub fn connection_url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let auth = match (&self.username, &self.password) {
            (Some(user), Some(pw)) => format!("{}:{}@", enc(user), enc(pw)),
            (None, Some(pw)) => format!(":{}@", enc(pw)),
            (Some(user), None) => format!("{}@", enc(user)),
            (None, None) => String::new(),
        };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{auth}{host}:{}/{}", self.port, self.database)
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
    fn redis_accepts_the_guide_format_and_urls() {
        let env = Env::from_pairs([("Redis__Configuration", "redis-master:6379")]);
        let redis = RedisSettings::from_env(&env).expect("valid");
        assert_eq!(redis.connection_url(), "redis://redis-master:6379/0");

        let env = Env::from_pairs([(
            "Redis__Configuration",
            "cache:6380,password=p@ss w,ssl=true,abortConnect=false",
        )]);
        let redis = RedisSettings::from_env(&env).expect("valid");
        assert_eq!(redis.connection_url(), "rediss://:p%40ss%20w@cache:6380/0");
        assert_eq!(redis.to_string(), "rediss://***@cache:6380/0");

        let env = Env::from_pairs([
            ("Redis__Configuration", "redis://user:old@h:1/2"),
            ("REDIS_PASSWORD", "new"),
        ]);
        let redis = RedisSettings::from_env(&env).expect("valid");
        assert_eq!(redis.connection_url(), "redis://user:new@h:1/2");
        assert!(!format!("{redis:?}").contains("new"));
    }

    #[test]
    fn bad_redis_configuration_names_the_setting_without_the_secret() {
        for raw in [
            "host:notaport",
            "host:1,bogus=1",
            "host:1,ssl=maybe",
            ",password=x",
            "redis://:secret@/0",
        ] {
            let env = Env::from_pairs([("Redis__Configuration", raw)]);
            let err = RedisSettings::from_env(&env).expect_err(raw);
            assert_eq!(err.setting, "Redis__Configuration", "{raw}");
            assert!(!err.to_string().contains("secret"));
            assert!(!err.to_string().contains('\n'));
        }
    }

    #[test]
    fn nats_urls_are_a_comma_separated_list() {
        let env = Env::from_pairs([(
            "NATS__Url",
            "nats://nats-0.nats:4222, nats-1.nats:4222,nats://nats-2.nats:4222",
        )]);
        let nats = NatsSettings::from_env(&env, true)
            .expect("valid")
            .expect("set");
        assert_eq!(nats.servers.len(), 3);
        assert_eq!(nats.servers[1], "nats://nats-1.nats:4222");
        assert_eq!(nats.queue_group, "order-processing");
        assert_eq!(nats.max_deliver, 5);

        let env = Env::from_pairs([(
            "NATS__Url",
            "nats://app:s3cret@nats:4222,nats://token@n2:4222",
        )]);
        let nats = NatsSettings::from_env(&env, true)
            .expect("valid")
            .expect("set");
        let shown = format!("{:?} {:?}", nats, nats.redacted_servers());
        assert!(
            !shown.contains("s3cret") && !shown.contains("token"),
            "{shown}"
        );

        assert!(
            NatsSettings::from_env(&Env::default(), false)
                .expect("valid")
                .is_none()
        );
        for bad in ["http://x:4222", ",", "nats://:4222"] {
            let env = Env::from_pairs([("NATS__Url", bad)]);
            let err = NatsSettings::from_env(&env, false).expect_err(bad);
            assert_eq!(err.setting, "NATS__Url");
        }
    }

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
        let env = Env::from_pairs([("Logging__Format", "xml")]);
        assert_eq!(
            CommonSettings::from_env(&env, 1, "d")
                .expect_err("xml")
                .setting,
            "Logging__Format"
        );
    }
}
