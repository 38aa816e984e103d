//! A replicated Redis watched by Sentinels: a master, replicas and three
//! `redis-sentinel` processes (Debian's `redis-sentinel` package) on free
//! loopback ports, with short detection times so a failover takes seconds.

use std::time::Duration;

use crate::{Server, eventually, free_port, process::strings};

/// The Sentinel service name of the group.
pub const SENTINEL_SERVICE: &str = "mymaster";

/// Redis nodes (the first starts as master) and the Sentinels watching them.
pub struct SentinelGroup {
    pub nodes: Vec<Server>,
    pub sentinels: Vec<Server>,
    passwords: Option<Passwords>,
}

/// The passwords of a protected group, as in the deployment: the data
/// password (the nodes' `requirepass`, the Sentinels' `auth-pass`) and the
/// Sentinels' own `requirepass`.
#[derive(Clone)]
pub struct Passwords {
    pub data: String,
    pub sentinel: String,
}

/// `redis-server` arguments for a node on `port` with AOF in `dir`, replicating
/// `master` if given, protected by `passwords` if given.
pub fn redis_node(
    port: u16,
    dir: &std::path::Path,
    master: Option<u16>,
    passwords: Option<&Passwords>,
) -> Vec<String> {
    let mut args = strings(&[
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &dir.display().to_string(),
        "--appendonly",
        "yes",
        "--save",
        "",
    ]);
    if let Some(master) = master {
        args.extend(strings(&["--replicaof", "127.0.0.1", &master.to_string()]));
    }
    if let Some(passwords) = passwords {
        args.extend(strings(&[
            "--requirepass",
            &passwords.data,
            "--masterauth",
            &passwords.data,
        ]));
    }
    args
}

/// `redis://` URL of a local server, with `password` if any.
fn local_url(port: u16, password: Option<&str>) -> String {
    match password {
        Some(password) => format!("redis://:{password}@127.0.0.1:{port}"),
        None => format!("redis://127.0.0.1:{port}"),
    }
}

impl SentinelGroup {
    /// A master with `replicas` replicas and three Sentinels (quorum 2).
    pub async fn start(replicas: usize) -> Self {
        Self::start_protected(replicas, None).await
    }

    /// The same, the nodes and the Sentinels protected by `passwords`.
    pub async fn start_protected(replicas: usize, passwords: Option<Passwords>) -> Self {
        let master_port = free_port();
        let mut nodes = vec![
            Server::start_on("redis-server", master_port, |port, dir| {
                redis_node(port, dir, None, passwords.as_ref())
            })
            .await,
        ];
        for _ in 0..replicas {
            nodes.push(
                Server::start("redis-server", |port, dir| {
                    redis_node(port, dir, Some(master_port), passwords.as_ref())
                })
                .await,
            );
        }
        let auth = passwords.as_ref().map_or_else(String::new, |p| {
            format!(
                "requirepass \"{sentinel}\"\nsentinel sentinel-pass \"{sentinel}\"\n\
                 sentinel auth-pass {SENTINEL_SERVICE} \"{data}\"\n",
                sentinel = p.sentinel,
                data = p.data
            )
        });
        let mut sentinels = Vec::new();
        for _ in 0..3 {
            sentinels.push(
                Server::start("redis-sentinel", |port, dir| {
                    // Sentinel rewrites its configuration file: it must be writable.
                    let conf = dir.join("sentinel.conf");
                    std::fs::write(
                        &conf,
                        format!(
                            "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                             sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master_port} 2\n\
                             sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n\
                             sentinel failover-timeout {SENTINEL_SERVICE} 4000\n\
                             sentinel parallel-syncs {SENTINEL_SERVICE} 1\n{auth}",
                            dir = dir.display()
                        ),
                    )
                    .expect("write sentinel.conf");
                    vec![conf.display().to_string()]
                })
                .await,
            );
        }
        let group = Self {
            nodes,
            sentinels,
            passwords,
        };
        group.wait_until_watched(replicas).await;
        let data_password = group.passwords.as_ref().map(|p| p.data.as_str());
        eventually(
            "the replicas are in sync",
            Duration::from_secs(30),
            || async {
                (online_replicas_of(master_port, data_password).await? >= replicas).then_some(())
            },
        )
        .await;
        group
    }

    /// `Redis__Configuration` in the StackExchange.Redis Sentinel form.
    pub fn configuration(&self) -> String {
        let mut parts: Vec<String> = self
            .sentinels
            .iter()
            .map(|s| format!("127.0.0.1:{}", s.port))
            .collect();
        parts.push(format!("serviceName={SENTINEL_SERVICE}"));
        parts.join(",")
    }

    /// The master's port, as the Sentinels report it.
    pub async fn master_port(&self) -> Option<u16> {
        let mut conn = self.sentinel_connection().await.ok()?;
        let (_, port): (String, String) = redis::cmd("SENTINEL")
            .arg("get-master-addr-by-name")
            .arg(SENTINEL_SERVICE)
            .query_async(&mut conn)
            .await
            .ok()?;
        port.parse().ok()
    }

    /// The node listening on `port`.
    pub fn node(&self, port: u16) -> &Server {
        self.nodes
            .iter()
            .find(|n| n.port == port)
            .expect("a node of the group")
    }

    /// Waits until the Sentinels report a master on a port other than `old`
    /// and that node answers as master.
    pub async fn wait_for_new_master(&self, old: u16, within: Duration) -> u16 {
        eventually("Sentinel promotes a replica", within, || async {
            let port = self.master_port().await.filter(|p| *p != old)?;
            (role(port).await.as_deref() == Some("master")).then_some(port)
        })
        .await
    }

    async fn sentinel_connection(&self) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
        let port = self.sentinels.first().expect("a sentinel").port;
        let password = self.passwords.as_ref().map(|p| p.sentinel.as_str());
        redis::Client::open(local_url(port, password))?
            .get_multiplexed_async_connection()
            .await
    }

    async fn wait_until_watched(&self, replicas: usize) {
        eventually(
            "Sentinels see the master, its replicas and each other",
            Duration::from_secs(30),
            || async {
                let mut conn = self.sentinel_connection().await.ok()?;
                let master: Vec<String> = redis::cmd("SENTINEL")
                    .arg("master")
                    .arg(SENTINEL_SERVICE)
                    .query_async(&mut conn)
                    .await
                    .ok()?;
                let field = |name: &str| {
                    master
                        .iter()
                        .position(|f| f == name)
                        .and_then(|i| master.get(i + 1))
                        .and_then(|v| v.parse::<usize>().ok())
                };
                (field("num-slaves")? >= replicas && field("num-other-sentinels")? >= 2)
                    .then_some(())
            },
        )
        .await;
    }
}

/// What the node on `port` says it is (`master`, `slave`), if it answers.
pub async fn role(port: u16) -> Option<String> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}")).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let role: Vec<redis::Value> = redis::cmd("ROLE").query_async(&mut conn).await.ok()?;
    match role.first()? {
        redis::Value::BulkString(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
        redis::Value::SimpleString(s) => Some(s.clone()),
        _ => None,
    }
}

/// How many replicas the master on `port` streams to (state `online`).
pub async fn online_replicas(port: u16) -> Option<usize> {
    online_replicas_of(port, None).await
}

async fn online_replicas_of(port: u16, password: Option<&str>) -> Option<usize> {
    let client = redis::Client::open(local_url(port, password)).ok()?;
    let mut conn = client.get_multiplexed_async_connection().await.ok()?;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .ok()?;
    Some(
        info.lines()
            .filter(|line| line.starts_with("slave") && line.contains("state=online"))
            .count(),
    )
}
