//! The benchmark's phases: the machine's baselines, then the system.

use std::{collections::HashMap, time::Duration};

use anyhow::{Context, bail};
use catga_core::{config::keys, domain::limits::MAX_STOCK};
use catga_tests::{
    Api, Nats, Process, Redis, Server, Service, Tokens, eventually, free_port, online_replicas,
    wait_for_port,
};
use loadgen::report::{BaselineSummary, LoadShape, Summary};
use tokio::time::Instant;

use crate::{
    loadgen::Loadgen,
    sample::{Sampler, Usage},
    traffic::{self, Counters, PerOrder, Sources},
};

/// The services, in start order.
pub const SERVICES: [&str; 3] = ["order-api", "order-service", "notification-service"];
/// The servers they use, sampled alongside.
pub const DEPENDENCIES: [&str; 2] = ["nats-server", "redis-server"];
/// The fixed rates, as fractions of the measured maximum.
pub const FRACTIONS: [f64; 3] = [0.25, HALF, 0.75];
/// The share at which the acceptance p99 is compared with the echo server's.
pub const HALF: f64 = 0.5;
/// Quiet time before idle is measured, and its length.
const SETTLE: Duration = Duration::from_secs(2);
const IDLE_WINDOW: Duration = Duration::from_secs(5);

/// One phase of load on the system.
pub struct Phase {
    pub label: String,
    /// The share of the maximum a fixed-rate phase ran at; `None` for the maximum.
    pub fraction: Option<f64>,
    pub summary: Summary,
    pub usage: HashMap<String, Usage>,
    /// Redis commands and NATS messages per completed order.
    pub traffic: PerOrder,
}

/// Everything the run measured.
pub struct Results {
    pub concurrency: usize,
    pub duration: Duration,
    /// The services' `Redis__WaitReplicas`.
    pub wait_replicas: u32,
    pub redis: BaselineSummary,
    pub jetstream: BaselineSummary,
    pub echo_max: Summary,
    pub echo_at_half: Summary,
    pub startup_ms: Vec<(String, f64)>,
    pub idle: HashMap<String, Usage>,
    pub phases: Vec<Phase>,
}

