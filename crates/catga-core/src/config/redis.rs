//! How to reach Redis: the guide's StackExchange.Redis strings and `redis://` URLs.

use std::{fmt, time::Duration};

use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};

use super::{ConfigError, Env, env::parse_bool, keys};

/// Where Redis is: one server, or a master found through Sentinels.
#[derive(Clone, PartialEq, Eq)]
pub enum RedisTopology {
    /// One address (a server, or a Service that follows the master).
    Standalone { host: String, port: u16 },
    /// Asks these Sentinels for the master of `service_name`, and asks again
    /// after a failover.
    Sentinel {
        sentinels: Vec<(String, u16)>,
        service_name: String,
        /// Defaults to the data password; empty means none.
        password: Option<String>,
    },
}

impl fmt::Debug for RedisTopology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Standalone { host, port } => write!(f, "Standalone({host}:{port})"),
            Self::Sentinel {
                sentinels,
                service_name,
                password,
            } => f
                .debug_struct("Sentinel")
                .field("sentinels", sentinels)
                .field("service_name", service_name)
                .field("password", &password.as_ref().map(|_| "***"))
                .finish(),
        }
    }
}

/// How many replicas must hold a write before the service acknowledges it
/// (`WAIT replicas timeout`); 0 turns the wait off. See docs/reliability.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplicaWait {
    pub replicas: u32,
    pub timeout: Duration,
}

/// How to reach Redis. Holds the passwords; its `Display` never shows them.
#[derive(Clone)]
pub struct RedisSettings {
    pub topology: RedisTopology,
    pub(crate) database: i64,
    pub(crate) username: Option<String>,
    pub(crate) password: Option<String>,
    pub(crate) tls: bool,
    pub connect_timeout: Duration,
    pub wait: ReplicaWait,
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
        match &self.topology {
            RedisTopology::Standalone { host, port } => {
                write!(f, "{scheme}://{auth}{host}:{port}/{}", self.database)
            }
            RedisTopology::Sentinel {
                sentinels,
                service_name,
                ..
            } => {
                let hosts: Vec<String> =
                    sentinels.iter().map(|(h, p)| format!("{h}:{p}")).collect();
                write!(
                    f,
                    "{scheme}+sentinel://{auth}{}/{service_name}/{}",
                    hosts.join(","),
                    self.database
                )
            }
        }
    }
}

const REDIS_PORT: u16 = 6379;
const SENTINEL_PORT: u16 = 26379;

impl RedisSettings {
    pub const DEFAULT_CONFIGURATION: &'static str = "127.0.0.1:6379";
    /// How long a write waits for its replicas unless `Redis__WaitTimeoutMs` says otherwise.
    pub const DEFAULT_WAIT_TIMEOUT_MS: u64 = 1000;

