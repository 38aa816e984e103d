//! Real `nats-server` and `redis-server` processes on free loopback ports, and
//! in-process HTTP servers on loopback.

use crate::process::{Server, eventually, free_port, strings};
use std::{net::SocketAddr, time::Duration};

use axum::Router;

/// A `nats-server` with JetStream on a free port.
pub struct Nats(pub Server);

impl Nats {
    pub async fn start() -> Self {
        Self(
            Server::start("nats-server", |port, dir| {
                let store = dir.join("jetstream").display().to_string();
                strings(&[
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-sd",
                    &store,
                ])
            })
            .await,
        )
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    /// A JetStream client for tests that inspect or inject messages.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url())
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
            Server::start_on("nats-server", client_ports[i], move |port, dir| {
                let store = dir.join("jetstream").display().to_string();
                strings(&[
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-sd",
                    &store,
                    "-n",
                    &format!("node{i}"),
                    "--cluster_name",
                    "catga",
                    "--cluster",
                    &format!("nats://127.0.0.1:{route_port}"),
                    "--routes",
                    &routes,
                ])
            })
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

    /// A JetStream client connected to the cluster.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let servers: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        let client = async_nats::ConnectOptions::new()
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
