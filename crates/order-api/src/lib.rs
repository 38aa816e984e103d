//! order-api: the HTTP ingress of the Catga order system.
//!
//! [`run`] serves the API until shutdown. With `NATS__Url` set it publishes
//! commands to JetStream and reads orders from Redis; without it, it runs the
//! whole system in this one process on the in-memory transport and store (the
//! embedded mode), with order-service and notification-service as tasks.

pub mod auth;
pub mod config;
pub mod http;
#[cfg(test)]
mod test_util;

use std::sync::Arc;

use catga_core::{
    CancellationToken,
    config::NatsSettings,
    contracts::{redis_keys, services},
    domain::default_catalog,
    health::Health,
    idempotency::{IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore},
    messaging::{Broker, MemoryBroker},
    service::{self, Connections, ServiceError},
    store::{MemoryStore, OrderStore},
};
use tokio::{net::TcpListener, task::JoinSet};

pub use config::{Mode, Settings};
pub use http::{AppState, app};

/// A failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Notify(#[from] notification_service::notifier::NotifyError),
    #[error("invalid JWT secret: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
}

impl From<catga_core::store::StoreError> for Error {
    fn from(err: catga_core::store::StoreError) -> Self {
        Error::Service(err.into())
    }
}

impl From<std::io::Error> for Error {
    fn from(err: std::io::Error) -> Self {
        Error::Service(err.into())
    }
}

/// Serves order-api on `listener` until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let jwt_key = settings
        .jwt_secret
        .as_ref()
        .map(|secret| jsonwebtoken::DecodingKey::from_secret(secret.expose()).map(Arc::new))
        .transpose()?;
    let grace = settings.common.shutdown_grace;
    // Background work of the embedded mode, stopped after the HTTP server.
    let mut embedded = JoinSet::new();
    let embedded_stop = CancellationToken::new();
    let backends = match &settings.mode {
        Mode::Distributed { nats, redis } => distributed(nats, redis, &shutdown).await?,
        Mode::Embedded { channel } => {
            embedded_backends(channel, grace, &mut embedded, &embedded_stop).await?
        }
    };
    let Backends {
        store,
        broker,
        idempotency,
        health,
    } = backends;
    let state = AppState {
        store,
        publisher: broker,
        idempotency: settings.catga.enable_idempotency.then_some(idempotency),
        idempotency_ttl: settings.catga.idempotency_ttl,
        jwt_key,
        max_body_bytes: settings.max_body_bytes,
        max_concurrent_requests: settings.max_concurrent_requests,
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "order-api listening");
    }
    let drain = service::drain_on(&shutdown, &health);
    catga_core::http::serve(listener, app(state, health), drain).await?;
    embedded_stop.cancel();
    while embedded.join_next().await.is_some() {}
    tracing::info!("order-api stopped");
    Ok(())
}

/// What the API runs on.
struct Backends {
    store: Arc<dyn OrderStore>,
    broker: Arc<dyn Broker>,
    idempotency: Arc<dyn IdempotencyStore>,
    health: Health,
}

async fn distributed(
    nats: &NatsSettings,
    redis: &catga_core::config::RedisSettings,
    shutdown: &CancellationToken,
) -> Result<Backends, ServiceError> {
    let connections = Connections::open(services::ORDER_API, nats, redis, shutdown).await?;
    tokio::spawn(seed_catalog(connections.store.clone(), shutdown.clone()));
    Ok(Backends {
        store: connections.store,
        broker: connections.broker,
        idempotency: Arc::new(RedisIdempotencyStore::new(
            connections.redis,
            redis_keys::HTTP_IDEMPOTENCY_PREFIX,
        )),
        health: connections.health,
    })
}

async fn embedded_backends(
    channel: &notification_service::Channel,
    grace: std::time::Duration,
    tasks: &mut JoinSet<()>,
    stop: &CancellationToken,
) -> Result<Backends, Error> {
    tracing::warn!(
        "EMBEDDED MODE: order-service and notification-service run inside this process on an \
         in-memory transport and store; nothing is persisted. Not for production: set NATS__Url \
         (and Redis__Configuration) to run distributed."
    );
    let broker = MemoryBroker::new();
    let store = MemoryStore::new();
    store.ensure_catalog(&default_catalog()).await?;
    let nats = NatsSettings::default();
    tasks.spawn(order_service::consume(
        Arc::new(broker.clone()),
        Arc::new(store.clone()),
        order_service::consumer_spec(&nats),
        grace,
        stop.clone(),
    ));
    tasks.spawn(notification_service::consume(
        Arc::new(broker.clone()),
        Arc::new(MemoryIdempotencyStore::new()),
        notification_service::Notifier::new(channel.clone())?,
        notification_service::consumer_spec(&nats),
        grace,
        stop.clone(),
    ));
    // Distributed health is watched by `Connections::open`.
    let health = Health::new(services::ORDER_API, Vec::new());
    tasks.spawn(service::watch_health(health.clone(), stop.clone()));
    Ok(Backends {
        store: Arc::new(store),
        broker: Arc::new(broker),
        idempotency: Arc::new(MemoryIdempotencyStore::new()),
        health,
    })
}

/// Seeds the default catalog once Redis answers. order-api owns the catalog
/// (it prices orders and administers products), so it alone seeds it; the
/// script only adds missing products, so every replica may run it.
async fn seed_catalog(store: Arc<dyn OrderStore>, shutdown: CancellationToken) {
    let catalog = default_catalog();
    catga_core::shutdown::retry_until_ok("seed the catalog", &shutdown, || {
        store.ensure_catalog(&catalog)
    })
    .await;
}
