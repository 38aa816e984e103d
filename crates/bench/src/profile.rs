//! Instructions per order, per service, counted by callgrind.
//!
//! Each service in turn runs under `valgrind --tool=callgrind` (the other two
//! natively) through a run with no orders and a run with N orders; the
//! difference over N is what one order costs that service, start-up and
//! shutdown cancelled out. Instruction counts do not depend on the machine's
//! load, so the figures compare across commits where timings cannot.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context, bail};
use catga_core::config::keys;
use catga_tests::{Process, Service, free_port};
use loadgen::report::LoadShape;
use tokio::time::Instant;

use crate::{
    loadgen::Loadgen,
    system::{SERVICES, Servers, echo_server, raise_stock, ready_after},
    traffic::{self, Counters, PerOrder},
};

/// Callgrind runs the guest some 50 times slower: a gentle rate.
const RATE: f64 = 50.0;
/// Time after the last order for its notification to go out.
const SETTLE: Duration = Duration::from_secs(3);

pub struct ServiceProfile {
    pub service: &'static str,
    pub orders: u64,
    pub instructions_idle: u64,
    pub instructions_loaded: u64,
    pub annotation: PathBuf,
    /// Redis commands and NATS messages per order in this service's pair of
    /// runs (loaded less idle).
    pub traffic: PerOrder,
}

impl ServiceProfile {
    pub fn per_order(&self) -> f64 {
        self.instructions_loaded
            .saturating_sub(self.instructions_idle) as f64
            / self.orders.max(1) as f64
    }
}

pub async fn run(orders: u64, out: &Path) -> anyhow::Result<Vec<ServiceProfile>> {
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let loadgen = Loadgen::new();
    let logs = tempfile::TempDir::new()?;
    let mut profiles = Vec::new();
    for service in SERVICES {
        let mut instructions = Vec::new();
        let mut work = Vec::new();
        // Both runs last as long, so timers and health checks cancel out too.
        let wall = Duration::from_secs_f64(orders as f64 / RATE) + SETTLE;
        for n in [0, orders] {
            eprintln!("==> {service} under callgrind, {n} orders");
            let file = out.join(format!("callgrind.{service}.{n}.out"));
            let (counted, traffic) =
                profile_once(&loadgen, service, n, wall, &file, logs.path()).await?;
            instructions.push(counted);
            work.push(traffic);
        }
        let annotation = out.join(format!("{service}.annotated.txt"));
        let loaded = out.join(format!("callgrind.{service}.{orders}.out"));
        let annotated = std::process::Command::new("callgrind_annotate")
            .args(["--inclusive=yes", "--threshold=99"])
            .arg(&loaded)
            .output()
            .context("callgrind_annotate (Debian's valgrind package)")?;
        std::fs::write(&annotation, &annotated.stdout)?;
        profiles.push(ServiceProfile {
            service,
            orders,
            instructions_idle: instructions[0],
            instructions_loaded: instructions[1],
            annotation,
            traffic: traffic::per_order(&work[1], Some(&work[0]), orders),
        });
    }
    Ok(profiles)
}

/// A fresh system with `service` under callgrind; `orders` orders placed and
/// finished; then SIGTERM, and the total instructions callgrind counted, with
/// the Redis commands and NATS messages from the first order to the wall's end.
async fn profile_once(
    loadgen: &Loadgen,
    profiled: &'static str,
    orders: u64,
    wall: Duration,
    file: &Path,
    logs: &Path,
) -> anyhow::Result<(u64, Counters)> {
    let servers = Servers::start().await;
    let (_sink, sink_url) = echo_server(loadgen, "webhook-sink", logs).await;
    let env = servers.service_env(&sink_url, 1);
    // The streams, as the NATS operator (the services' users only verify them).
    catga_tests::run_topology_step(&env).await;
    let mut others = Vec::new();
    let mut under_valgrind = None;
    for name in SERVICES {
        if name == profiled {
            under_valgrind = Some(callgrind(name, &env, file, logs)?);
        } else {
            others.push(Service::spawn(name, &env, logs));
        }
    }
    let (mut process, port, ops_port) = under_valgrind.context("the profiled service")?;
    for service in &others {
        service.wait_ready(Duration::from_secs(30)).await;
    }
    ready_after(
        &reqwest::Client::new(),
        Instant::now(),
        &format!("http://127.0.0.1:{ops_port}/health/ready"),
        Duration::from_millis(100),
        Duration::from_secs(120),
    )
    .await?;
    let api_url = if profiled == "order-api" {
        format!("http://127.0.0.1:{port}")
    } else {
        others
            .iter()
            .find(|s| s.name == "order-api")
            .map(|s| s.url(""))
            .context("order-api")?
    };
    raise_stock(&api_url).await?;
    let sources = servers.sources();
    let before = sources.read().await?;
    let began = Instant::now();
    if orders > 0 {
        let duration = Duration::from_secs_f64(orders as f64 / RATE);
        let summary = loadgen
            .orders(
                &api_url,
                LoadShape::FixedRate { per_second: RATE },
                duration,
                true,
            )
            .await?;
        if summary.completed != orders || summary.error_count() > 0 {
            bail!("the profiled run did not finish cleanly: {summary:?}");
        }
    }
    // The notification of the last order may still be on its way.
    tokio::time::sleep_until(began + wall).await;
    let work = traffic::delta(&before, &sources.read().await?);
    let status = process.terminate(Duration::from_secs(60)).await;
    if !status.success() {
        bail!(
            "{profiled} under callgrind exited with {status}; its log:\n{}",
            process.logs()
        );
    }
    Ok((total_instructions(file)?, work))
}

/// Spawns `name` under callgrind on a free port; also returns the port of
/// its probes (order-api's ops port, else the same).
fn callgrind(
    name: &str,
    env: &HashMap<String, String>,
    file: &Path,
    logs: &Path,
) -> anyhow::Result<(Process, u16, u16)> {
    let (port, ops_port) = (free_port(), free_port());
    let mut env = env.clone();
    env.insert("Http__Port".into(), port.to_string());
    env.insert(keys::HTTP_OPS_PORT.into(), ops_port.to_string());
    env.extend(catga_tests::nats_user_env(name));
    let ops_port = if name == "order-api" { ops_port } else { port };
    let binary = catga_tests::binary(name);
    if !binary.to_string_lossy().contains("/profiling/") {
        bail!(
            "profile the symbol-carrying build: cargo build --profile profiling --workspace --bins, then target/profiling/catga-bench profile"
        );
    }
    let process = Process::spawn(
        &format!("{name}-callgrind"),
        catga_tests::program("valgrind"),
        vec![
            "--tool=callgrind".to_owned(),
            format!("--callgrind-out-file={}", file.display()),
            binary.display().to_string(),
        ],
        env,
        logs,
    );
    Ok((process, port, ops_port))
}

/// The `summary:` (or `totals:`) line of a callgrind output file.
fn total_instructions(file: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("callgrind wrote no {}", file.display()))?;
    text.lines()
        .find_map(|line| {
            line.strip_prefix("summary:")
                .or_else(|| line.strip_prefix("totals:"))
        })
        .and_then(|total| total.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no total in {}", file.display()))
}