pub async fn run(
    concurrency: usize,
    clients: usize,
    duration: Duration,
    wait_replicas: u32,
) -> anyhow::Result<Results> {
    let loadgen = Loadgen::new();
    let logs = tempfile::TempDir::new()?;
    eprintln!("==> baselines: Redis SET NX EX, JetStream publish + ack, axum echo");
    let (redis_baseline, jetstream) = {
        // Servers of their own: millions of baseline keys and messages must
        // not weigh on the system's run.
        let (nats, redis) = tokio::join!(Nats::start(), Redis::start());
        let redis_baseline = loadgen
            .redis(&redis.configuration(), concurrency, duration)
            .await?;
        let jetstream = loadgen
            .jetstream(&nats.operator_url(), concurrency, duration)
            .await?;
        (redis_baseline, jetstream)
    };
    let (echo, echo_url) = echo_server(&loadgen, "echo", logs.path()).await;
    let echo_max = loadgen
        .orders(
            &echo_url,
            LoadShape::Concurrency {
                clients: concurrency,
            },
            duration,
            false,
        )
        .await?;

    eprintln!(
        "==> the system: NATS (JetStream, file storage), Redis (AOF, one replica, WAIT {wait_replicas}), the three services"
    );
    let servers = Servers::start().await;
    let (_sink, sink_url) = echo_server(&loadgen, "webhook-sink", logs.path()).await;
    let env = servers.service_env(&sink_url, wait_replicas);
    // The streams, as the NATS operator (the services' users only verify them).
    catga_tests::run_topology_step(&env).await;
    let mut services = Vec::new();
    let mut startup_ms = Vec::new();
    for name in SERVICES {
        let (service, took) = start_timed(name, &env, logs.path()).await?;
        startup_ms.push((name.to_owned(), took.as_secs_f64() * 1000.0));
        services.push(service);
    }
    let api_url = services[0].url("");
    raise_stock(&api_url).await?;
    let pids: Vec<(String, u32)> = services
        .iter()
        .map(|s| (s.name, &s.process))
        .chain([
            ("nats-server", &servers.nats.0.process),
            ("redis-server", &servers.redis.0.process),
        ])
        .filter_map(|(name, process)| Some((name.to_owned(), process.pid()?)))
        .collect();

    tokio::time::sleep(SETTLE).await;
    let sampler = Sampler::start(pids.clone());
    tokio::time::sleep(IDLE_WINDOW).await;
    let idle = sampler.finish().await;

    eprintln!("==> maximum: closed loop, {clients} clients");
    let mut phases = Vec::new();
    let sources = servers.sources();
    let before = sources.read().await?;
    let sampler = Sampler::start(pids.clone());
    let max = loadgen
        .orders(&api_url, LoadShape::Concurrency { clients }, duration, true)
        .await?;
    let maximum = max.completed_per_s;
    let usage = sampler.finish().await;
    let traffic = traffic_per_order(&sources, &before, &max).await?;
    phases.push(Phase {
        label: format!("maximum ({clients} clients)"),
        fraction: None,
        summary: max,
        usage,
        traffic,
    });
    if maximum <= 0.0 {
        bail!(
            "no order completed at maximum load; the services' logs are in {}",
            logs.path().display()
        );
    }
    for fraction in FRACTIONS {
        let rate = maximum * fraction;
        eprintln!(
            "==> {:.0}% of maximum: {rate:.0} orders/s",
            fraction * 100.0
        );
        let before = sources.read().await?;
        let sampler = Sampler::start(pids.clone());
        let summary = loadgen
            .orders(
                &api_url,
                LoadShape::FixedRate { per_second: rate },
                duration,
                true,
            )
            .await?;
        let usage = sampler.finish().await;
        let traffic = traffic_per_order(&sources, &before, &summary).await?;
        phases.push(Phase {
            label: format!("{:.0}% ({rate:.0}/s)", fraction * 100.0),
            fraction: Some(fraction),
            summary,
            usage,
            traffic,
        });
    }
    eprintln!("==> axum echo at 50% of the system's maximum");
    let echo_at_half = loadgen
        .orders(
            &echo_url,
            LoadShape::FixedRate {
                per_second: maximum * HALF,
            },
            duration,
            false,
        )
        .await?;
    drop(echo);
    Ok(Results {
        concurrency,
        duration,
        wait_replicas,
        redis: redis_baseline,
        jetstream,
        echo_max,
        echo_at_half,
        startup_ms,
        idle,
        phases,
    })
}

/// Commands and messages per order of a phase that began at `before`.
/// The phase's own traffic is all orders' (the background over a 20 s phase
/// is a few dozen commands against tens of thousands).
async fn traffic_per_order(
    sources: &Sources,
    before: &Counters,
    summary: &Summary,
) -> anyhow::Result<PerOrder> {
    let after = sources.read().await?;
    Ok(traffic::per_order(
        &traffic::delta(before, &after),
        None,
        summary.completed,
    ))
}

/// The servers the system uses, with the durability the manifests ask for:
/// NATS with JetStream on file storage (and its monitoring endpoint, for the
/// message counts), a Redis master with AOF and one replica, which every
/// acknowledged write waits for (`Redis__WaitReplicas=1`, `WAIT` as behind
/// Sentinel).
pub struct Servers {
    pub nats: Nats,
    nats_monitor_port: u16,
    pub redis: Redis,
    _replica: Server,
}

impl Servers {
    pub async fn start() -> Self {
        let nats_monitor_port = free_port();
        let nats = Nats::start_monitored(nats_monitor_port);
        let (nats, redis) = tokio::join!(nats, Redis::start());
        let master = redis.0.port;
        let replica = Server::start("redis-server", |port, dir| {
            catga_tests::redis_node(port, dir, Some(master), None)
        })
        .await;
        eventually(
            "the Redis replica is in sync",
            Duration::from_secs(30),
            || async { (online_replicas(master).await? >= 1).then_some(()) },
        )
        .await;
        Self {
            nats,
            nats_monitor_port,
            redis,
            _replica: replica,
        }
    }

