//! order-api: the HTTP ingress of the Catga order system.
//!
//! [`run`] serves the API on the [`Backends`] it is handed until shutdown.
//! [`Backends::connect`] opens the distributed ones (NATS JetStream, Redis).
//! The binary picks: without `NATS__Url` it hands over the whole system
//! running in its own process (crate `catga-embedded`); this library never
//! knows which.

pub mod auth;
pub mod catalog;
pub mod config;
pub mod http;
pub mod pending;
#[cfg(test)]
mod test_util;

use std::sync::Arc;

use catga_core::{
    CancellationToken,
    config::keys,
    contracts::{redis_keys, services},
    domain::default_catalog,
    health::Health,
    idempotency::{IdempotencyStore, RedisIdempotencyStore},
    messaging::Publisher,
    service::{self, Connections, ServiceError},
    shutdown::BackgroundTasks,
    store::{Catalog, OrderIntake, OrderQueries, RedisStore},
};
use tokio::net::TcpListener;

use crate::auth::{AuthSettings, Authenticator, Validator};

pub use config::{Distributed, Settings};
pub use http::{AppState, app, ops_app};

/// A failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot set up token validation")]
    Auth(#[from] auth::ValidatorError),
}

/// What order-api asks of the order store: the catalog, taking orders in,
/// and reading them back. Applying commands is order-service's role.
pub trait ApiStore: Catalog + OrderIntake + OrderQueries {}

impl<T: Catalog + OrderIntake + OrderQueries + ?Sized> ApiStore for T {}

/// What the API runs on.
pub struct Backends {
    /// Orders and the catalog.
    pub store: Arc<dyn ApiStore>,
    /// Where commands go.
    pub publisher: Arc<dyn Publisher>,
    /// `Idempotency-Key` records.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Readiness of the backends, served on `/health`.
    pub health: Health,
    /// Their background work (creating streams, readiness gauges, seeding
    /// the catalog); [`run`] waits for it within the shutdown grace.
    pub tasks: BackgroundTasks,
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
        // The same Redis connection as `connections.store`, seen in order-api's roles only.
        let store: Arc<dyn ApiStore> = Arc::new(RedisStore::new(connections.redis.clone()));
        connections.tasks.spawn(
            "seed the catalog",
            seed_catalog(store.clone(), shutdown.clone()),
        );
        connections.tasks.spawn(
            "re-publish overdue pending orders",
            pending::republish_overdue(
                store.clone(),
                connections.broker.clone(),
                distributed.republish_pending_after,
                shutdown.clone(),
            ),
        );
        // Every replica stays in the load balancer through a Redis or NATS
        // outage and answers 503 + Retry-After itself (issue 12).
        connections.health.ready_regardless_of_dependencies();
        Ok(Self {
            store,
            publisher: connections.broker,
            idempotency: Arc::new(RedisIdempotencyStore::new(
                connections.redis,
                redis_keys::HTTP_IDEMPOTENCY_PREFIX,
            )),
            health: connections.health,
            tasks: connections.tasks,
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
    let authenticator = authenticator(&settings.auth)?;
    let ops_listener = match settings.common.ops_port {
        Some(port) => Some(
            TcpListener::bind(("0.0.0.0", port))
                .await
                .map_err(ServiceError::from)?,
        ),
        None => None,
    };
    let Backends {
        store,
        publisher,
        idempotency,
        health,
        tasks,
    } = backends;
    let state = AppState {
        store,
        publisher,
        idempotency: settings.catga.enable_idempotency.then_some(idempotency),
        idempotency_ttl: settings.catga.idempotency_ttl,
        authenticator,
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
    let serving = catga_core::http::serve(listener, app(state), drain, limits);
    let (served, grace_ends) =
        service::until_drained(serving, &shutdown, settings.common.shutdown_grace).await;
    ops_stop.cancel();
    if let Some(ops) = ops {
        ops.await
            .map_err(|source| ServiceError::Task {
                task: "ops server",
                source,
            })?
            .map_err(ServiceError::from)?;
    }
    tasks.wait_until(grace_ends).await;
    served.map_err(ServiceError::from)?;
    tracing::info!("order-api stopped");
    Ok(())
}

/// Token validation when `auth` names a key, else anonymous access with a
/// warning (the binary allows that only in embedded mode or with
/// `Auth__AllowAnonymous`). The identity provider's keys are fetched in the
/// background: a provider that is away does not stop start-up; tokens that
/// need its keys get 503 until they arrive.
fn authenticator(auth: &AuthSettings) -> Result<Authenticator, Error> {
    if !auth.validates_tokens() {
        tracing::warn!(
            "AUTHENTICATION IS OFF: every request is an anonymous customer named by its body, \
             sees every order and cannot manage products. Set {}, {} or {} to authenticate callers",
            keys::AUTH_AUTHORITY,
            keys::AUTH_JWKS_URL,
            keys::JWT_SECRET
        );
        return Ok(Authenticator::Anonymous);
    }
    let validator = Arc::new(Validator::new(auth)?);
    tokio::spawn(fetch_signing_keys(validator.clone()));
    Ok(Authenticator::tokens(validator))
}

async fn fetch_signing_keys(validator: Arc<Validator>) {
    match validator.fetch_keys().await {
        Ok(Some(count)) => tracing::info!(keys = count, "identity provider reached"),
        Ok(None) => {}
        Err(err) => tracing::warn!(
            error = %catga_core::error::Chain(&err),
            "cannot fetch the identity provider's signing keys yet; tokens get 503 until they arrive"
        ),
    }
}

/// Seeds the default catalog once Redis answers. order-api owns the catalog
/// (it prices orders and administers products), so it alone seeds it; the
/// script only adds missing products, so every replica may run it.
async fn seed_catalog(store: Arc<dyn Catalog>, shutdown: CancellationToken) {
    let catalog = default_catalog();
    catga_core::shutdown::retry_until_ok("seed the catalog", &shutdown, || {
        store.ensure_catalog(&catalog)
    })
    .await;
}
