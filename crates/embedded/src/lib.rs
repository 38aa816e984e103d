//! The embedded mode: the whole Catga order system in one process, for trying
//! it out (`cargo run -p order-api` with nothing set). Nothing is persisted.
//!
//! [`System::start`] seeds the catalog of an in-memory store and starts
//! order-service's and notification-service's consumers on an in-memory
//! broker. order-api's binary serves its API on the [`System`]'s store, broker
//! and records, then [`System::stop`]s it. The memory twins keep the
//! contracts of the Redis and JetStream ones (`tests/contracts`).

use std::{sync::Arc, time::Duration};

use catga_core::{
    CancellationToken,
    config::{ConfigError, Env, NatsSettings},
    contracts::services,
    domain::default_catalog,
    health::Health,
    idempotency::MemoryIdempotencyStore,
    messaging::{Broker, ConsumerSpec, MemoryBroker},
    service,
    shutdown::BackgroundTasks,
    store::{Catalog, MemoryStore, StoreError},
};
use notification_service::{Channel, Notifier, notifier::NotifyError};
use tokio::time::Instant;

/// The settings of the services running inside order-api's process.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where notification-service sends notifications (`Notification__*`).
    pub channel: Channel,
    /// How long final orders are kept (`Orders__RetentionDays`): the memory
    /// store is swept like Redis, so a long-running trial does not grow
    /// without bound.
    pub order_retention: Duration,
}

impl Settings {
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Self {
            channel: Channel::from_env(env)?,
            order_retention: order_service::config::retention_from_env(env)?,
        })
    }
}

/// The embedded system cannot start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot seed the catalog")]
    Catalog(#[source] StoreError),
    #[error("cannot set up the notifier")]
    Notifier(#[source] NotifyError),
}

/// order-service and notification-service running as tasks of this process.
pub struct System {
    /// Orders and the catalog (seeded).
    pub store: MemoryStore,
    /// Commands and events.
    pub broker: MemoryBroker,
    /// order-api's `Idempotency-Key` records (notification-service keeps its own).
    pub http_idempotency: MemoryIdempotencyStore,
    /// order-api's readiness: nothing here can be away.
    pub health: Health,
    tasks: BackgroundTasks,
    stop: CancellationToken,
    shutdown_grace: Duration,
}

impl System {
    /// Starts the consumers; each drains within `shutdown_grace` on [`System::stop`].
    pub async fn start(settings: &Settings, shutdown_grace: Duration) -> Result<Self, Error> {
        tracing::warn!(
            "EMBEDDED MODE: order-service and notification-service run inside this process on an \
             in-memory transport and store; nothing is persisted. Not for production: set NATS__Url \
             (and Redis__Configuration) to run distributed."
        );
        let broker = MemoryBroker::new();
        let store = MemoryStore::new();
        // A distributed order-api seeds the catalog in the background, once
        // Redis answers; here it is there before the first request.
        store
            .ensure_catalog(&default_catalog())
            .await
            .map_err(Error::Catalog)?;
        let notifier = Notifier::new(settings.channel.clone()).map_err(Error::Notifier)?;
        // The consumers' limits (deliveries, ack wait) are the distributed defaults.
        let nats = NatsSettings::default();
        let stop = CancellationToken::new();
        let tasks = BackgroundTasks::new();
        let commands = order_service::consumer_spec(&nats);
        let events = notification_service::consumer_spec(&nats);
        // As in the distributed services' ops servers: what the broker gave
        // up on goes to the dead-letter stream instead of piling up.
        forward_exhausted(&tasks, &broker, &commands, services::ORDER_SERVICE, &stop);
        forward_exhausted(
            &tasks,
            &broker,
            &events,
            services::NOTIFICATION_SERVICE,
            &stop,
        );
        tasks.spawn(
            "order-service consumer",
            order_service::consume(
                Arc::new(broker.clone()),
                Arc::new(store.clone()),
                commands,
                shutdown_grace,
                stop.clone(),
            ),
        );
        tasks.spawn(
            "notification-service consumer",
            notification_service::consume(
                Arc::new(broker.clone()),
                Arc::new(MemoryIdempotencyStore::new()),
                notifier,
                events,
                shutdown_grace,
                stop.clone(),
            ),
        );
        tasks.spawn(
            "remove final orders past their retention",
            order_service::retention::sweep_until_shutdown(
                Arc::new(store.clone()),
                settings.order_retention,
                stop.clone(),
            ),
        );
        let health = Health::new(services::ORDER_API, Vec::new());
        tasks.spawn(
            "refresh dependency gauges",
            service::watch_health(health.clone(), stop.clone()),
        );
        Ok(Self {
            store,
            broker,
            http_idempotency: MemoryIdempotencyStore::new(),
            health,
            tasks,
            stop,
            shutdown_grace,
        })
    }

    /// Stops the consumers once their in-flight messages are done, waiting
    /// for them (and the forwarders) within the grace period given to
    /// [`System::start`]; a task that panicked was logged with its name.
    pub async fn stop(self) {
        let grace_ends = Instant::now() + self.shutdown_grace;
        self.stop.cancel();
        self.tasks.wait_until(grace_ends).await;
    }
}

/// Runs `broker`'s forwarder of messages given up on for `spec` until `stop`.
fn forward_exhausted(
    tasks: &BackgroundTasks,
    broker: &MemoryBroker,
    spec: &ConsumerSpec,
    service: &'static str,
    stop: &CancellationToken,
) {
    let (broker, spec, stop) = (broker.clone(), spec.clone(), stop.clone());
    tasks.spawn("dead-letter exhausted messages", async move {
        broker.dead_letter_exhausted(&spec, service, stop).await;
    });
}

#[cfg(test)]
mod tests {
    use catga_core::{
        contracts::PlaceOrder,
        domain::OrderId,
        store::{CommandApplier, OrderQueries},
    };

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn final_orders_past_retention_are_swept_from_the_memory_store() {
        let settings = Settings {
            channel: Channel::Log,
            order_retention: Duration::ZERO,
        };
        let system = System::start(&settings, Duration::from_secs(1))
            .await
            .expect("start");
        // A place command as it arrives on the wire.
        let order_id = OrderId::new();
        let command: PlaceOrder = serde_json::from_value(serde_json::json!({
            "commandId": PlaceOrder::command_id_for(&order_id),
            "orderId": order_id,
            "customerId": "c-embedded",
            "items": [{"productId": "PROD-001", "productName": "Mechanical Keyboard",
                       "quantity": 1, "unitPrice": 19.99}],
            "totalAmount": "19.99",
            "createdAt": "2026-01-01T00:00:00Z",
        }))
        .expect("a place command");
        system.store.apply_place(&command).await.expect("placed");
        assert!(system.store.order(&order_id).await.expect("read").is_some());

        // The next sweep, a minute on (paused time runs ahead when idle).
        tokio::time::sleep(order_service::retention::SWEEP_EVERY * 2).await;
        assert_eq!(system.store.order(&order_id).await.expect("read"), None);
        system.stop().await;
    }
}
