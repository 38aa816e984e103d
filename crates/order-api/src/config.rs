//! order-api settings.

use catga_core::config::{
    CatgaSettings, CommonSettings, ConfigError, Env, NatsSettings, RedisSettings, keys,
};
use notification_service::Channel;

pub use crate::auth::JwtSecret;

pub const DEFAULT_PORT: u16 = 8080;
/// The service name the deployment guide looks for in Jaeger.
pub const DEFAULT_SERVICE_NAME: &str = "OrderApi";

/// Where orders live and how commands travel.
#[derive(Debug, Clone)]
pub enum Mode {
    /// No `NATS__Url`: everything in one process on the in-memory transport
    /// and store. For trying the system out; nothing is persisted.
    Embedded {
        /// Notification channel of the embedded notification-service.
        channel: Channel,
    },
    /// NATS JetStream and Redis. Never falls back to embedded.
    Distributed {
        nats: NatsSettings,
        redis: RedisSettings,
    },
}

/// Enough for the 256 closed-loop clients of the benchmark at full speed
/// with room; an overload beyond it is shed instead of queued, which keeps
/// memory bounded (queued requests were 100 MB at 1024 in flight).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub mode: Mode,
    pub catga: CatgaSettings,
    /// `None` disables `PUT /api/products/{id}`.
    pub jwt_secret: Option<JwtSecret>,
    pub max_body_bytes: usize,
    /// API requests handled at once; more are refused with 503 at once.
    pub max_concurrent_requests: usize,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let mode = match NatsSettings::from_env(env, false)? {
            Some(nats) => Mode::Distributed {
                nats,
                redis: RedisSettings::from_env(env)?,
            },
            None => Mode::Embedded {
                channel: Channel::from_env(env)?,
            },
        };
        let jwt_secret = JwtSecret::from_env(env)?;
        Ok(Self {
            common: CommonSettings::from_env(env, DEFAULT_PORT, DEFAULT_SERVICE_NAME)?,
            mode,
            catga: CatgaSettings::from_env(env)?,
            jwt_secret,
            max_body_bytes: env.number_in(
                keys::HTTP_MAX_BODY_BYTES,
                64 * 1024,
                1024..=16 * 1024 * 1024,
            )?,
            max_concurrent_requests: env.number_in(
                keys::HTTP_MAX_CONCURRENT_REQUESTS,
                DEFAULT_MAX_CONCURRENT_REQUESTS,
                1..=65_536,
            )?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_without_nats_and_never_otherwise() {
        let settings = Settings::from_env(&Env::default()).expect("valid");
        assert!(matches!(settings.mode, Mode::Embedded { .. }));
        assert_eq!(settings.common.http_port, 8080);
        assert_eq!(settings.common.service_name, "OrderApi");

        let env = Env::from_pairs([("NATS__Url", "nats://127.0.0.1:4222")]);
        let settings = Settings::from_env(&env).expect("valid");
        assert!(matches!(settings.mode, Mode::Distributed { .. }));
    }

    #[test]
    fn short_jwt_secret_is_refused_without_echoing_it() {
        let env = Env::from_pairs([("Auth__JwtSecret", "tiny-secret")]);
        let err = Settings::from_env(&env).expect_err("too short");
        assert_eq!(err.setting, "Auth__JwtSecret");
        assert!(!err.to_string().contains("tiny-secret"));
        let env = Env::from_pairs([("Auth__JwtSecret", "x".repeat(32))]);
        let settings = Settings::from_env(&env).expect("valid");
        assert_eq!(format!("{:?}", settings.jwt_secret), "Some(JwtSecret(***))");
    }
}
