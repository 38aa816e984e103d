//! Real `nats-server` and `redis-server` processes on free loopback ports, and
//! in-process HTTP servers on loopback.

use crate::process::{Server, eventually, free_port, strings};
use std::{collections::HashMap, net::SocketAddr, path::Path, time::Duration};

use catga_core::{config::keys, contracts::services};

use axum::Router;

/// The shipped NATS users and permissions (docker/nats/auth.conf), which
/// every test server runs with.
pub fn nats_auth_conf() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../docker/nats/auth.conf")
}

/// The NATS users of docker/nats/auth.conf: the operator and one per service
/// (named like the service).
pub const NATS_USERS: [&str; 4] = [
    NATS_OPERATOR,
    services::ORDER_API,
    services::ORDER_SERVICE,
    services::NOTIFICATION_SERVICE,
];

/// The user who may change streams.
pub const NATS_OPERATOR: &str = "operator";

/// The password a test server expects of `user`.
pub fn nats_password(user: &str) -> String {
    format!("test-{user}-password")
}

/// The variable of nats-server's environment auth.conf reads `user`'s password from.
pub fn nats_password_variable(user: &str) -> String {
    format!("NATS_{}_PASSWORD", user.to_uppercase().replace('-', "_"))
}

/// Every user's password, as nats-server's environment.
fn nats_password_env() -> HashMap<String, String> {
    NATS_USERS
        .iter()
        .map(|user| (nats_password_variable(user), nats_password(user)))
        .collect()
}

/// `NATS__User`/`NATS__Password` of `user`.
pub fn nats_user_env(user: &str) -> [(String, String); 2] {
    [
        (keys::NATS_USER.to_owned(), user.to_owned()),
        (keys::NATS_PASSWORD.to_owned(), nats_password(user)),
    ]
}

/// The arguments of a JetStream `nats-server` on loopback `port`, with its
/// store in `dir` and the shipped users and permissions.
pub fn nats_server_args(port: u16, dir: &Path) -> Vec<String> {
    let store = dir.join("jetstream").display().to_string();
    let auth = nats_auth_conf().display().to_string();
    strings(&[
        "-c",
        &auth,
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-sd",
        &store,
    ])
}

/// catga-core's settings for `servers` as `user` (otherwise the defaults).
pub fn nats_settings_as(servers: Vec<String>, user: &str) -> catga_core::config::NatsSettings {
    catga_core::config::NatsSettings {
        servers,
        credentials: catga_core::config::NatsCredentials::UserPassword {
            user: user.to_owned(),
            password: nats_password(user),
        },
        ..catga_core::config::NatsSettings::default()
    }
}

/// A client logging in as the operator.
fn operator_options() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::with_user_and_password(
        NATS_OPERATOR.to_owned(),
        nats_password(NATS_OPERATOR),
    )
}

/// A `nats-server` with JetStream on a free port, with the shipped users and
/// permissions.
pub struct Nats(pub Server);

impl Nats {
    pub async fn start() -> Self {
        Self(
            Server::start_with_env(
                "nats-server",
                free_port(),
                nats_password_env(),
                nats_server_args,
            )
            .await,
        )
    }

    /// As [`Nats::start`], with the monitoring endpoint (`/varz`) on `monitor_port`.
    pub async fn start_monitored(monitor_port: u16) -> Self {
        Self(
            Server::start_with_env(
                "nats-server",
                free_port(),
                nats_password_env(),
                |port, dir| {
                    let mut args = nats_server_args(port, dir);
                    args.extend(strings(&["-m", &monitor_port.to_string()]));
                    args
                },
            )
            .await,
        )
    }

    /// The URL without credentials (`NATS__Url` of the services, which add their users).
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    /// The URL with the operator's credentials, for clients that may do
    /// anything (catga_core's settings take a URL's credentials).
    pub fn operator_url(&self) -> String {
        format!(
            "nats://{NATS_OPERATOR}:{}@127.0.0.1:{}",
            nats_password(NATS_OPERATOR),
            self.0.port
        )
    }

    /// A JetStream client of the operator, for tests that inspect or inject messages.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = operator_options()
            .connect(self.url())
            .await
            .expect("connect to NATS");
        async_nats::jetstream::new(client)
    }
}

/// A JetStream cluster of `nats-server` nodes routed on loopback.
pub struct NatsCluster {
    pub nodes: Vec<Server>,
}

impl NatsCluster {
    pub async fn start(size: usize) -> Self {
        let client_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = futures::future::join_all((0..size).map(|i| {
            let routes = routes.clone();
            let route_port = route_ports[i];
            Server::start_with_env(
                "nats-server",
                client_ports[i],
                nats_password_env(),
                move |port, dir| {
                    let mut args = nats_server_args(port, dir);
                    args.extend(strings(&[
                        "-n",
                        &format!("node{i}"),
                        "--cluster_name",
                        "catga",
                        "--cluster",
                        &format!("nats://127.0.0.1:{route_port}"),
                        "--routes",
                        &routes,
                    ]));
                    args
                },
            )
        }))
        .await;
        Self { nodes }
    }

    /// `NATS__Url`: every node, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until the cluster has elected a JetStream meta leader and
    /// answers account requests (a fresh cluster needs a few seconds).
    pub async fn wait_for_jetstream(&self) {
        let js = self.jetstream().await;
        eventually("the JetStream cluster", Duration::from_secs(60), || async {
            // Any JetStream API answer (here: "no such stream") means the
            // cluster has a meta leader; a timeout means it has not yet.
            match js.get_stream("CATGA_READINESS_PROBE").await {
                Ok(_) => Some(()),
                Err(err) => match err.kind() {
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(e)
                        if e.code() == 404 =>
                    {
                        Some(())
                    }
                    _ => None,
                },
            }
        })
        .await;
    }

    /// A JetStream client of the operator, connected to the cluster.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let servers: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        let client = operator_options()
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .expect("connect to NATS");
        async_nats::jetstream::new(client)
    }
}

/// A `redis-server` with AOF persistence on a free port.
pub struct Redis(pub Server);

impl Redis {
    pub async fn start() -> Self {
        Self(
            Server::start("redis-server", |port, dir| {
                let dir = dir.display().to_string();
                strings(&[
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    &dir,
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                ])
            })
            .await,
        )
    }

    pub fn configuration(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }

    /// A plain connection to this server, for tests that inspect keys or
    /// reconfigure it (`CONFIG SET`) behind the store's back.
    pub async fn connection(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://{}", self.configuration()))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
}

/// Serves `app` on a free loopback port for the rest of the test.
pub async fn serve_on_loopback(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}
