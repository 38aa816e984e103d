//! The one place that hands out the Redis connection to everything that uses
//! Redis (the store, the idempotency records, readiness): [`RedisConnection`].
//!
//! On one address it is a self-healing multiplexed connection. Behind Sentinel
//! it asks the Sentinels for the master, and asks again when the connection is
//! lost, when a write meets `READONLY` (the node was demoted), or when a
//! Sentinel announces `+switch-master` ([`RedisConnection::follow_failovers`]);
//! redis-rs' own Sentinel client resolves once and does not follow.
//!
//! [`RedisConnection::replicated`] gives a handle whose every command is sent
//! together with `WAIT replicas timeout` on the same socket, so an answer
//! means the change is held by that many replicas too (docs/reliability.md).

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures::StreamExt;
use redis::{
    Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, TlsMode,
    Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};
use tokio_util::sync::CancellationToken;

use crate::config::{RedisSettings, RedisTopology, ReplicaWait};

/// A Redis connection that follows the master. Cheap to clone; clones share it.
#[derive(Clone)]
pub struct RedisConnection {
    shared: Arc<Shared>,
    /// Set on the handles whose commands must reach replicas before they answer.
    wait: Option<ReplicaWait>,
}

struct Shared {
    config: ConnectionManagerConfig,
    source: Source,
    /// The connection in use, and how many times the master was resolved
    /// (so that many failing requests on one stale connection resolve once).
    current: Mutex<Option<(ConnectionManager, u64)>>,
    wait: ReplicaWait,
    db: i64,
}

enum Source {
    Standalone(ConnectionManager),
    Sentinel {
        client: Box<tokio::sync::Mutex<SentinelClient>>,
        service_name: String,
        generation: Mutex<u64>,
    },
}

