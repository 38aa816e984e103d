//! How to reach Redis: the guide's StackExchange.Redis strings and `redis://` URLs.

use std::{fmt, time::Duration};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::{ConfigError, Env, env::parse_bool, keys};

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
        let url =
            url::Url::parse(raw).map_err(|e| err("not a valid URL".to_owned()).caused_by(e))?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| err("the URL has no host".to_owned()))?
            .to_owned();
        let database = match url.path().trim_start_matches('/') {
            "" => 0,
            db => db
                .parse()
                .map_err(|_| err("the database (URL path) is not a number".to_owned()))?,
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
                    .map_err(|_| err("the port (after host:) is not a number".to_owned()))?,
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
        // Options are named by position, never quoted: a password holding a
        // comma makes its second half look like an option.
        for (index, option) in parts.enumerate() {
            let position = index + 2;
            let (name, value) = option.split_once('=').ok_or_else(|| {
                err(format!(
                    "part {position} is not name=value (only one endpoint is supported)"
                ))
            })?;
            match name.trim().to_ascii_lowercase().as_str() {
                "password" => settings.password = Some(value.to_owned()),
                "user" => settings.username = Some(value.to_owned()),
                "ssl" => {
                    settings.tls = parse_bool(value)
                        .ok_or_else(|| err(format!("ssl (part {position}) is not true or false")))?
                }
                "defaultdatabase" => {
                    settings.database = value.parse().map_err(|_| {
                        err(format!("defaultDatabase (part {position}) is not a number"))
                    })?
                }
                "connecttimeout" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        err(format!(
                            "connectTimeout (part {position}) is not milliseconds"
                        ))
                    })?;
                    settings.connect_timeout = Duration::from_millis(ms);
                }
                // Accepted for compatibility with the .NET client's strings; our
                // client always retries in the background, never aborts.
                "abortconnect" | "connectretry" | "synctimeout" | "asynctimeout" | "keepalive" => {}
                _ => {
                    return Err(err(format!(
                        "part {position} is not an option of ours (password, user, ssl, \
                         defaultDatabase, connectTimeout, abortConnect, …)"
                    )));
                }
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
}
