//! order-service settings.

use std::time::Duration;

use catga_core::config::{
    CatgaSettings, CommonSettings, ConfigError, Env, NatsSettings, RedisSettings, keys,
};

/// Default listen port for health and metrics.
pub const DEFAULT_PORT: u16 = 8081;
/// Default OpenTelemetry service name.
pub const DEFAULT_SERVICE_NAME: &str = "OrderService";

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub nats: NatsSettings,
    pub redis: RedisSettings,
    pub catga: CatgaSettings,
    /// How long a final order is kept (`Orders__RetentionDays`).
    pub order_retention: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let catga = CatgaSettings::from_env(env)?;
        catga.require_idempotency()?;
        Ok(Self {
            nats: NatsSettings::from_env(env)?,
            common: CommonSettings::from_env(env, DEFAULT_PORT, DEFAULT_SERVICE_NAME)?,
            redis: RedisSettings::from_env(env)?,
            catga,
            order_retention: retention_from_env(env)?,
        })
    }
}

/// Final orders are kept this many days unless `Orders__RetentionDays` says otherwise.
pub const DEFAULT_RETENTION_DAYS: u64 = 90;

/// Whole days, 1 to 10 years: a retention under a day would remove orders
/// their customers are still looking at.
pub fn retention_from_env(env: &Env) -> Result<Duration, ConfigError> {
    let days = env.number_in(
        keys::ORDERS_RETENTION_DAYS,
        DEFAULT_RETENTION_DAYS,
        1..=3650,
    )?;
    Ok(Duration::from_secs(days * 24 * 3600))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_is_whole_days_and_named_when_wrong() {
        let days =
            |raw: &str| retention_from_env(&Env::from_pairs([(keys::ORDERS_RETENTION_DAYS, raw)]));
        assert_eq!(
            retention_from_env(&Env::from_pairs::<&str, &str>([])).expect("default"),
            Duration::from_secs(90 * 24 * 3600)
        );
        assert_eq!(days("7").expect("7"), Duration::from_secs(7 * 24 * 3600));
        for wrong in ["0", "-1", "1.5", "forever", "3651"] {
            let err = days(wrong).expect_err(wrong).to_string();
            assert!(err.contains(keys::ORDERS_RETENTION_DAYS), "{err}");
            assert!(!err.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn distributed_mode_names_a_missing_connection_setting() {
        let nats = (keys::NATS_URL, "nats://nats:4222");
        let redis = (keys::REDIS_CONFIGURATION, "redis:6379");
        let distributed = (keys::MODE, "distributed");
        let read =
            |pairs: &[(&str, &str)]| Settings::from_env(&Env::from_pairs(pairs.iter().copied()));
        assert!(read(&[distributed, nats, redis]).is_ok());
        // Unset mode: local servers, as for `cargo run`.
        assert!(read(&[]).is_ok());
        for (pairs, missing) in [
            (vec![distributed, redis], keys::NATS_URL),
            (vec![distributed, nats], keys::REDIS_CONFIGURATION),
            (vec![(keys::MODE, "embedded"), nats, redis], keys::MODE),
        ] {
            let err = read(&pairs).expect_err("refused");
            assert_eq!(err.setting, missing, "{err}");
            assert!(!err.to_string().contains('\n'), "one line: {err}");
        }
    }
}
