//! The shared runtime of the Catga services.
//!
//! - [`config`]: settings from `Section__Key` environment variables.
//! - [`contracts`]: subjects, streams, headers, Redis keys, metric names, wire types.
//! - [`domain`]: orders, products, the shape rules of an order.
//! - [`store`]: the order store (Redis, in-memory).
//! - [`idempotency`]: at-most-once records with leases.
//! - [`messaging`]: JetStream and in-memory brokers, the consumer loop.
//! - [`health`], [`http`], [`telemetry`], [`shutdown`], [`service`]: service plumbing.
//! - [`error`]: printing an error with its causes.

pub mod config;
pub mod contracts;
pub mod domain;
pub mod error;
pub mod health;
pub mod http;
pub mod idempotency;
pub mod messaging;
pub mod service;
pub mod shutdown;
pub mod store;
pub mod telemetry;

pub use tokio_util::sync::CancellationToken;

/// Locks the state of an in-memory twin. Every update is a few assignments,
/// so the state stays consistent even if a holder panicked: a poisoned lock
/// is used as it is.
pub(crate) fn lock<T>(state: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Activates the fault-injection points named in `FAILPOINTS` when built with
/// the `failpoints` feature (tests only); otherwise does nothing.
pub fn failpoints() -> Option<fail::FailScenario<'static>> {
    if cfg!(feature = "failpoints") {
        tracing::warn!(failpoints = ?std::env::var("FAILPOINTS").ok(), "fault injection enabled");
        Some(fail::FailScenario::setup())
    } else {
        None
    }
}
