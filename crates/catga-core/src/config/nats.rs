//! How to reach NATS and how the JetStream topology is shaped.

use std::{fmt, path::PathBuf, time::Duration};

use super::{ConfigError, Env, keys};

/// How to reach NATS and how the JetStream topology is shaped. Server URLs
/// may carry credentials: `Debug` and [`NatsSettings::redacted_servers`] hide them.
#[derive(Clone)]
pub struct NatsSettings {
    pub servers: Vec<String>,
    pub queue_group: String,
    pub stream_replicas: usize,
    pub ack_wait: Duration,
    /// Deliveries before a message is dead-lettered (`Catga__MaxRetryAttempts`).
    pub max_deliver: i64,
    /// Who the service is to NATS (`NATS__User`/`NATS__Password` or `NATS__CredsFile`).
    pub credentials: NatsCredentials,
    /// A private CA for `tls://` servers (`NATS__TlsCaFile`); the system's roots otherwise.
    pub tls_ca_file: Option<PathBuf>,
}

/// How a service proves who it is to NATS. `Debug` never shows a password or seed.
#[derive(Clone, Default)]
pub enum NatsCredentials {
    /// None, in the settings or the server URLs: a local development server.
    #[default]
    None,
    UserPassword {
        user: String,
        password: String,
    },
    /// A token, given as the user part of a server URL (`nats://token@host`).
    Token(String),
    /// A `.creds` file's contents: a user JWT and its nkey seed.
    Creds {
        path: PathBuf,
        contents: String,
    },
    /// An nkey seed file's contents.
    NkeySeed {
        path: PathBuf,
        seed: String,
    },
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsCredentials::None => f.write_str("None"),
            NatsCredentials::UserPassword { user, .. } => write!(f, "UserPassword({user:?}, ***)"),
            NatsCredentials::Token(_) => f.write_str("Token(***)"),
            NatsCredentials::Creds { path, .. } => write!(f, "Creds({})", path.display()),
            NatsCredentials::NkeySeed { path, .. } => write!(f, "NkeySeed({})", path.display()),
        }
    }
}

impl fmt::Debug for NatsSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsSettings")
            .field("servers", &self.redacted_servers())
            .field("queue_group", &self.queue_group)
            .field("stream_replicas", &self.stream_replicas)
            .field("ack_wait", &self.ack_wait)
            .field("max_deliver", &self.max_deliver)
            .field("credentials", &self.credentials)
            .field("tls_ca_file", &self.tls_ca_file)
            .finish()
    }
}

impl Default for NatsSettings {
    /// Local NATS and the default topology settings.
    fn default() -> Self {
        Self {
            servers: vec![Self::DEFAULT_URL.to_owned()],
            queue_group: crate::contracts::consumers::ORDER_PROCESSING.to_owned(),
            stream_replicas: 1,
            ack_wait: Duration::from_secs(30),
            max_deliver: 5,
            credentials: NatsCredentials::None,
            tls_ca_file: None,
        }
    }
}

impl NatsSettings {
    /// The server URLs with any password or token replaced by `***`, for logs.
    pub fn redacted_servers(&self) -> Vec<String> {
        self.servers
            .iter()
            .map(|server| match url::Url::parse(server) {
                Ok(url) => super::redacted_url(&url),
                Err(_) => without_credentials(server),
            })
            .collect()
    }

    pub const DEFAULT_URL: &'static str = "nats://127.0.0.1:4222";

