//! order-api: the HTTP ingress of the Catga order system.
//!
//! [`run`] serves the API on the [`Backends`] it is handed until shutdown.
//! [`Backends::connect`] opens the distributed ones (NATS JetStream, Redis).
//! The binary picks: without `NATS__Url` it hands over the whole system
//! running in its own process (crate `catga-embedded`); this library never
//! knows which.

pub mod auth;
pub mod config;
pub mod http;
#[cfg(test)]
mod test_util;

use std::sync::Arc;

use catga_core::{
    CancellationToken,
    contracts::{redis_keys, services},
    domain::default_catalog,
    health::Health,
    idempotency::{IdempotencyStore, RedisIdempotencyStore},
    messaging::Publisher,
    service::{self, Connections, ServiceError},
    store::OrderStore,
};
use tokio::net::TcpListener;

pub use config::{Distributed, Settings};
pub use http::{AppState, app, ops_app};

/// A failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("invalid JWT secret")]
    Jwt(#[source] jsonwebtoken::errors::Error),
}

/// What the API runs on.
pub struct Backends {
    /// Orders and the catalog.
    pub store: Arc<dyn OrderStore>,
    /// Where commands go.
    pub publisher: Arc<dyn Publisher>,
    /// `Idempotency-Key` records.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Readiness of the backends, served on `/health`.
    pub health: Health,
}

impl Backends {
    /// JetStream and Redis. Connects in the background, so order-api starts
    /// (not ready) while either is away, and seeds the catalog once Redis
    /// answers.
    pub async fn connect(
        distributed: &Distributed,
        shutdown: &CancellationToken,
    ) -> Result<Self, Error> {
        let connections = Connections::open(
            services::ORDER_API,
            &distributed.nats,
            &distributed.redis,
            shutdown,
        )
        .await?;
        tokio::spawn(seed_catalog(connections.store.clone(), shutdown.clone()));
        Ok(Self {
            store: connections.store,
            publisher: connections.broker,
            idempotency: Arc::new(RedisIdempotencyStore::new(
                connections.redis,
                redis_keys::HTTP_IDEMPOTENCY_PREFIX,
            )),
            health: connections.health,
        })
    }
}

/// Serves order-api on `listener`, on `backends`, until `shutdown`; requests
/// in flight are finished first. The probes and `/metrics` are served on
/// `Http__OpsPort` until then too.
pub async fn run(
    settings: Settings,
    backends: Backends,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let ops_listener = match settings.common.ops_port {
        Some(port) => Some(
            TcpListener::bind(("0.0.0.0", port))
                .await
                .map_err(ServiceError::from)?,
        ),
        None => None,
    };
    let jwt_key = settings
        .jwt_secret
        .as_ref()
        .map(|secret| jsonwebtoken::DecodingKey::from_secret(secret.expose()).map(Arc::new))
        .transpose()
        .map_err(Error::Jwt)?;
    let Backends {
        store,
        publisher,
        idempotency,
        health,
    } = backends;
    let state = AppState {
        store,
        publisher,
        idempotency: settings.catga.enable_idempotency.then_some(idempotency),
        idempotency_ttl: settings.catga.idempotency_ttl,
        jwt_key,
        max_body_bytes: settings.max_body_bytes,
        body_timeout: settings.body_timeout,
        max_concurrent_requests: settings.max_concurrent_requests,
        rate_limit: http::RateLimit::new(settings.rate_limit),
    };
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "order-api listening");
    }
    let drain = service::drain_on(&shutdown, &health);
    let limits = settings.common.http_limits;
    // The ops server stops after the API: probes answer (503) while it drains.
    let ops_stop = CancellationToken::new();
    let ops = ops_listener.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "health and metrics listening");
        }
        tokio::spawn(catga_core::http::serve(
            listener,
            ops_app(health.clone()),
            ops_stop.clone(),
            limits,
        ))
    });
    let served = catga_core::http::serve(listener, app(state), drain, limits).await;
    ops_stop.cancel();
    if let Some(ops) = ops {
        ops.await
            .map_err(|source| ServiceError::Task {
                task: "ops server",
                source,
            })?
            .map_err(ServiceError::from)?;
    }
    served.map_err(ServiceError::from)?;
    tracing::info!("order-api stopped");
    Ok(())
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
