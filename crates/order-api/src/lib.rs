//! order-api: the HTTP ingress of the Catga order system.
//!
//! [`run`] serves the API until shutdown. With `NATS__Url` set it publishes
//! commands to JetStream and reads orders from Redis; without it, it runs the
//! whole system in this one process on the in-memory transport and store (the
//! embedded mode), with order-service and notification-service as tasks.

pub mod config;
pub mod http;

use std::sync::{Arc, atomic::AtomicBool};

use catga_core::{
    CancellationToken,
    config::NatsSettings,
    contracts::{redis_keys, services},
    domain::default_catalog,
    health::{BrokerCheck, Health, ReadinessCheck, StoreCheck},
    idempotency::{IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore},
    messaging::{Broker, JetStreamBroker, MemoryBroker},
    service,
    store::{MemoryStore, OrderStore, RedisStore, connect_redis},
};
use tokio::{net::TcpListener, task::JoinSet};

pub use config::{Mode, Settings};
pub use http::{AppState, app};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] catga_core::store::StoreError),
    #[error(transparent)]
    Messaging(#[from] catga_core::messaging::MessagingError),
    #[error(transparent)]
    Notify(#[from] notification_service::notifier::NotifyError),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
    #[error("invalid JWT secret: {0}")]
    Jwt(#[from] jsonwebtoken::errors::Error),
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
        publisher: broker_as_publisher(broker),
        idempotency: settings.catga.enable_idempotency.then_some(idempotency),
        idempotency_ttl: settings.catga.idempotency_ttl,
        jwt_key,
        max_body_bytes: settings.max_body_bytes,
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "order-api listening");
    }
    tokio::spawn(service::watch_health(health.clone(), shutdown.clone()));
    let drain = service::drain_on(&shutdown, &health);
    catga_core::http::serve(listener, app(state, health), drain).await?;
    embedded_stop.cancel();
    while embedded.join_next().await.is_some() {}
    tracing::info!("order-api stopped");
    Ok(())
}

fn broker_as_publisher(broker: Arc<dyn Broker>) -> Arc<dyn catga_core::messaging::Publisher> {
    broker
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
) -> Result<Backends, Error> {
    let broker: Arc<dyn Broker> =
        Arc::new(JetStreamBroker::connect(nats, services::ORDER_API).await?);
    let redis_conn = connect_redis(redis)?;
    let store: Arc<dyn OrderStore> = Arc::new(RedisStore::new(redis_conn.clone()));
    let topology_ready = Arc::new(AtomicBool::new(false));
    let checks: Vec<Box<dyn ReadinessCheck>> = vec![
        Box::new(BrokerCheck {
            broker: broker.clone(),
            topology_ready: topology_ready.clone(),
        }),
        Box::new(StoreCheck {
            store: store.clone(),
        }),
    ];
    tokio::spawn(service::ensure_topology(
        broker.clone(),
        topology_ready,
        shutdown.clone(),
    ));
    tokio::spawn(order_service::seed_catalog(store.clone(), shutdown.clone()));
    tracing::info!(nats = ?nats.servers, redis = %redis, "order-api started");
    Ok(Backends {
        store,
        broker,
        idempotency: Arc::new(RedisIdempotencyStore::new(
            redis_conn,
            redis_keys::HTTP_IDEMPOTENCY_PREFIX,
        )),
        health: Health::new(services::ORDER_API, checks),
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
    Ok(Backends {
        store: Arc::new(store),
        broker: Arc::new(broker),
        idempotency: Arc::new(MemoryIdempotencyStore::new()),
        health: Health::new(services::ORDER_API, Vec::new()),
    })
}
