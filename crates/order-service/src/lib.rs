//! order-service: consumes order commands as one replica of the durable
//! consumer (queue group) `order-processing` and applies them to Redis exactly
//! once in effect.
//!
//! [`run`] is the whole service; [`consume`] is just the consumer loop, which
//! the embedded mode runs in-process on the memory transport and store.

pub mod config;
pub mod handler;
pub mod retention;

use std::{sync::Arc, time::Duration};

use catga_core::{
    CancellationToken,
    config::NatsSettings,
    contracts::{services, streams},
    messaging::{Broker, ConsumerOptions, ConsumerSpec, run_consumer},
    service::{self, Connections, OpsServer, ServiceError},
    store::CommandApplier,
};
use tokio::net::TcpListener;

pub use config::Settings;
pub use handler::CommandHandler;

/// The durable consumer order-service binds: every replica binds the same
/// one (`NATS__QueueGroup`), so JetStream spreads commands across them.
pub fn consumer_spec(nats: &NatsSettings) -> ConsumerSpec {
    service::consumer_spec(
        streams::ORDER_COMMANDS,
        streams::ORDER_COMMANDS_SUBJECTS,
        nats.queue_group.clone(),
        nats,
    )
}

fn consumer_options(shutdown_grace: Duration) -> ConsumerOptions {
    ConsumerOptions {
        service: services::ORDER_SERVICE,
        shutdown_grace,
    }
}

/// The whole service until `shutdown`: health and metrics on `listener`,
/// commands applied as they come, then a drain within the shutdown grace.
pub async fn run(
    settings: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), ServiceError> {
    let grace = settings.common.shutdown_grace;
    let connections = Connections::open(
        services::ORDER_SERVICE,
        &settings.nats,
        &settings.redis,
        &shutdown,
    )
    .await?;
    let handler = CommandHandler::new(connections.store.clone(), connections.broker.clone());
    connections.tasks.spawn(
        "remove final orders past their retention",
        retention::sweep_until_shutdown(
            connections.store.clone(),
            settings.order_retention,
            shutdown.clone(),
        ),
    );
    let spec = consumer_spec(&settings.nats);
    let ops = OpsServer::start(
        listener,
        settings.common.http_limits,
        &connections,
        &spec,
        &shutdown,
    );
    tracing::info!(queue_group = %spec.durable, "binding the shared durable consumer");
    let grace_ends = connections
        .consume(spec, handler, consumer_options(grace), &shutdown)
        .await;
    connections.stop(ops, grace_ends).await?;
    Ok(())
}

/// Just the consumer loop, on `broker` and `store`, until `shutdown`; then
/// in-flight commands finish within `shutdown_grace`. The embedded mode runs
/// this in-process, with no ops server of its own.
pub async fn consume(
    broker: Arc<dyn Broker>,
    store: Arc<dyn CommandApplier>,
    spec: ConsumerSpec,
    shutdown_grace: Duration,
    shutdown: CancellationToken,
) {
    let handler = CommandHandler::new(store, broker.clone());
    run_consumer(
        broker,
        spec,
        Arc::new(handler),
        consumer_options(shutdown_grace),
        shutdown,
    )
    .await;
}