    /// Reads NATS settings, for a process that uses NATS: the local server
    /// ([`Self::DEFAULT_URL`]) when `NATS__Url` is unset, unless `Catga__Mode`
    /// is `distributed` (then it must be set) or `embedded` (refused).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let servers = parse_nats_servers(super::mode::connection_setting(
            env,
            keys::NATS_URL,
            Self::DEFAULT_URL,
        )?)?;
        let credentials = read_credentials(env, &servers)?;
        let queue_group = env
            .get(keys::NATS_QUEUE_GROUP)
            .unwrap_or(crate::contracts::consumers::ORDER_PROCESSING)
            .to_owned();
        if !queue_group
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ConfigError::new(
                keys::NATS_QUEUE_GROUP,
                format!("{queue_group:?} may only contain letters, digits, '-' and '_'"),
            ));
        }
        Ok(Self {
            servers,
            queue_group,
            stream_replicas: env.number_in(keys::NATS_STREAM_REPLICAS, 1, 1..=5)?,
            ack_wait: env.seconds_in(keys::NATS_ACK_WAIT_SECONDS, 30, 1..=3600)?,
            max_deliver: env.number_in(keys::MAX_RETRY_ATTEMPTS, 5, 1..=100)?,
            credentials,
            tls_ca_file: read_tls_ca_file(env)?,
        })
    }

    /// Whether the service presents credentials: then it runs with a user
    /// whose permissions are restricted, and only verifies the streams the
    /// operator step created. Without any (a local development server), it
    /// creates them itself.
    pub fn is_authenticated(&self) -> bool {
        !matches!(self.credentials, NatsCredentials::None)
    }

    /// Reads NATS settings when `NATS__Url` is set; `None` otherwise (order-api
    /// then runs embedded, without NATS).
    pub fn from_env_if_set(env: &Env) -> Result<Option<Self>, ConfigError> {
        env.get(keys::NATS_URL)
            .map(|_| Self::from_env(env))
            .transpose()
    }
}

fn read_credentials(env: &Env, servers: &[String]) -> Result<NatsCredentials, ConfigError> {
    let user = env.get(keys::NATS_USER);
    let password = env.get(keys::NATS_PASSWORD);
    match (user, password, env.get(keys::NATS_CREDS_FILE)) {
        (None, None, None) => Ok(NatsCredentials::in_urls(servers)),
        (Some(user), Some(password), None) => Ok(NatsCredentials::UserPassword {
            user: user.to_owned(),
            password: password.to_owned(),
        }),
        (Some(_), None, None) => Err(ConfigError::new(
            keys::NATS_PASSWORD,
            format!("is required with {}", keys::NATS_USER),
        )),
        (None, Some(_), None) => Err(ConfigError::new(
            keys::NATS_USER,
            format!("is required with {}", keys::NATS_PASSWORD),
        )),
        (None, None, Some(path)) => read_creds_file(PathBuf::from(path)),
        (_, _, Some(_)) => Err(ConfigError::new(
            keys::NATS_CREDS_FILE,
            format!(
                "give either it or {}/{}, not both",
                keys::NATS_USER,
                keys::NATS_PASSWORD
            ),
        )),
    }
}

impl NatsCredentials {
    /// The credentials the first server URL carrying any holds (the client
    /// reads none from a URL itself): `user:password@` or `token@`.
    pub fn in_urls(servers: &[String]) -> Self {
        servers
            .iter()
            .filter_map(|server| url::Url::parse(server).ok())
            .find(|url| !url.username().is_empty())
            .map_or(NatsCredentials::None, |url| {
                let decode = |part: &str| {
                    percent_encoding::percent_decode_str(part)
                        .decode_utf8_lossy()
                        .into_owned()
                };
                match url.password() {
                    Some(password) => NatsCredentials::UserPassword {
                        user: decode(url.username()),
                        password: decode(password),
                    },
                    None => NatsCredentials::Token(decode(url.username())),
                }
            })
    }
}

/// Reads a `.creds` file or an nkey seed file. Its contents are secret: an
/// error names the file and never quotes it.
fn read_creds_file(path: PathBuf) -> Result<NatsCredentials, ConfigError> {
    let contents = std::fs::read_to_string(&path).map_err(|err| {
        ConfigError::new(
            keys::NATS_CREDS_FILE,
            format!("cannot read {}: {}", path.display(), err.kind()),
        )
    })?;
    let trimmed = contents.trim();
    // A bare user seed: one token, `SU...`.
    if trimmed.starts_with("SU") && !trimmed.contains(char::is_whitespace) {
        return Ok(NatsCredentials::NkeySeed {
            path,
            seed: trimmed.to_owned(),
        });
    }
    if async_nats::ConnectOptions::new()
        .credentials(&contents)
        .is_err()
    {
        return Err(ConfigError::new(
            keys::NATS_CREDS_FILE,
            format!(
                "{} holds neither NATS credentials (a user JWT and its seed) nor a user nkey seed",
                path.display()
            ),
        ));
    }
    Ok(NatsCredentials::Creds { path, contents })
}