impl RedisConnection {
    /// Opens the connection lazily: nothing is contacted until the first
    /// command, so a service starts (not ready) while Redis is away.
    pub fn open(settings: &RedisSettings) -> RedisResult<Self> {
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(response_timeout(settings.wait)))
            .set_max_delay(Duration::from_secs(2));
        let source = match &settings.topology {
            RedisTopology::Standalone { .. } => Source::Standalone(
                redis::Client::open(settings.connection_url())?
                    .get_connection_manager_lazy(config.clone())?,
            ),
            RedisTopology::Sentinel {
                sentinels,
                service_name,
                password,
            } => Source::Sentinel {
                client: Box::new(tokio::sync::Mutex::new(sentinel_client(
                    settings,
                    sentinels,
                    service_name,
                    password.as_deref(),
                )?)),
                service_name: service_name.clone(),
                generation: Mutex::new(0),
            },
        };
        Ok(Self {
            shared: Arc::new(Shared {
                config,
                source,
                current: Mutex::new(None),
                wait: settings.wait,
                db: settings.database,
            }),
            wait: None,
        })
    }

    /// A handle whose commands answer only once the configured number of
    /// replicas hold them (a no-op when that number is 0). A short or failed
    /// wait is a transient error (`NOREPLICAS`): the write may or may not
    /// survive a failover, so the caller must not acknowledge it, and retries.
    pub fn replicated(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            wait: (self.shared.wait.replicas > 0).then_some(self.shared.wait),
        }
    }

    /// The connection to use now, resolving the master through Sentinel when
    /// there is none.
    async fn current(&self) -> RedisResult<(ConnectionManager, u64)> {
        match &self.shared.source {
            Source::Standalone(conn) => Ok((conn.clone(), 0)),
            Source::Sentinel {
                client, generation, ..
            } => {
                if let Some(current) = self.lock_current().clone() {
                    return Ok(current);
                }
                // One resolution at a time; whoever waited uses its result.
                let mut client = client.lock().await;
                if let Some(current) = self.lock_current().clone() {
                    return Ok(current);
                }
                let master = client.async_get_client().await?;
                let conn = master.get_connection_manager_lazy(self.shared.config.clone())?;
                let generation = {
                    let mut generation = generation.lock().unwrap_or_else(PoisonError::into_inner);
                    *generation += 1;
                    *generation
                };
                tracing::info!(generation, "Redis master resolved through Sentinel");
                *self.lock_current() = Some((conn.clone(), generation));
                Ok((conn, generation))
            }
        }
    }

    fn lock_current(&self) -> std::sync::MutexGuard<'_, Option<(ConnectionManager, u64)>> {
        self.shared
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the connection of `generation` (if it is still the current one),
    /// so the next command asks Sentinel for the master again.
    fn forget(&self, generation: u64, why: &str) {
        if matches!(self.shared.source, Source::Standalone(_)) {
            return;
        }
        let mut current = self.lock_current();
        if current.as_ref().is_some_and(|(_, g)| *g == generation) {
            tracing::warn!(
                generation,
                why,
                "Redis master connection dropped; resolving again"
            );
            *current = None;
        }
    }

    /// After `result`, whether the master may have moved.
    fn check(&self, generation: u64, result: &RedisResult<Value>) {
        match result {
            Err(err) if master_may_have_moved(err) => self.forget(generation, err.category()),
            Ok(Value::ServerError(err)) if err.kind() == Some(ServerErrorKind::ReadOnly) => {
                self.forget(generation, "READONLY")
            }
            _ => {}
        }
    }

    /// Listens to the Sentinels for `+switch-master` of this service and drops
    /// the connection when it is announced, until `shutdown`. Returns at once
    /// on one address. Reconnects to a Sentinel after a second when the
    /// subscription breaks.
    pub async fn follow_failovers(self, shutdown: CancellationToken) {
        let Source::Sentinel {
            client,
            service_name,
            ..
        } = &self.shared.source
        else {
            return;
        };
        while !shutdown.is_cancelled() {
            let subscribed = async {
                let sentinel = client.lock().await.async_get_sentinel_client().await?;
                let mut pubsub = sentinel.get_async_pubsub().await?;
                pubsub.subscribe("+switch-master").await?;
                Ok::<_, RedisError>(pubsub)
            };
            let mut pubsub = tokio::select! {
                () = shutdown.cancelled() => return,
                subscribed = subscribed => match subscribed {
                    Ok(pubsub) => pubsub,
                    Err(err) => {
                        tracing::debug!(error = %err, "cannot subscribe to a Sentinel; retrying");
                        tokio::select! {
                            () = shutdown.cancelled() => return,
                            () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                },
            };
            let mut messages = pubsub.on_message();
            loop {
                let message = tokio::select! {
                    () = shutdown.cancelled() => return,
                    message = messages.next() => message,
                };
                let Some(message) = message else { break };
                // "<name> <old-ip> <old-port> <new-ip> <new-port>"
                let payload: String = message.get_payload().unwrap_or_default();
                if payload.split(' ').next() == Some(service_name.as_str()) {
                    tracing::warn!(switch = %payload, "Sentinel switched the Redis master");
                    let generation = self.lock_current().as_ref().map(|(_, g)| *g);
                    if let Some(generation) = generation {
                        self.forget(generation, "+switch-master");
                    }
                }
            }
        }
    }
}

fn sentinel_client(
    settings: &RedisSettings,
    sentinels: &[(String, u16)],
    service_name: &str,
    sentinel_password: Option<&str>,
) -> RedisResult<SentinelClient> {
    let addresses = sentinels.iter().map(|(host, port)| {
        if settings.tls {
            redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            }
        } else {
            redis::ConnectionAddr::Tcp(host.clone(), *port)
        }
    });
    let mut builder =
        SentinelClientBuilder::new(addresses, service_name, SentinelServerType::Master)?
            .set_client_to_redis_db(settings.database);
    if settings.tls {
        builder = builder
            .set_client_to_redis_tls_mode(TlsMode::Secure)
            .set_client_to_sentinel_tls_mode(TlsMode::Secure);
    }
    if let Some(user) = &settings.username {
        builder = builder.set_client_to_redis_username(user);
    }
    if let Some(password) = &settings.password {
        builder = builder.set_client_to_redis_password(password);
    }
    if let Some(password) = sentinel_password {
        builder = builder.set_client_to_sentinel_password(password);
    }
    builder.build()
}

