//! catga-bench: the one-machine benchmark of the Catga order system.
//!
//! `run`: in one run on this machine, the baselines (Redis `SET NX EX`,
//! JetStream publish-with-ack, an axum echo server under the same load
//! generator), then NATS, Redis and the three services (release builds, one
//! replica each) at their maximum sustained end-to-end throughput and at
//! fixed rates of 25%, 50% and 75% of it, with each process's memory and CPU
//! at idle and under load and each service's start-up time.
//!
//! `profile`: instructions per order for each service, counted by callgrind.
//!
//! Both print a Markdown report and, with `--append FILE`, append it to FILE:
//!
//!     cargo build --release --workspace --bins
//!     target/release/catga-bench run --append BENCHMARKS.md
//!     cargo build --profile profiling --workspace --bins
//!     target/profiling/catga-bench profile --append BENCHMARKS.md

mod loadgen;
mod profile;
mod report;
mod sample;
mod system;
mod traffic;

use std::{io::Write, path::PathBuf, time::Duration};

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "catga-bench",
    about = "Benchmark the Catga order system on this machine"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
    /// Append the report to this Markdown file.
    #[arg(long, global = true)]
    append: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Baselines, then the system at its maximum and at 25/50/75% of it.
    Run {
        /// Length of each measured phase.
        #[arg(long, default_value = "20s", value_parser = humantime::parse_duration)]
        duration: Duration,
        /// Operations in flight in the baselines (and the echo server's clients).
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Clients of the system's closed loop: enough to keep every stage busy
        /// while each waits for its order to be final.
        #[arg(long, default_value_t = 256)]
        clients: usize,
        /// `Redis__WaitReplicas` of the services: 1 as the manifests (one
        /// replica holds every acknowledged write); 0 measures what the wait costs.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(0..=1))]
        wait_replicas: u32,
    },
    /// Instructions per order of each service, under callgrind.
    Profile {
        #[arg(long, default_value_t = 500)]
        orders: u64,
        /// Where the callgrind files and annotations go.
        #[arg(long, default_value = "target/callgrind")]
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let markdown = match &args.command {
        Command::Run {
            duration,
            concurrency,
            clients,
            wait_replicas,
        } => {
            report::markdown(&system::run(*concurrency, *clients, *duration, *wait_replicas).await?)
        }
        Command::Profile { orders, out } => {
            let profiles = profile::run(*orders, out).await?;
            for profile in &profiles {
                eprintln!("{}: {}", profile.service, profile.annotation.display());
            }
            report::profile_markdown(&profiles)
        }
    };
    print!("{markdown}");
    if let Some(path) = &args.append {
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        write!(file, "\n{markdown}").with_context(|| format!("cannot write {}", path.display()))?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}
