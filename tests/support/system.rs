//! The service binaries as processes, and the whole system of a test.

use crate::{
    api::Api,
    jwks::{IdentityProvider, SigningKey, TEST_AUDIENCE},
    process::{Process, binary, free_port},
    servers::{NATS_OPERATOR, Nats, Redis, nats_user_env},
    tokens::Tokens,
    webhook::WebhookReceiver,
};
use std::{
    collections::HashMap,
    path::Path,
    time::{Duration, Instant},
};

use catga_core::config::keys;
use tempfile::TempDir;

/// The sum of a metric over several services.
pub async fn metric_total(services: &[Service], prefix: &str) -> f64 {
    let values = futures::future::join_all(services.iter().map(|s| s.metric_sum(prefix))).await;
    values.iter().sum()
}

/// A service binary running as a process.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    /// Where `/health/*` and `/metrics` answer: order-api's `Http__OpsPort`,
    /// the one port of the other services.
    pub ops_port: u16,
    pub process: Process,
}

impl Service {
    /// Starts `name` with `env` (plus its own `Http__Port`) and waits until ready.
    pub async fn start(name: &'static str, env: &HashMap<String, String>, log_dir: &Path) -> Self {
        let service = Self::spawn(name, env, log_dir);
        service.wait_ready(Duration::from_secs(40)).await;
        service
    }

    /// Starts `name` without waiting.
    pub fn spawn(name: &'static str, env: &HashMap<String, String>, log_dir: &Path) -> Self {
        let port = free_port();
        let mut env = env.clone();
        env.insert(keys::HTTP_PORT.into(), port.to_string());
        // Each service as its own NATS user (docker/nats/auth.conf), unless
        // the test chose who it is.
        if env.contains_key(keys::NATS_URL)
            && !env.contains_key(keys::NATS_USER)
            && !env.contains_key(keys::NATS_CREDS_FILE)
        {
            env.extend(nats_user_env(name));
        }
        let ops_port = if name == "order-api" {
            let ops_port = free_port();
            env.insert(keys::HTTP_OPS_PORT.into(), ops_port.to_string());
            ops_port
        } else {
            port
        };
        let log_name = format!("{name}-{port}");
        let process = Process::spawn(&log_name, binary(name), Vec::new(), env, log_dir);
        Self {
            name,
            port,
            ops_port,
            process,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `path` on the ops port (`/health/*`, `/metrics`).
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.ops_port)
    }

    /// A client for the ops port.
    pub fn ops(&self) -> Api {
        Api::new(self.ops_url(""))
    }