fn read_tls_ca_file(env: &Env) -> Result<Option<PathBuf>, ConfigError> {
    let Some(path) = env.get(keys::NATS_TLS_CA_FILE) else {
        return Ok(None);
    };
    let pem = std::fs::read_to_string(path).map_err(|err| {
        ConfigError::new(
            keys::NATS_TLS_CA_FILE,
            format!("cannot read {path}: {}", err.kind()),
        )
    })?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(ConfigError::new(
            keys::NATS_TLS_CA_FILE,
            format!("{path} holds no PEM certificate"),
        ));
    }
    Ok(Some(PathBuf::from(path)))
}

fn parse_nats_servers(raw: &str) -> Result<Vec<String>, ConfigError> {
    let mut servers = Vec::new();
    // A password may hold a comma: then a part without `@` may be a piece of
    // it, and is named by its position only.
    let has_credentials = raw.contains('@');
    let parts = raw.split(',').map(str::trim).filter(|p| !p.is_empty());
    for (index, part) in parts.enumerate() {
        let shown = if has_credentials && !part.contains('@') {
            format!("server {}", index + 1)
        } else {
            without_credentials(part)
        };
        let with_scheme = if part.contains("://") {
            part.to_owned()
        } else {
            format!("nats://{part}")
        };
        let url = url::Url::parse(&with_scheme).map_err(|err| {
            ConfigError::new(keys::NATS_URL, format!("{shown} is not a URL")).caused_by(err)
        })?;
        if !matches!(url.scheme(), "nats" | "tls" | "ws" | "wss") {
            return Err(ConfigError::new(
                keys::NATS_URL,
                format!("{shown} must use nats://, tls://, ws:// or wss://"),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(ConfigError::new(
                keys::NATS_URL,
                format!("{shown} has no host"),
            ));
        }
        servers.push(with_scheme);
    }
    if servers.is_empty() {
        return Err(ConfigError::new(keys::NATS_URL, "no server given"));
    }
    Ok(servers)
}

/// A server URL as an error message may show it: whatever precedes an `@`
/// (user, password or token) replaced by `***`.
fn without_credentials(part: &str) -> String {
    match part.rsplit_once('@') {
        None => part.to_owned(),
        Some((before, host)) => match before.split_once("://") {
            Some((scheme, _)) => format!("{scheme}://***@{host}"),
            None => format!("***@{host}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nats_urls_are_a_comma_separated_list() {
        let env = Env::from_pairs([(
            "NATS__Url",
            "nats://nats-0.nats:4222, nats-1.nats:4222,nats://nats-2.nats:4222",
        )]);
        let nats = NatsSettings::from_env(&env).expect("valid");
        assert_eq!(nats.servers.len(), 3);
        assert_eq!(nats.servers[1], "nats://nats-1.nats:4222");
        assert_eq!(nats.queue_group, "order-processing");
        assert_eq!(nats.max_deliver, 5);

        let env = Env::from_pairs([(
            "NATS__Url",
            "nats://app:s3cret@nats:4222,nats://token@n2:4222",
        )]);
        let nats = NatsSettings::from_env(&env).expect("valid");
        // The client reads no credentials from a URL: the settings take them.
        assert!(
            matches!(&nats.credentials, NatsCredentials::UserPassword { user, password } if user == "app" && password == "s3cret")
        );
        let shown = format!("{:?} {:?}", nats, nats.redacted_servers());
        assert!(
            !shown.contains("s3cret") && !shown.contains("token"),
            "{shown}"
        );

        assert!(
            NatsSettings::from_env_if_set(&Env::default())
                .expect("valid")
                .is_none()
        );
        for bad in ["http://x:4222", ",", "nats://:4222"] {
            let env = Env::from_pairs([("NATS__Url", bad)]);
            let err = NatsSettings::from_env_if_set(&env).expect_err(bad);
            assert_eq!(err.setting, "NATS__Url");
        }
    }

    #[test]
    fn a_refused_server_url_is_shown_without_its_credentials() {
        for bad in ["http://app:s3cret@nats:4222", "nats://app:s3cret@:4222"] {
            let env = Env::from_pairs([("NATS__Url", bad)]);
            let err = NatsSettings::from_env(&env).expect_err(bad);
            assert_eq!(err.setting, "NATS__Url");
            let shown = crate::error::chain(&err).to_string();
            assert!(!shown.contains("s3cret"), "{shown}");
            assert!(shown.contains("***@"), "{shown}");
        }
    }
}
