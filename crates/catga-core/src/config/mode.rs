//! Which backends a process runs on (`Catga__Mode`), and the connection
//! settings that mode makes mandatory.
//!
//! The images set `Catga__Mode=distributed`: a container whose `NATS__Url` is
//! missing or misspelled then stops at start-up naming the setting, instead of
//! running order-api's in-memory embedded mode (which loses every order at
//! restart) or a consumer pointed at a loopback server that is not there.
//! Unset, nothing changes for `cargo run`: order-api is embedded without
//! `NATS__Url`, and the consumers default to local servers.

use std::{fmt, str::FromStr};

use super::{ConfigError, Env, keys};

/// `Catga__Mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// order-api runs the whole system in its process, in memory.
    Embedded,
    /// NATS JetStream and Redis, named by `NATS__Url` and `Redis__Configuration`.
    Distributed,
}

impl Mode {
    /// The mode `Catga__Mode` names; `None` when it is unset.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        env.get(keys::MODE)
            .map(|raw| {
                raw.parse().map_err(|UnknownMode| {
                    ConfigError::new(
                        keys::MODE,
                        format!(
                            "{raw:?} is neither {} nor {}",
                            Self::Embedded,
                            Self::Distributed
                        ),
                    )
                })
            })
            .transpose()
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Embedded => "embedded",
            Self::Distributed => "distributed",
        })
    }
}

#[derive(Debug)]
pub struct UnknownMode;

impl FromStr for Mode {
    type Err = UnknownMode;

    /// Either name, in any case.
    fn from_str(raw: &str) -> Result<Self, UnknownMode> {
        match raw.to_ascii_lowercase().as_str() {
            "embedded" => Ok(Self::Embedded),
            "distributed" => Ok(Self::Distributed),
            _ => Err(UnknownMode),
        }
    }
}

/// The value of the connection setting `key` (`NATS__Url`,
/// `Redis__Configuration`) for a process that uses it: in distributed mode it
/// must be set (a default would point at a loopback server a container does
/// not have); otherwise unset means `default`. Embedded mode has no use for it.
pub(crate) fn connection_setting<'a>(
    env: &'a Env,
    key: &str,
    default: &'a str,
) -> Result<&'a str, ConfigError> {
    match (env.get(key), Mode::from_env(env)?) {
        (_, Some(Mode::Embedded)) => Err(ConfigError::new(
            keys::MODE,
            format!(
                "is {} but this process needs {key}: set {} to {}, or leave it unset",
                Mode::Embedded,
                keys::MODE,
                Mode::Distributed
            ),
        )),
        (Some(value), _) => Ok(value),
        (None, Some(Mode::Distributed)) => Err(ConfigError::new(
            key,
            format!(
                "is not set, and {}={} needs it{}",
                keys::MODE,
                Mode::Distributed,
                near_miss(env, key)
            ),
        )),
        (None, None) => Ok(default),
    }
}

/// A hint naming a variable that looks like `key` spelled otherwise
/// (`Nats__Url`, `NATS_URL`, `NATS__URL`): names are exact.
fn near_miss(env: &Env, key: &str) -> String {
    let shape = |name: &str| name.replace('_', "").to_ascii_lowercase();
    env.names()
        .filter(|name| *name != key && shape(name) == shape(key))
        .map(|name| format!(" ({name} is set: the name is {key}, exactly)"))
        .next()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mode_parses_in_any_case_and_refuses_other_words() {
        let mode = |raw: &str| Mode::from_env(&Env::from_pairs([(keys::MODE, raw)]));
        assert_eq!(mode("distributed").expect("valid"), Some(Mode::Distributed));
        assert_eq!(mode("Embedded").expect("valid"), Some(Mode::Embedded));
        assert_eq!(mode(" ").expect("blank is unset"), None);
        assert_eq!(Mode::from_env(&Env::default()).expect("unset"), None);
        let err = mode("cluster").expect_err("unknown");
        assert_eq!(err.setting, keys::MODE);
        assert_eq!(
            err.to_string(),
            "invalid configuration: Catga__Mode: \"cluster\" is neither embedded nor distributed"
        );
    }

    #[test]
    fn distributed_mode_needs_the_connection_settings() {
        let read = |pairs: &[(&str, &str)]| -> Result<String, ConfigError> {
            connection_setting(&Env::from_pairs(pairs.iter().copied()), keys::NATS_URL, "d")
                .map(str::to_owned)
        };
        // Unset mode: today's default.
        assert_eq!(read(&[]).expect("default"), "d");
        assert_eq!(
            read(&[(keys::NATS_URL, "nats://n:4222")]).expect("set"),
            "nats://n:4222"
        );
        // Distributed: set, or an error naming the setting.
        let distributed = (keys::MODE, "distributed");
        assert_eq!(
            read(&[distributed, (keys::NATS_URL, "nats://n:4222")]).expect("set"),
            "nats://n:4222"
        );
        let err = read(&[distributed]).expect_err("missing");
        assert_eq!(err.setting, keys::NATS_URL);
        assert_eq!(
            err.to_string(),
            "invalid configuration: NATS__Url: is not set, and Catga__Mode=distributed needs it"
        );
        // A misspelling is named, its value never shown.
        let err = read(&[distributed, ("Nats__Url", "nats://user:secret@n:4222")])
            .expect_err("misspelled");
        assert_eq!(err.setting, keys::NATS_URL);
        assert!(err.to_string().contains("Nats__Url is set"), "{err}");
        assert!(!err.to_string().contains("secret"), "{err}");
        // Embedded: a process that needs NATS is refused, naming the mode.
        let err = read(&[(keys::MODE, "embedded")]).expect_err("embedded");
        assert_eq!(err.setting, keys::MODE);
    }
}
