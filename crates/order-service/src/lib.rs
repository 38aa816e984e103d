//! order-service: consumes order commands as one replica of the durable
//! consumer (queue group) `order-processing` and applies them to Redis exactly
//! once in effect.
//!
//! [`run`] is the whole service; [`consume`] is just the consumer loop, which
//! the embedded mode of order-api runs in-process on the memory transport.

pub mod config;
pub mod handler;

use std::{sync::Arc, time::Duration};

use catga_core::{
    CancellationToken,
    config::NatsSettings,
    contracts::{services, streams},
    messaging::{Broker, ConsumerOptions, ConsumerSpec, run_consumer},
    service::{self, Connections, ServiceError},
    store::OrderStore,
};
use tokio::net::TcpListener;

pub use config::Settings;
pub use handler::CommandHandler;

/// Commands one replica works on at once.
pub const MAX_IN_FLIGHT: usize = 32;

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
) -> Result<(), ServiceError> {
    let connections = Connections::open(
        services::ORDER_SERVICE,
        &settings.nats,
        &settings.redis,
        &shutdown,
    )
    .await?;
    tracing::info!(queue_group = %settings.nats.queue_group, "binding the shared durable consumer");
    let (broker, store) = (connections.broker.clone(), connections.store.clone());
    let grace = settings.common.shutdown_grace;
    service::serve_while_consuming(
        services::ORDER_SERVICE,
        listener,
        &connections,
        consumer_spec(&settings.nats),
        shutdown,
        |spec, drain| consume(broker, store, spec, grace, drain),
    )
    .await
}