/// A command that waits for replicas takes up to the wait's timeout longer.
fn response_timeout(wait: ReplicaWait) -> Duration {
    Duration::from_secs(5) + wait.timeout
}

/// Errors after which the connection may point at a node that is no longer
/// the master: the connection broke, timed out, or the node refused a write.
fn master_may_have_moved(err: &RedisError) -> bool {
    err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(
            err.kind(),
            ErrorKind::Io
                | ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        )
}

/// The reply to `WAIT` when fewer replicas than wanted acknowledged in time.
fn not_replicated(wait: ReplicaWait, acked: i64) -> RedisError {
    RedisError::from((
        ErrorKind::Server(ServerErrorKind::TryAgain),
        "the write is not yet held by enough replicas",
        format!(
            "{acked} of {} acknowledged within {} ms",
            wait.replicas,
            wait.timeout.as_millis()
        ),
    ))
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (mut conn, generation) = self.current().await?;
            let Some(wait) = self.wait else {
                let result = conn.req_packed_command(cmd).await;
                self.check(generation, &result);
                return result;
            };
            // The command and its WAIT go out together on one socket, so the
            // WAIT covers this write (and whatever went before it there).
            let mut pipeline = redis::pipe();
            pipeline
                .add_command(cmd.clone())
                .cmd("WAIT")
                .arg(wait.replicas)
                .arg(u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX));
            let result = conn
                .req_packed_commands(&pipeline, 0, 2)
                .await
                .and_then(|replies| {
                    let mut replies = replies.into_iter();
                    match (replies.next(), replies.next()) {
                        (Some(reply), Some(acked)) => Ok((reply, acked)),
                        _ => Err(RedisError::from((
                            ErrorKind::UnexpectedReturnType,
                            "a command with WAIT did not get two replies",
                        ))),
                    }
                });
            let (reply, acked) = match result {
                Ok(replies) => replies,
                Err(err) => {
                    let result = Err(err);
                    self.check(generation, &result);
                    return result;
                }
            };
            let reply = Ok(reply);
            self.check(generation, &reply);
            // A refused command changed nothing: its error is the answer.
            if matches!(reply, Ok(Value::ServerError(_))) {
                return reply;
            }
            match acked {
                Value::Int(acked) if acked >= i64::from(wait.replicas) => reply,
                Value::Int(acked) => Err(not_replicated(wait, acked)),
                Value::ServerError(err) => Err(err.into()),
                _ => Err(RedisError::from((
                    ErrorKind::UnexpectedReturnType,
                    "WAIT did not answer a number",
                ))),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (mut conn, generation) = self.current().await?;
            let result = conn.req_packed_commands(pipeline, offset, count).await;
            if let Err(err) = &result
                && master_may_have_moved(err)
            {
                self.forget(generation, err.category());
            }
            let replies = result?;
            if replies.iter().any(|reply| {
                matches!(reply, Value::ServerError(err) if err.kind() == Some(ServerErrorKind::ReadOnly))
            }) {
                self.forget(generation, "READONLY");
            }
            if let Some(wait) = self.wait {
                let mut waiter = redis::cmd("WAIT");
                waiter
                    .arg(wait.replicas)
                    .arg(u64::try_from(wait.timeout.as_millis()).unwrap_or(u64::MAX));
                // Sent after the pipeline on the same multiplexed connection,
                // so it covers the pipeline's writes, unless the socket broke
                // and was reopened in between: single commands (every script)
                // carry their WAIT in the same write and have no such gap.
                let acked: i64 = waiter.query_async(&mut conn).await?;
                if acked < i64::from(wait.replicas) {
                    return Err(not_replicated(wait, acked));
                }
            }
            Ok(replies)
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}
