//! loadgen: drives the Catga order API and measures what the machine under
//! it can do.
//!
//! - [`driver`] places orders at a fixed rate or from a fixed number of
//!   clients and follows each to its final state;
//! - [`workload`] decides what each order contains, repeatably;
//! - [`report`] keeps HDR histograms and sums a run up as text or JSON;
//! - [`progress`] shows a run as it goes;
//! - [`baseline`] measures the ceilings: an HTTP echo server, JetStream
//!   publish-with-ack and Redis `SET NX EX`;
//! - [`auth`] gives requests bearer tokens (one fixed, or one per customer);
//! - [`cli`] is the command line over all of them.

pub mod auth;
pub mod baseline;
pub mod cli;
pub mod driver;
pub mod progress;
pub mod report;
pub mod workload;

/// Why a command could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Load(#[from] driver::LoadError),
    #[error(transparent)]
    Baseline(#[from] baseline::BaselineError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("cannot write the summary: {0}")]
    Json(#[from] serde_json::Error),
}