    /// Accepts StackExchange.Redis style `host:port[,password=…][,ssl=true]`
    /// (what the guide's `Redis__Configuration` uses), its Sentinel form
    /// `s0:26379,s1:26379,serviceName=mymaster[,sentinelPassword=…]`,
    /// `redis://` / `rediss://` URLs and `redis+sentinel://s0,s1/mymaster[/db]`.
    /// `REDIS_PASSWORD` and `REDIS_SENTINEL_PASSWORD`, when set, supply the
    /// passwords. The replica wait defaults to 1 behind Sentinel (there are
    /// replicas) and to 0 on one address. With `Catga__Mode=distributed`,
    /// `Redis__Configuration` must be set.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let raw = super::mode::connection_setting(
            env,
            keys::REDIS_CONFIGURATION,
            Self::DEFAULT_CONFIGURATION,
        )?;
        let mut settings =
            if raw.starts_with("redis+sentinel://") || raw.starts_with("rediss+sentinel://") {
                Self::parse_sentinel_url(raw)?
            } else if raw.starts_with("redis://") || raw.starts_with("rediss://") {
                Self::parse_url(raw)?
            } else {
                Self::parse_options(raw)?
            };
        if let Some(password) = env.get(keys::REDIS_PASSWORD) {
            settings.password = Some(password.to_owned());
        }
        if let RedisTopology::Sentinel { password, .. } = &mut settings.topology {
            if let Some(sentinel_password) = env.get(keys::REDIS_SENTINEL_PASSWORD) {
                *password = Some(sentinel_password.to_owned());
            } else if password.is_none() {
                password.clone_from(&settings.password);
            }
            if password.as_deref() == Some("") {
                *password = None;
            }
        }
        let default_replicas = match settings.topology {
            RedisTopology::Sentinel { .. } => 1,
            RedisTopology::Standalone { .. } => 0,
        };
        settings.wait = ReplicaWait {
            replicas: env.number_in(keys::REDIS_WAIT_REPLICAS, default_replicas, 0..=16)?,
            timeout: Duration::from_millis(env.number_in(
                keys::REDIS_WAIT_TIMEOUT_MS,
                Self::DEFAULT_WAIT_TIMEOUT_MS,
                1..=60_000,
            )?),
        };
        Ok(settings)
    }

    fn new(topology: RedisTopology) -> Self {
        Self {
            topology,
            database: 0,
            username: None,
            password: None,
            tls: false,
            connect_timeout: Duration::from_secs(5),
            wait: ReplicaWait {
                replicas: 0,
                timeout: Duration::from_millis(Self::DEFAULT_WAIT_TIMEOUT_MS),
            },
        }
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
            db => parse_database(db)?,
        };
        let mut settings = Self::new(RedisTopology::Standalone {
            host,
            port: url.port().unwrap_or(REDIS_PORT),
        });
        settings.database = database;
        settings.username = match url.username() {
            "" => None,
            user => Some(decode(user)?),
        };
        settings.password = url.password().map(decode).transpose()?;
        settings.tls = url.scheme() == "rediss";
        Ok(settings)
    }

    /// `redis+sentinel://[[user]:password@]s0[:port],s1[:port]/serviceName[/db][?sentinelPassword=…]`
    /// (the `url` crate cannot hold several hosts, so this is split by hand).
    fn parse_sentinel_url(raw: &str) -> Result<Self, ConfigError> {
        let err = |message: &str| ConfigError::new(keys::REDIS_CONFIGURATION, message);
        let (scheme, rest) = raw
            .split_once("://")
            .ok_or_else(|| err("not a valid URL"))?;
        let (rest, query) = match rest.split_once('?') {
            Some((rest, query)) => (rest, Some(query)),
            None => (rest, None),
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| err("the URL names no Sentinel service (…/serviceName)"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let mut segments = path.split('/').filter(|s| !s.is_empty());
        let service_name = decode(
            segments
                .next()
                .ok_or_else(|| err("the URL names no Sentinel service (…/serviceName)"))?,
        )?;
        let database = segments
            .next()
            .map(parse_database)
            .transpose()?
            .unwrap_or(0);
        let mut sentinel_password = None;
        for pair in query.into_iter().flat_map(|q| q.split('&')) {
            match pair.split_once('=') {
                Some((name, value)) if name.eq_ignore_ascii_case("sentinelPassword") => {
                    sentinel_password = Some(decode(value)?);
                }
                _ => return Err(err("unknown query parameter (only sentinelPassword)")),
            }
        }
        let mut settings = Self::new(RedisTopology::Sentinel {
            sentinels: parse_endpoints(hosts.split(','), SENTINEL_PORT)?,
            service_name,
            password: sentinel_password,
        });
        settings.database = database;
        settings.tls = scheme == "rediss+sentinel";
        if let Some(userinfo) = userinfo {
            let (user, password) = match userinfo.split_once(':') {
                Some((user, password)) => (user, Some(password)),
                None => (userinfo, None),
            };
            settings.username = Some(decode(user)?).filter(|u| !u.is_empty());
            settings.password = password.map(decode).transpose()?;
        }
        Ok(settings)
    }

    fn parse_options(raw: &str) -> Result<Self, ConfigError> {
        let err = |message: String| ConfigError::new(keys::REDIS_CONFIGURATION, message);
        let (endpoints, options): (Vec<&str>, Vec<&str>) = raw
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .partition(|part| !part.contains('='));
        if raw
            .split(',')
            .next()
            .is_some_and(|first| first.contains('='))
        {
            return Err(err("must start with host:port".to_owned()));
        }
        let mut service_name = None;
        let mut sentinel_password = None;
        let mut settings = Self::new(RedisTopology::Standalone {
            host: String::new(),
            port: REDIS_PORT,
        });
        // Options are named by position, never quoted: a password holding a
        // comma makes its second half look like an option.
        for (index, option) in options.into_iter().enumerate() {
            let position = index + 1;
            let (name, value) = option
                .split_once('=')
                .ok_or_else(|| err(format!("option {position} is not name=value")))?;
            match name.trim().to_ascii_lowercase().as_str() {
                "password" => settings.password = Some(value.to_owned()),
                "user" => settings.username = Some(value.to_owned()),
                "servicename" => service_name = Some(value.trim().to_owned()),
                "sentinelpassword" => sentinel_password = Some(value.to_owned()),
                "ssl" => {
                    settings.tls = parse_bool(value).ok_or_else(|| {
                        err(format!("ssl (option {position}) is not true or false"))
                    })?
                }
                "defaultdatabase" => settings.database = parse_database(value)?,
                "connecttimeout" => {
                    let ms: u64 = value.parse().map_err(|_| {
                        err(format!(
                            "connectTimeout (option {position}) is not milliseconds"
                        ))
                    })?;
                    settings.connect_timeout = Duration::from_millis(ms);
                }
                // Accepted for compatibility with the .NET client's strings; our
                // client always retries in the background, never aborts.
                "abortconnect" | "connectretry" | "synctimeout" | "asynctimeout" | "keepalive" => {}
                _ => {
                    return Err(err(format!(
                        "option {position} is not one of ours (password, user, ssl, \
                         defaultDatabase, connectTimeout, abortConnect, …)"
                    )));
                }
            }
        }
        settings.topology = match service_name {
            Some(service_name) if !service_name.is_empty() => RedisTopology::Sentinel {
                sentinels: parse_endpoints(endpoints, SENTINEL_PORT)?,
                service_name,
                password: sentinel_password,
            },
            Some(_) => return Err(err("serviceName is empty".to_owned())),
            None if sentinel_password.is_some() => {
                return Err(err("sentinelPassword needs serviceName=".to_owned()));
            }
            None => match parse_endpoints(endpoints, REDIS_PORT)?.as_slice() {
                [(host, port)] => RedisTopology::Standalone {
                    host: host.clone(),
                    port: *port,
                },
                _ => {
                    return Err(err(
                        "several endpoints need serviceName= (they are Sentinels)".to_owned(),
                    ));
                }
            },
        };
        Ok(settings)
    }

    /// The connection URL of a standalone Redis for the client library; for
    /// Sentinel, the URL of a master at `host:port`. Contains the password:
    /// never log it.
    pub fn connection_url(&self) -> String {
        match &self.topology {
            RedisTopology::Standalone { host, port } => self.url_for(host, *port),
            RedisTopology::Sentinel { sentinels, .. } => {
                let (host, port) = sentinels.first().cloned().unwrap_or_default();
                self.url_for(&host, port)
            }
        }
    }

    fn url_for(&self, host: &str, port: u16) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        let enc = |s: &str| utf8_percent_encode(s, NON_ALPHANUMERIC).to_string();
        let auth = match (&self.username, &self.password) {
            (Some(user), Some(pw)) => format!("{}:{}@", enc(user), enc(pw)),
            (None, Some(pw)) => format!(":{}@", enc(pw)),
            (Some(user), None) => format!("{}@", enc(user)),
            (None, None) => String::new(),
        };
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        format!("{scheme}://{auth}{host}:{port}/{}", self.database)
    }
}