    pub async fn ready_status(&self) -> Option<u16> {
        reqwest::get(self.ops_url("/health/ready"))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn wait_ready(&self, within: Duration) {
        let name = self.name;
        let logs = || self.process.logs();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.ready_status().await == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{name} not ready after {within:?}; its log:\n{}", logs());
    }

    /// The service's `/metrics` text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(self.ops_url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }

    /// The value of a Prometheus series line starting with `prefix`, summed.
    pub async fn metric_sum(&self, prefix: &str) -> f64 {
        let text = self.metrics_text().await;
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// The operator step of a deployment: `order-service ensure-topology` with
/// `env` (its NATS settings) as the NATS operator, which creates the streams
/// the services' users may only verify. Panics with its output on failure.
pub async fn run_topology_step(env: &HashMap<String, String>) {
    let mut env = env.clone();
    env.remove(keys::NATS_CREDS_FILE);
    env.extend(nats_user_env(NATS_OPERATOR));
    run_ensure_topology(env).await;
}

/// `order-service ensure-topology` with exactly `env`; panics with its
/// output unless it succeeds.
pub async fn run_ensure_topology<K, V>(env: impl IntoIterator<Item = (K, V)>)
where
    K: AsRef<std::ffi::OsStr>,
    V: AsRef<std::ffi::OsStr>,
{
    let run = tokio::process::Command::new(binary("order-service"))
        .arg(catga_core::service::ENSURE_TOPOLOGY)
        .env_clear()
        .envs(env)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(150), run)
        .await
        .expect("the operator step finishes")
        .expect("the operator step starts");
    assert!(
        output.status.success(),
        "order-service ensure-topology exited with {}:\n{}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// What every service of a test system needs: where NATS, Redis and the
/// webhook are, and the admin JWT secret. Callers add their own settings.
pub fn service_env(nats_url: &str, redis: &str, webhook_url: &str) -> HashMap<String, String> {
    [
        (keys::NATS_URL, nats_url),
        (keys::REDIS_CONFIGURATION, redis),
        (keys::JWT_SECRET, JWT_SECRET),
        (keys::WEBHOOK_URL, webhook_url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The whole system: NATS, Redis, a webhook receiver, order-api, two
/// order-service replicas and a notification-service.
pub struct System {
    pub nats: Nats,
    pub redis: Redis,
    pub webhook: WebhookReceiver,
    pub api: Service,
    pub order_services: Vec<Service>,
    pub notifications: Service,
    pub env: HashMap<String, String>,
    pub logs: TempDir,
    /// What order-api accepts: the clients' tokens come from here.
    pub tokens: Tokens,
}

/// The JWT secret the test system runs with.
pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

impl System {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the system with extra environment for every service; order-api
    /// validates HS256 tokens signed with [`JWT_SECRET`].
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Self {
        Self::start_configured(extra_env, &[], Tokens::Secret(JWT_SECRET.to_owned())).await
    }

    /// Starts the system with order-api taking its keys from `provider`
    /// (`Auth__Authority`, OIDC discovery) and no HS256 secret; the clients'
    /// tokens are signed with `key`, which `provider` must publish.
    pub async fn start_with_identity_provider(
        provider: &IdentityProvider,
        key: &SigningKey,
    ) -> Self {
        Self::start_configured(
            &[
                (keys::AUTH_AUTHORITY, &provider.issuer),
                (keys::AUTH_AUDIENCE, TEST_AUDIENCE),
            ],
            &[keys::JWT_SECRET],
            Tokens::Provider {
                provider: provider.clone(),
                key: Box::new(key.clone()),
            },
        )
        .await
    }

    async fn start_configured(extra_env: &[(&str, &str)], unset: &[&str], tokens: Tokens) -> Self {
        let (nats, redis, webhook) =
            tokio::join!(Nats::start(), Redis::start(), WebhookReceiver::start());
        let logs = TempDir::new().expect("log dir");
        let mut env = service_env(&nats.url(), &redis.configuration(), &webhook.url);
        for key in unset {
            env.remove(*key);
        }
        env.insert(keys::SHUTDOWN_GRACE_SECONDS.into(), "10".into());
        env.insert(keys::LOG_LEVEL.into(), "info,catga_core=debug".into());
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        run_topology_step(&env).await;
        let (api, first, second, notifications) = tokio::join!(
            Service::start("order-api", &env, logs.path()),
            Service::start("order-service", &env, logs.path()),
            Service::start("order-service", &env, logs.path()),
            Service::start("notification-service", &env, logs.path()),
        );
        Self {
            nats,
            redis,
            webhook,
            api,
            order_services: vec![first, second],
            notifications,
            env,
            logs,
            tokens,
        }
    }

    /// The API client, acting as the admin (see [`Api::as_customer`]).
    pub fn client(&self) -> Api {
        self.client_of(&self.api)
    }

    /// A client of another order-api of this system.
    pub fn client_of(&self, api: &Service) -> Api {
        Api::with_tokens(api.url(""), self.tokens.clone())
    }

    /// Every service's log, for failure messages.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for service in std::iter::once(&self.api)
            .chain(&self.order_services)
            .chain(std::iter::once(&self.notifications))
        {
            out.push_str(&format!(
                "===== {} :{}\n{}",
                service.name,
                service.port,
                service.process.logs()
            ));
        }
        out
    }
}
