//! The twins held to one contract: each suite runs against the production
//! implementation on a real server (redis-server, nats-server -js) and against
//! the in-memory twin of the embedded mode, in tokio's paused time.
//!
//! The suites live here rather than in catga-core because the real runs need
//! the servers of `catga-tests`, and the memory runs then cost nothing extra:
//! one file per trait shows the whole contract, with no feature flag.
//!
//! `errors` checks `is_transient()` of both production twins against the
//! same real servers.

mod broker;
mod capacity;
mod errors;
mod failover;
mod idempotency;
mod reconcile;
mod store;

use catga_core::{
    config::{Env, RedisSettings, keys},
    messaging::JetStreamBroker,
    store::{RedisStore, connect_redis},
};
use catga_tests::{Nats, Redis};

/// A production connection to `redis`, as the services open it.
fn redis_connection(redis: &Redis) -> catga_core::store::RedisConnection {
    let settings = RedisSettings::from_env(&Env::from_pairs([(
        keys::REDIS_CONFIGURATION,
        redis.configuration(),
    )]))
    .expect("Redis settings");
    connect_redis(&settings).expect("connect")
}

/// The production store on `redis`.
fn redis_store(redis: &Redis) -> RedisStore {
    RedisStore::new(redis_connection(redis))
}

/// The production broker on `nats`.
async fn jetstream_broker(nats: &Nats) -> JetStreamBroker {
    let settings = catga_tests::nats_settings_as(vec![nats.url()], catga_tests::NATS_OPERATOR);
    JetStreamBroker::connect(&settings, "contracts")
        .await
        .expect("connect")
}
