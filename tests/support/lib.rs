//! Shared helpers of the end-to-end tests: real `nats-server` and
//! `redis-server` processes on free loopback ports, the service binaries as
//! child processes, a webhook receiver, and an HTTP client for the API.
//!
//! Everything a test starts is stopped when its handle drops.

#![allow(clippy::missing_panics_doc)]

mod api;
mod browser;
mod edge;
mod jwks;
mod otlp;
mod process;
mod sentinel;
mod servers;
mod system;
mod tokens;
mod webhook;

pub use api::*;
pub use browser::*;
pub use edge::*;
pub use jwks::*;
pub use otlp::*;
pub use process::*;
pub use sentinel::*;
pub use servers::*;
pub use system::*;
pub use tokens::*;
pub use webhook::*;
