//! notification-service: consumes order events with its own durable consumer
//! and sends one notification per event, exactly once in effect.

pub mod config;
pub mod handler;
pub mod notifier;

use std::{
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use catga_core::{
    CancellationToken,
    config::NatsSettings,
    contracts::{consumers, redis_keys, services, streams},
    health::{BrokerCheck, Health, ReadinessCheck},
    idempotency::{IdempotencyStore, RedisIdempotencyStore},
    messaging::{Broker, ConsumerOptions, ConsumerSpec, JetStreamBroker, run_consumer},
    service,
    store::{RedisStore, connect_redis},
};
use tokio::net::TcpListener;

pub use config::{Channel, Settings};
pub use handler::EventHandler;
pub use notifier::Notifier;

/// Events one replica works on at once.
pub const MAX_IN_FLIGHT: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] catga_core::store::StoreError),
    #[error(transparent)]
    Messaging(#[from] catga_core::messaging::MessagingError),
    #[error(transparent)]
    Notify(#[from] notifier::NotifyError),
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// The durable consumer notification-service binds.
pub fn consumer_spec(nats: &NatsSettings) -> ConsumerSpec {
    ConsumerSpec {
        stream: streams::ORDER_EVENTS,
        durable: consumers::NOTIFICATIONS.to_owned(),
        filter: streams::ORDER_EVENTS_SUBJECTS,
        max_deliver: nats.max_deliver,
        ack_wait: nats.ack_wait,
        max_in_flight: MAX_IN_FLIGHT,
    }
}

/// Runs the consumer loop until `shutdown`, then drains.
pub async fn consume(
    broker: Arc<dyn Broker>,
    records: Arc<dyn IdempotencyStore>,
    notifier: Notifier,
    spec: ConsumerSpec,
    shutdown_grace: Duration,
    shutdown: CancellationToken,
) {
    let handler = Arc::new(EventHandler::new(notifier, records));
    let options = ConsumerOptions {
        service: services::NOTIFICATION_SERVICE,
        shutdown_grace,
    };
    run_consumer(broker, spec, handler, options, shutdown).await;
}

/// The whole service until `shutdown`.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let notifier = Notifier::new(settings.channel.clone())?;
    let broker: Arc<dyn Broker> =
        Arc::new(JetStreamBroker::connect(&settings.nats, services::NOTIFICATION_SERVICE).await?);
    let redis = connect_redis(&settings.redis)?;
    let records: Arc<dyn IdempotencyStore> = Arc::new(RedisIdempotencyStore::new(
        redis.clone(),
        redis_keys::NOTIFICATION_PREFIX,
    ));
    let topology_ready = Arc::new(AtomicBool::new(false));
    let checks: Vec<Box<dyn ReadinessCheck>> = vec![
        Box::new(BrokerCheck {
            broker: broker.clone(),
            topology_ready: topology_ready.clone(),
        }),
        Box::new(catga_core::health::StoreCheck {
            store: Arc::new(RedisStore::new(redis)),
        }),
    ];
    let health = Health::new(services::NOTIFICATION_SERVICE, checks);
    tokio::spawn(service::ensure_topology(
        broker.clone(),
        topology_ready,
        shutdown.clone(),
    ));
    tokio::spawn(service::watch_health(health.clone(), shutdown.clone()));
    let spec = consumer_spec(&settings.nats);
    tokio::spawn(service::report_consumer_lag(
        broker.clone(),
        spec.clone(),
        services::NOTIFICATION_SERVICE,
        shutdown.clone(),
    ));
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(catga_core::http::serve(
        listener,
        service::ops_router(health.clone(), services::NOTIFICATION_SERVICE),
        server_stop.clone(),
    ));
    tracing::info!(nats = ?settings.nats.servers, redis = %settings.redis, channel = notifier.channel_name(), "notification-service started");

    consume(
        broker,
        records,
        notifier,
        spec,
        settings.common.shutdown_grace,
        service::drain_on(&shutdown, &health),
    )
    .await;
    server_stop.cancel();
    server
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))??;
    tracing::info!("notification-service stopped");
    Ok(())
}