fn decode(s: &str) -> Result<String, ConfigError> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ConfigError::new(keys::REDIS_CONFIGURATION, "credentials are not valid UTF-8"))
}

fn parse_database(raw: &str) -> Result<i64, ConfigError> {
    raw.parse().map_err(|_| {
        ConfigError::new(
            keys::REDIS_CONFIGURATION,
            "the database number is not a number",
        )
    })
}

/// `host[:port]` items; `default_port` where none is given.
fn parse_endpoints<'a>(
    endpoints: impl IntoIterator<Item = &'a str>,
    default_port: u16,
) -> Result<Vec<(String, u16)>, ConfigError> {
    let err = |message: String| ConfigError::new(keys::REDIS_CONFIGURATION, message);
    let parsed = endpoints
        .into_iter()
        .map(|endpoint| {
            let endpoint = endpoint.trim();
            let (host, port) = match endpoint.rsplit_once(':') {
                Some((host, port)) => (
                    host,
                    port.parse::<u16>()
                        .map_err(|_| err("a port (after host:) is not a number".to_owned()))?,
                ),
                None => (endpoint, default_port),
            };
            if host.is_empty() {
                return Err(err("host is empty".to_owned()));
            }
            Ok((host.to_owned(), port))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if parsed.is_empty() {
        return Err(err("no host:port given".to_owned()));
    }
    Ok(parsed)
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
    fn redis_accepts_the_sentinel_forms_with_their_own_password() {
        let env = Env::from_pairs([
            (
                "Redis__Configuration",
                "sentinel-0:26379,sentinel-1,serviceName=mymaster,password=data",
            ),
            ("REDIS_SENTINEL_PASSWORD", "guard"),
        ]);
        let redis = RedisSettings::from_env(&env).expect("valid");
        assert_eq!(
            redis.topology,
            RedisTopology::Sentinel {
                sentinels: vec![
                    ("sentinel-0".to_owned(), 26379),
                    ("sentinel-1".to_owned(), 26379)
                ],
                service_name: "mymaster".to_owned(),
                password: Some("guard".to_owned()),
            }
        );
        assert_eq!(redis.password.as_deref(), Some("data"));
        assert_eq!(
            redis.wait.replicas, 1,
            "Sentinel means replicas: wait for one"
        );
        let shown = format!("{redis} {redis:?}");
        assert!(
            !shown.contains("data") && !shown.contains("guard"),
            "{shown}"
        );

        // Without a Sentinel password of its own, Sentinel gets the data password.
        let env = Env::from_pairs([(
            "Redis__Configuration",
            "s0:1,s1:2,s2:3,serviceName=m,password=data",
        )]);
        let RedisTopology::Sentinel { password, .. } =
            RedisSettings::from_env(&env).expect("valid").topology
        else {
            panic!("a Sentinel topology");
        };
        assert_eq!(password.as_deref(), Some("data"));

        let env = Env::from_pairs([
            (
                "Redis__Configuration",
                "redis+sentinel://:p%40ss@s0:1,s1/mymaster/2?sentinelPassword=guard",
            ),
            ("Redis__WaitReplicas", "2"),
            ("Redis__WaitTimeoutMs", "250"),
        ]);
        let redis = RedisSettings::from_env(&env).expect("valid");
        assert_eq!(
            redis.topology,
            RedisTopology::Sentinel {
                sentinels: vec![("s0".to_owned(), 1), ("s1".to_owned(), 26379)],
                service_name: "mymaster".to_owned(),
                password: Some("guard".to_owned()),
            }
        );
        assert_eq!(redis.password.as_deref(), Some("p@ss"));
        assert_eq!(redis.database, 2);
        assert_eq!(
            redis.wait,
            ReplicaWait {
                replicas: 2,
                timeout: Duration::from_millis(250)
            }
        );
        assert_eq!(
            redis.to_string(),
            "redis+sentinel://***@s0:1,s1:26379/mymaster/2"
        );

        // One address: no replicas assumed, the wait is off.
        let env = Env::from_pairs([("Redis__Configuration", "redis-master:6379")]);
        assert_eq!(
            RedisSettings::from_env(&env).expect("valid").wait.replicas,
            0
        );
    }

    #[test]
    fn bad_redis_configuration_names_the_setting_without_the_secret() {
        for raw in [
            "host:notaport",
            "host:1,bogus=1",
            "host:1,ssl=maybe",
            ",password=x",
            "redis://:secret@/0",
            "a:1,b:2,password=secret",
            "s0:1,serviceName=,password=secret",
            "s0:1,sentinelPassword=secret",
            "redis+sentinel://:secret@s0:1",
            "redis+sentinel://:secret@s0:x/m",
            "redis+sentinel://:secret@s0:1/m?bogus=1",
        ] {
            let env = Env::from_pairs([("Redis__Configuration", raw)]);
            let err = RedisSettings::from_env(&env).expect_err(raw);
            assert_eq!(err.setting, "Redis__Configuration", "{raw}");
            assert!(!err.to_string().contains("secret"));
            assert!(!err.to_string().contains('\n'));
        }
    }
}
