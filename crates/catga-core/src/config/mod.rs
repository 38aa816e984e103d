//! Settings shared by the services, read from `Section__Key` environment
//! variables (the deployment guide's names).
//!
//! Everything parses from an [`Env`] map so tests build configurations without
//! touching the process environment. A bad value is a [`ConfigError`] naming
//! the setting; binaries print it, with its cause, on one line and exit.
//!
//! - [`env`](mod@env): the variables and typed reads of them.
//! - [`keys`]: every setting name.
//! - [`common`]: what every service has (port, logs, shutdown grace, traces) and `Catga__*`.
//! - [`mode`]: `Catga__Mode`, and the connection settings distributed mode requires.
//! - [`trace`], [`nats`], [`redis`]: the parsers of those settings.

pub mod common;
pub mod env;
pub mod keys;
pub mod mode;
pub mod nats;
pub mod redis;
#[cfg(test)]
mod secrets_tests;
pub mod trace;

pub use common::{CatgaSettings, CommonSettings, LogFormat};
pub use env::Env;
pub use mode::Mode;
pub use nats::{NatsCredentials, NatsSettings};
pub use redis::{RedisSettings, RedisTopology, ReplicaWait};
pub use trace::TraceExport;

/// `url` as a log line or an error may show it: any user or password
/// replaced by `***`.
pub fn redacted_url(url: &url::Url) -> String {
    if url.username().is_empty() && url.password().is_none() {
        return url.to_string();
    }
    let mut shown = url.clone();
    // Fails only for URLs that cannot have credentials, which these have.
    let _ = shown.set_password(None);
    let _ = shown.set_username("***");
    shown.to_string()
}

/// The cause of a [`ConfigError`], when a parser gave one.
type Cause = Box<dyn std::error::Error + Send + Sync>;

/// A setting whose value cannot be used. Its message never contains the
/// value of a secret; its cause (if any) is printed after it by
/// [`crate::error::chain`].
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {setting}: {message}")]
pub struct ConfigError {
    pub setting: String,
    pub message: String,
    #[source]
    pub cause: Option<Cause>,
}

impl ConfigError {
    pub fn new(setting: &str, message: impl Into<String>) -> Self {
        Self {
            setting: setting.to_owned(),
            message: message.into(),
            cause: None,
        }
    }

    /// The same error, caused by `cause` (a parser's error, kept as it is).
    pub fn caused_by(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }
}
