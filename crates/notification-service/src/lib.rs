//! notification-service: consumes order events with its own durable consumer
//! and sends one notification per event, exactly once in effect.
//!
//! [`run`] is the whole service; [`consume`] is just the consumer loop, which
//! the embedded mode runs in-process on the memory transport.

pub mod config;
pub mod handler;
pub mod notifier;

use std::{sync::Arc, time::Duration};

use catga_core::{
    CancellationToken,
    config::NatsSettings,
    contracts::{consumers, redis_keys, services, streams},
    idempotency::{IdempotencyStore, RedisIdempotencyStore},
    messaging::{Broker, ConsumerOptions, ConsumerSpec, run_consumer},
    service::{self, Connections, OpsServer, ServiceError},
};
use tokio::net::TcpListener;

pub use config::{Channel, Settings};
pub use handler::EventHandler;
pub use notifier::Notifier;

/// A failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("cannot set up the notification channel")]
    Notifier(#[from] notifier::NotifyError),
}

/// The durable consumer notification-service binds, its own on the events
/// stream, shared by its replicas.
pub fn consumer_spec(nats: &NatsSettings) -> ConsumerSpec {
    service::consumer_spec(
        streams::ORDER_EVENTS,
        streams::ORDER_EVENTS_SUBJECTS,
        consumers::NOTIFICATIONS,
        nats,
    )
}

fn consumer_options(shutdown_grace: Duration) -> ConsumerOptions {
    ConsumerOptions {
        service: services::NOTIFICATION_SERVICE,
        shutdown_grace,
    }
}

/// The whole service until `shutdown`: health and metrics on `listener`,
/// one notification per event, then a drain within the shutdown grace.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let grace = settings.common.shutdown_grace;
    let notifier = Notifier::new(settings.channel.clone())?;
    let connections = Connections::open(
        services::NOTIFICATION_SERVICE,
        &settings.nats,
        &settings.redis,
        &shutdown,
    )
    .await?;
    let records =
        RedisIdempotencyStore::new(connections.redis.clone(), redis_keys::NOTIFICATION_PREFIX);
    tracing::info!(channel = notifier.channel_name(), "notifying");
    let handler = EventHandler::new(notifier, Arc::new(records));
    let spec = consumer_spec(&settings.nats);
    let ops = OpsServer::start(
        listener,
        settings.common.http_limits,
        &connections,
        &spec,
        &shutdown,
    );
    let grace_ends = connections
        .consume(spec, handler, consumer_options(grace), &shutdown)
        .await;
    connections.stop(ops, grace_ends).await?;
    Ok(())
}

/// Just the consumer loop, on `broker` with `records` as the idempotency
/// store, until `shutdown`; then in-flight events finish within
/// `shutdown_grace`. The embedded mode runs this in-process, with no ops
/// server of its own.
pub async fn consume(
    broker: Arc<dyn Broker>,
    records: Arc<dyn IdempotencyStore>,
    notifier: Notifier,
    spec: ConsumerSpec,
    shutdown_grace: Duration,
    shutdown: CancellationToken,
) {
    let handler = EventHandler::new(notifier, records);
    run_consumer(
        broker,
        spec,
        Arc::new(handler),
        consumer_options(shutdown_grace),
        shutdown,
    )
    .await;
}
