//! notification-service settings.

use std::time::Duration;

use catga_core::config::{
    CatgaSettings, CommonSettings, ConfigError, Env, NatsSettings, RedisSettings, keys,
};

pub const DEFAULT_PORT: u16 = 8082;
pub const DEFAULT_SERVICE_NAME: &str = "NotificationService";

/// Where notifications go.
#[derive(Debug, Clone)]
pub enum Channel {
    /// A structured log line per notification (the default).
    Log,
    /// An HTTP POST per notification.
    Webhook { url: url::Url, timeout: Duration },
}

impl Channel {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let Some(raw) = env.get(keys::WEBHOOK_URL) else {
            return Ok(Channel::Log);
        };
        let url = url::Url::parse(raw)
            .map_err(|err| ConfigError::new(keys::WEBHOOK_URL, "not a URL").caused_by(err))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                keys::WEBHOOK_URL,
                "must be an http:// or https:// URL",
            ));
        }
        Ok(Channel::Webhook {
            url,
            timeout: env.seconds_in(keys::WEBHOOK_TIMEOUT_SECONDS, 10, 1..=300)?,
        })
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub common: CommonSettings,
    pub nats: NatsSettings,
    pub redis: RedisSettings,
    pub channel: Channel,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        CatgaSettings::from_env(env)?.require_idempotency()?;
        Ok(Self {
            nats: NatsSettings::from_env(env)?,
            common: CommonSettings::from_env(env, DEFAULT_PORT, DEFAULT_SERVICE_NAME)?,
            redis: RedisSettings::from_env(env)?,
            channel: Channel::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_url_is_validated() {
        let env = Env::from_pairs([("Notification__WebhookUrl", "ftp://x")]);
        assert_eq!(
            Channel::from_env(&env).expect_err("ftp").setting,
            "Notification__WebhookUrl"
        );
        let env = Env::from_pairs([("Notification__WebhookUrl", "http://hooks.local/orders")]);
        assert!(matches!(
            Channel::from_env(&env).expect("valid"),
            Channel::Webhook { .. }
        ));
        assert!(matches!(
            Channel::from_env(&Env::default()).expect("valid"),
            Channel::Log
        ));
        let env = Env::from_pairs([("Catga__EnableIdempotency", "false")]);
        assert_eq!(
            Settings::from_env(&env).expect_err("refused").setting,
            "Catga__EnableIdempotency"
        );
    }
}
