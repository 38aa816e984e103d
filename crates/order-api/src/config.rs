//! order-api settings.

use catga_core::config::{
    CatgaSettings, CommonSettings, ConfigError, Env, NatsSettings, RedisSettings, keys,
};

use std::time::Duration;

pub use crate::auth::JwtSecret;

pub const DEFAULT_PORT: u16 = 8080;
/// The service name the deployment guide looks for in Jaeger.
pub const DEFAULT_SERVICE_NAME: &str = "OrderApi";

/// The backends of a distributed order-api: NATS JetStream and Redis.
#[derive(Debug, Clone)]
pub struct Distributed {
    pub nats: NatsSettings,
    pub redis: RedisSettings,
}

impl Distributed {
    /// `None` without `NATS__Url`: the binary then runs the whole system in
    /// its own process (the embedded mode). With it, never: a bad NATS or
    /// Redis setting is an error, not a fallback.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let Some(nats) = NatsSettings::from_env_if_set(env)? else {
            return Ok(None);
        };
        Ok(Some(Self {
            nats,
            redis: RedisSettings::from_env(env)?,
        }))
    }
}

/// Enough for the 256 closed-loop clients of the benchmark at full speed
/// with room; an overload beyond it is shed instead of queued, which keeps
/// memory bounded (queued requests were 100 MB at 1024 in flight).
pub const DEFAULT_MAX_CONCURRENT_REQUESTS: usize = 512;

/// The API's own settings; where its backends are is [`Distributed`]'s
/// concern, or the embedded mode's.
#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub catga: CatgaSettings,
    /// `None` disables `PUT /api/products/{id}`.
    pub jwt_secret: Option<JwtSecret>,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive; it is read before the
    /// request takes one of the `max_concurrent_requests`.
    pub body_timeout: Duration,
    /// API requests handled at once; more are refused with 503 at once.
    pub max_concurrent_requests: usize,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let jwt_secret = JwtSecret::from_env(env)?;
        Ok(Self {
            common: CommonSettings::from_env(env, DEFAULT_PORT, DEFAULT_SERVICE_NAME)?,
            catga: CatgaSettings::from_env(env)?,
            jwt_secret,
            max_body_bytes: env.number_in(
                keys::HTTP_MAX_BODY_BYTES,
                64 * 1024,
                1024..=16 * 1024 * 1024,
            )?,
            body_timeout: env.seconds_in(keys::HTTP_BODY_TIMEOUT_SECONDS, 10, 1..=300)?,
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
