//! order-api settings.

use catga_core::config::{
    CatgaSettings, CommonSettings, ConfigError, Env, Mode, NatsSettings, RedisSettings, keys,
};

use std::{num::NonZeroU32, time::Duration};

pub use crate::{
    auth::{AuthSettings, JwtSecret},
    http::RateLimitSettings,
};

pub const DEFAULT_PORT: u16 = 8080;
/// `/health/*` and `/metrics`: reached by the kubelet and Prometheus on the
/// pod, never through the LoadBalancer (which forwards 80 to 8080 only).
pub const DEFAULT_OPS_PORT: u16 = 8090;
/// The service name the deployment guide looks for in Jaeger.
pub const DEFAULT_SERVICE_NAME: &str = "OrderApi";

/// The backends of a distributed order-api: NATS JetStream and Redis.
#[derive(Debug, Clone)]
pub struct Distributed {
    pub nats: NatsSettings,
    pub redis: RedisSettings,
    /// An order still pending this long after it was placed gets its command
    /// re-published (crate::pending).
    pub republish_pending_after: std::time::Duration,
}

impl Distributed {
    /// Whether the settings name a distributed deployment: `Catga__Mode=
    /// distributed`, or, with no mode set, `NATS__Url` set. (A bad mode is
    /// reported by [`Self::from_env`].)
    pub fn is_configured(env: &Env) -> bool {
        match Mode::from_env(env) {
            Ok(Some(mode)) => mode == Mode::Distributed,
            Ok(None) | Err(_) => env.get(keys::NATS_URL).is_some(),
        }
    }

    /// `None` in the embedded mode: the binary then runs the whole system in
    /// its own process. That is `Catga__Mode=embedded`, or no mode and no
    /// `NATS__Url` (`cargo run`). `Catga__Mode=distributed` (the images)
    /// needs `NATS__Url` and `Redis__Configuration`; a bad NATS or Redis
    /// setting is an error, never a fallback to the embedded mode.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let nats = match Mode::from_env(env)? {
            Some(Mode::Distributed) => NatsSettings::from_env(env)?,
            Some(Mode::Embedded) if env.get(keys::NATS_URL).is_some() => {
                return Err(ConfigError::new(
                    keys::MODE,
                    format!(
                        "is {} but {} is set: unset one of them",
                        Mode::Embedded,
                        keys::NATS_URL
                    ),
                ));
            }
            Some(Mode::Embedded) => return Ok(None),
            None => match NatsSettings::from_env_if_set(env)? {
                Some(nats) => nats,
                None => return Ok(None),
            },
        };
        Ok(Some(Self {
            nats,
            redis: RedisSettings::from_env(env)?,
            republish_pending_after: env.seconds_in(
                keys::PENDING_REPUBLISH_SECONDS,
                crate::pending::DEFAULT_REPUBLISH_AFTER_SECONDS,
                1..=24 * 3600,
            )?,
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
    /// How callers are authenticated (`Auth__*`). With no key configured
    /// every request is anonymous: the binary allows that in embedded mode,
    /// and in distributed mode only with `Auth__AllowAnonymous=true`
    /// ([`AuthSettings::require_for_distributed`]).
    pub auth: AuthSettings,
    pub max_body_bytes: usize,
    /// How long a request body may take to arrive; it is read before the
    /// request takes one of the `max_concurrent_requests`.
    pub body_timeout: Duration,
    /// API requests handled at once; more are refused with 503 at once.
    pub max_concurrent_requests: usize,
    pub rate_limit: RateLimitSettings,
}

/// Requests per second per caller by default in distributed mode. Far above
/// what one customer's client needs (the benchmark spreads its load over
/// 1000 customers); a flood from one caller is cut off.
pub const DEFAULT_RATE_LIMIT_PER_SECOND: u32 = 100;
pub const DEFAULT_RATE_LIMIT_BURST: u32 = 200;

impl RateLimitSettings {
    /// On by default in distributed mode. Off by default in the embedded
    /// mode: it runs without authentication on a developer's machine, where
    /// every caller (the loadgen included) is the same loopback address.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let default = if Distributed::is_configured(env) {
            DEFAULT_RATE_LIMIT_PER_SECOND
        } else {
            0
        };
        let per_second = env.number_in(keys::HTTP_RATE_LIMIT_PER_SECOND, default, 0..=1_000_000)?;
        let burst = env.number_in(
            keys::HTTP_RATE_LIMIT_BURST,
            DEFAULT_RATE_LIMIT_BURST,
            1..=1_000_000,
        )?;
        Ok(Self {
            per_second: NonZeroU32::new(per_second),
            burst: NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN),
            trust_forwarded_for: env.bool_or(keys::HTTP_TRUST_FORWARDED_FOR, false)?,
        })
    }
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            common: CommonSettings::from_env(env, DEFAULT_PORT, DEFAULT_SERVICE_NAME)?
                .with_ops_port(env, DEFAULT_OPS_PORT)?,
            catga: CatgaSettings::from_env(env)?,
            auth: AuthSettings::from_env(env)?,
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
            rate_limit: RateLimitSettings::from_env(env)?,
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
        assert_eq!(
            format!("{:?}", settings.auth.jwt_secret),
            "Some(JwtSecret(***))"
        );
    }
}
