//! End-to-end tests: real `nats-server` and `redis-server`, the three service
//! binaries as processes (two order-service replicas), driven over HTTP.
//!
//! Run through `tests/run.sh`, which installs the servers and builds the
//! binaries first.

mod access;
mod auth;
mod docs_page;
mod edge;
mod lifecycle;
mod loadgen;
mod memory_full;
mod messaging;
mod nats_permissions;
mod orders;
mod secrets;
mod tracing;
mod validation;
