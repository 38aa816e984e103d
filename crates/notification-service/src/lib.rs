//! notification-service: consumes order events with its own durable consumer
//! and sends one notification per event, exactly once in effect.

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
    service::{self, Connections, ServiceError},
};
use tokio::net::TcpListener;

pub use config::{Channel, Settings};
pub use handler::EventHandler;
pub use notifier::Notifier;

/// Events one replica works on at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// A failure that stops the service.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error(transparent)]
    Notify(#[from] notifier::NotifyError),
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
    let connections = Connections::open(
        services::NOTIFICATION_SERVICE,
        &settings.nats,
        &settings.redis,
        &shutdown,
    )
    .await?;
    tracing::info!(channel = notifier.channel_name(), "notifying");
    let records: Arc<dyn IdempotencyStore> = Arc::new(RedisIdempotencyStore::new(
        connections.redis.clone(),
        redis_keys::NOTIFICATION_PREFIX,
    ));
    let broker = connections.broker.clone();
    let grace = settings.common.shutdown_grace;
    service::serve_while_consuming(
        services::NOTIFICATION_SERVICE,
        listener,
        &connections,
        consumer_spec(&settings.nats),
        shutdown,
        |spec, drain| consume(broker, records, notifier, spec, grace, drain),
    )
    .await?;
    Ok(())
}