    pub fn sources(&self) -> Sources {
        Sources {
            redis_port: self.redis.0.port,
            nats_monitor_port: self.nats_monitor_port,
        }
    }

    /// The services' environment: as the Kubernetes manifests set it (info
    /// logs as JSON, writes acknowledged once `wait_replicas` replicas hold
    /// them: 1 as deployed), without trace export (no collector here).
    pub fn service_env(&self, webhook_sink: &str, wait_replicas: u32) -> HashMap<String, String> {
        let mut env = catga_tests::service_env(
            &self.nats.url(),
            &self.redis.configuration(),
            &format!("{webhook_sink}/hooks/orders"),
        );
        env.insert(keys::LOG_LEVEL.into(), "info".into());
        env.insert(keys::LOG_FORMAT.into(), "json".into());
        env.insert(keys::REDIS_WAIT_REPLICAS.into(), wait_replicas.to_string());
        env
    }
}

/// `loadgen echo-server` as its own process on a free port.
pub async fn echo_server(
    loadgen: &Loadgen,
    name: &str,
    logs: &std::path::Path,
) -> (Process, String) {
    let port = free_port();
    let process = Process::spawn(
        name,
        loadgen.program().clone(),
        vec![
            "echo-server".to_owned(),
            "--listen".to_owned(),
            format!("127.0.0.1:{port}"),
        ],
        HashMap::new(),
        logs,
    );
    wait_for_port(port, Duration::from_secs(10)).await;
    (process, format!("http://127.0.0.1:{port}"))
}

/// Starts a service and times it from spawn to its first ready answer.
async fn start_timed(
    name: &'static str,
    env: &HashMap<String, String>,
    logs: &std::path::Path,
) -> anyhow::Result<(Service, Duration)> {
    // Made before the clock starts: building a TLS-capable client is not
    // the service's start-up.
    let client = reqwest::Client::new();
    let began = Instant::now();
    let service = Service::spawn(name, env, logs);
    match ready_after(
        &client,
        began,
        &service.ops_url("/health/ready"),
        Duration::from_millis(2),
        Duration::from_secs(30),
    )
    .await
    {
        Ok(took) => Ok((service, took)),
        Err(err) => bail!("{name}: {err}; its log:\n{}", service.process.logs()),
    }
}

/// Polls `ready_url` every `poll` until it answers 2xx; the time since `began`.
pub async fn ready_after(
    client: &reqwest::Client,
    began: Instant,
    ready_url: &str,
    poll: Duration,
    within: Duration,
) -> anyhow::Result<Duration> {
    while began.elapsed() < within {
        let answer = client.get(ready_url).send().await;
        if answer.is_ok_and(|response| response.status().is_success()) {
            return Ok(began.elapsed());
        }
        tokio::time::sleep(poll).await;
    }
    bail!("not ready after {within:?}")
}

/// Gives every product the most stock allowed, so every order can be
/// confirmed and the run measures one kind of work.
pub async fn raise_stock(api_url: &str) -> anyhow::Result<()> {
    let api = Api::with_tokens(
        api_url.to_owned(),
        Tokens::Secret(catga_tests::JWT_SECRET.to_owned()),
    );
    let products = api.get("/api/products").await;
    let list = products
        .body
        .as_array()
        .context("GET /api/products must list products")?;
    for product in list {
        let (Some(id), Some(name)) = (product["productId"].as_str(), product["name"].as_str())
        else {
            bail!("a product without productId or name: {product}");
        };
        let reply = api
            .upsert_product(id, name, &product["unitPrice"].to_string(), MAX_STOCK)
            .await;
        if reply.status != 200 && reply.status != 201 {
            bail!(
                "cannot raise the stock of {id}: {} {:?}",
                reply.status,
                reply.body
            );
        }
    }
    Ok(())
}
