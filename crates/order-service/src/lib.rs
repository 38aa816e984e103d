//! order-service: consumes order commands as one replica of the durable
//! consumer (queue group) `order-processing` and applies them to Redis exactly
//! once in effect.
//!
//! [`run`] is the whole service; [`consume`] is just the consumer loop, which
//! the embedded mode of order-api runs in-process on the memory transport.

pub mod config;
pub mod handler;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use catga_core::{
    CancellationToken,
    config::NatsSettings,
    contracts::{services, streams},
    domain::default_catalog,
    health::{BrokerCheck, Health, StoreCheck},
    messaging::{Broker, ConsumerOptions, ConsumerSpec, JetStreamBroker, run_consumer},
    service,
    store::{OrderStore, RedisStore, connect_redis},
};
use tokio::net::TcpListener;

pub use config::Settings;
pub use handler::CommandHandler;

/// Commands one replica works on at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// A failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] catga_core::store::StoreError),
    #[error(transparent)]
    Messaging(#[from] catga_core::messaging::MessagingError),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// The durable consumer order-service binds.
pub fn consumer_spec(nats: &NatsSettings) -> ConsumerSpec {
    ConsumerSpec {
        stream: streams::ORDER_COMMANDS,
        durable: nats.queue_group.clone(),
        filter: streams::ORDER_COMMANDS_SUBJECTS,
        max_deliver: nats.max_deliver,
        ack_wait: nats.ack_wait,
        max_in_flight: MAX_IN_FLIGHT,
    }
}

/// Runs the consumer loop until `shutdown`, then drains.
pub async fn consume(
    broker: Arc<dyn Broker>,
    store: Arc<dyn OrderStore>,
    spec: ConsumerSpec,
    shutdown_grace: Duration,
    shutdown: CancellationToken,
) {
    let handler = Arc::new(CommandHandler::new(store, broker.clone()));
    let options = ConsumerOptions {
        service: services::ORDER_SERVICE,
        shutdown_grace,
    };
    run_consumer(broker, spec, handler, options, shutdown).await;
}

/// The whole service: health and metrics on `listener`, the consumer loop,
/// until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let broker: Arc<dyn Broker> =
        Arc::new(JetStreamBroker::connect(&settings.nats, services::ORDER_SERVICE).await?);
    let store: Arc<dyn OrderStore> = Arc::new(RedisStore::new(connect_redis(&settings.redis)?));
    let topology_ready = Arc::new(AtomicBool::new(false));
    let health = Health::new(
        services::ORDER_SERVICE,
        vec![
            Box::new(BrokerCheck {
                broker: broker.clone(),
                topology_ready: topology_ready.clone(),
            }),
            Box::new(StoreCheck {
                store: store.clone(),
            }),
        ],
    );
    tokio::spawn(service::ensure_topology(
        broker.clone(),
        topology_ready,
        shutdown.clone(),
    ));
    tokio::spawn(seed_catalog(store.clone(), shutdown.clone()));
    tokio::spawn(service::watch_health(health.clone(), shutdown.clone()));
    let spec = consumer_spec(&settings.nats);
    tokio::spawn(service::report_consumer_lag(
        broker.clone(),
        spec.clone(),
        services::ORDER_SERVICE,
        shutdown.clone(),
    ));

    let server_stop = CancellationToken::new();
    let server = tokio::spawn(catga_core::http::serve(
        listener,
        service::ops_router(health.clone(), services::ORDER_SERVICE),
        server_stop.clone(),
    ));
    tracing::info!(nats = ?settings.nats.servers, redis = %settings.redis, queue_group = %settings.nats.queue_group, "order-service started");

    consume(
        broker,
        store,
        spec,
        settings.common.shutdown_grace,
        service::drain_on(&shutdown, &health),
    )
    .await;
    server_stop.cancel();
    server
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))??;
    tracing::info!("order-service stopped");
    Ok(())
}

/// Seeds the default catalog once Redis answers (idempotent: any replica may do it).
pub async fn seed_catalog(store: Arc<dyn OrderStore>, shutdown: CancellationToken) {
    let catalog = default_catalog();
    service::retry_until_ok("seed the catalog", &shutdown, || {
        store.ensure_catalog(&catalog)
    })
    .await;
}
