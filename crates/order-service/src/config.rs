//! order-service settings.

use catga_core::config::{
    CatgaSettings, CommonSettings, ConfigError, Env, NatsSettings, RedisSettings,
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
        })
    }
}
