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
mod errors;
mod store;
