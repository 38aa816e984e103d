//! Start-up and shutdown steps every service shares.
//!
//! A consumer service's `run` takes them in order: [`Connections::open`]
//! (NATS, Redis, readiness; streams created in the background), its handler,
//! [`OpsServer::start`] (health and metrics, consumer-lag gauges, the
//! exhausted-message forwarder), [`Connections::consume`] until shutdown has
//! drained, then [`Connections::stop`] (the ops server, then the background
//! tasks within the grace). [`main`] is the whole `main` of every binary.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::Router;
use tokio::{net::TcpListener, task::JoinHandle, time::Instant};
use tokio_util::sync::CancellationToken;

use crate::{
    config::NatsSettings,
    contracts::metrics as names,
    error::chain,
    health::Health,
    messaging::{Broker, ConsumerOptions, ConsumerSpec, Handler, run_consumer},
    shutdown::BackgroundTasks,
    telemetry,
};

/// Messages one replica of a consumer service works on at once.
pub const MAX_IN_FLIGHT: usize = 32;

/// The durable consumer `durable` on `stream` (filtered to `subjects`), with
/// the delivery limits of `nats` and [`MAX_IN_FLIGHT`].
pub fn consumer_spec(
    stream: &'static str,
    subjects: &'static str,
    durable: impl Into<String>,
    nats: &NatsSettings,
) -> ConsumerSpec {
    ConsumerSpec {
        stream,
        durable: durable.into(),
        filter: subjects,
        max_deliver: nats.max_deliver,
        ack_wait: nats.ack_wait,
        max_in_flight: MAX_IN_FLIGHT,
    }
}

/// How a service sets up the streams at start-up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TopologyStep {
    /// Creates or updates them (no credentials: a local development server).
    Create,
    /// Only checks them: a user with restricted permissions may not change
    /// streams; the operator step ([`ENSURE_TOPOLOGY`]) does.
    Verify,
}

impl TopologyStep {
    pub fn for_settings(nats: &NatsSettings) -> Self {
        if nats.is_authenticated() {
            TopologyStep::Verify
        } else {
            TopologyStep::Create
        }
    }
}

/// Sets up the streams (retrying until NATS answers and, when verifying,
/// until the operator step has brought them to the configuration), then
/// sets `ready`. A stream that is missing or differs is logged once per
/// difference, as one line naming it and the step to run.
async fn ensure_topology(
    broker: Arc<dyn Broker>,
    step: TopologyStep,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let mut last_reported = String::new();
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return,
            outcome = async {
                match step {
                    TopologyStep::Create => broker.ensure_topology().await,
                    TopologyStep::Verify => broker.verify_topology().await,
                }
            } => outcome,
        };
        let pause = match outcome {
            Ok(()) => {
                ready.store(true, Ordering::Release);
                return;
            }
            Err(err @ crate::messaging::MessagingError::TopologyOutdated { .. }) => {
                let line = chain(&err).to_string();
                if line != last_reported {
                    tracing::error!(error = %line, "streams not as configured; not ready until they are");
                    last_reported = line;
                }
                TOPOLOGY_RECHECK
            }
            Err(err) => {
                tracing::warn!(error = %chain(&err), "cannot set up streams yet; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(pause) => {}
        }
    }
}

/// How often a service whose streams are not as configured checks again.
const TOPOLOGY_RECHECK: Duration = Duration::from_secs(5);

/// The subcommand every binary answers: create or update the streams, with
/// the NATS settings of the environment (an operator's credentials where
/// the services' users may not change streams), then exit.
pub const ENSURE_TOPOLOGY: &str = "ensure-topology";

/// How long [`ENSURE_TOPOLOGY`] waits for NATS.
const ENSURE_TOPOLOGY_DEADLINE: Duration = Duration::from_secs(120);

/// Runs [`ENSURE_TOPOLOGY`]: exit status 0 once the streams are as
/// configured, 1 when NATS refuses or does not answer in time, 2 for a bad
/// setting.
pub async fn ensure_topology_command(binary: &str) -> std::process::ExitCode {
    let nats = match NatsSettings::from_env(&crate::config::Env::from_process()) {
        Ok(nats) => nats,
        Err(err) => {
            eprintln!("{binary} {ENSURE_TOPOLOGY}: {}", chain(&err));
            return std::process::ExitCode::from(2);
        }
    };
    let client_name = format!("{binary}-{ENSURE_TOPOLOGY}");
    let broker = match crate::messaging::JetStreamBroker::connect(&nats, &client_name).await {
        Ok(broker) => broker,
        Err(err) => {
            eprintln!("{binary} {ENSURE_TOPOLOGY}: {}", chain(&err));
            return std::process::ExitCode::FAILURE;
        }
    };
    let deadline = Instant::now() + ENSURE_TOPOLOGY_DEADLINE;
    loop {
        match broker.ensure_topology().await {
            Ok(()) => {
                println!("{binary} {ENSURE_TOPOLOGY}: streams are as configured");
                return std::process::ExitCode::SUCCESS;
            }
            Err(err) if err.is_transient() && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err) => {
                eprintln!("{binary} {ENSURE_TOPOLOGY}: {}", chain(&err));
                return std::process::ExitCode::FAILURE;
            }
        }
    }
}

/// The token on which a service stops taking work: `shutdown`, with `health`
/// answering 503 from the instant it fires, so load balancers stop sending
/// work before the service stops taking it.
pub fn drain_on(shutdown: &CancellationToken, health: &Health) -> CancellationToken {
    health.drain_on(shutdown);
    shutdown.clone()
}

/// Health and metrics endpoints: all the HTTP a consumer service serves, and
/// what order-api serves on its ops port.
pub fn ops_router(health: Health, service: &'static str) -> Router {
    crate::health::router(health)
        .merge(telemetry::metrics_router())
        .layer(axum::middleware::from_fn_with_state(
            telemetry::HttpMetrics::new(service),
            telemetry::record_http_metrics,
        ))
        .layer(telemetry::http_trace_layer())
}

/// How often gauges of dependency state and consumer lag are refreshed.
const GAUGE_PERIOD: Duration = Duration::from_secs(5);

/// Keeps the `catga_ready` and `catga_dependency_up` gauges current even when
/// nobody probes, so alerts fire on a disconnected dependency.
pub async fn watch_health(health: Health, shutdown: CancellationToken) {
    let mut ticker = tokio::time::interval(GAUGE_PERIOD);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => { health.readiness().await; }
        }
    }
}

/// Publishes `catga_consumer_pending` and `catga_consumer_ack_pending` of a
/// durable consumer (the lag the autoscaler and the alerts watch).
async fn report_consumer_lag(
    broker: Arc<dyn Broker>,
    spec: ConsumerSpec,
    service: &'static str,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(GAUGE_PERIOD);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        match broker.consumer_lag(&spec).await {
            Ok(Some((pending, ack_pending))) => {
                let consumer = spec.durable.clone();
                metrics::gauge!(names::CONSUMER_PENDING, "service" => service, "consumer" => consumer.clone())
                    .set(pending as f64);
                metrics::gauge!(names::CONSUMER_ACK_PENDING, "service" => service, "consumer" => consumer)
                    .set(ack_pending as f64);
            }
            Ok(None) => return,
            Err(err) => tracing::debug!(error = %chain(&err), "cannot read consumer lag"),
        }
    }
}

/// The `healthcheck` subcommand of every binary: asks the service on this host
/// for readiness, for container health checks in images without curl. Exit
/// status 0 when ready, 1 otherwise.
pub async fn healthcheck(port: u16) -> std::process::ExitCode {
    let url = format!("http://127.0.0.1:{port}/health/ready");
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            eprintln!("healthcheck: {}", chain(&err));
            return std::process::ExitCode::FAILURE;
        }
    };
    match client.get(&url).send().await {
        Ok(response) if response.status().is_success() => std::process::ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("healthcheck: {url} answered {}", response.status());
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            // reqwest's own message is generic; the causes say what happened.
            eprintln!("healthcheck: {url}: {}", chain(&err.without_url()));
            std::process::ExitCode::FAILURE
        }
    }
}

/// A failure that stops a service.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Messaging(#[from] crate::messaging::MessagingError),
    #[error("HTTP server failed")]
    Http(#[from] std::io::Error),
    /// A task whose outcome the service awaits panicked or was cancelled.
    #[error("the {task} task did not finish")]
    Task {
        task: &'static str,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Runs `work`, which winds down on `shutdown`, to its end. Hands back its
/// output and when the shutdown grace ends: `grace` after `shutdown` fired,
/// or now if `work` ended on its own. Background tasks are waited for until
/// then, so the whole stop stays within the grace.
pub async fn until_drained<T>(
    work: impl std::future::Future<Output = T>,
    shutdown: &CancellationToken,
    grace: Duration,
) -> (T, Instant) {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        output = &mut work => (output, Instant::now()),
        () = shutdown.cancelled() => {
            let grace_ends = Instant::now() + grace;
            (work.await, grace_ends)
        }
    }
}

/// A distributed service's connections, readiness and background tasks.
/// Opening them starts the background start-up work: creating the streams
/// once NATS answers, and refreshing the dependency gauges.
pub struct Connections {
    pub service: &'static str,
    pub broker: Arc<dyn Broker>,
    pub redis: crate::store::RedisConnection,
    pub store: Arc<dyn crate::store::OrderStore>,
    pub health: Health,
    /// Every task the service runs beside its main work; [`Connections::stop`] waits for them.
    pub tasks: BackgroundTasks,
}

impl Connections {
    /// Connects in the background (never fails for a dependency that is away).
    pub async fn open(
        service: &'static str,
        nats: &NatsSettings,
        redis: &crate::config::RedisSettings,
        shutdown: &CancellationToken,
    ) -> Result<Self, ServiceError> {
        let broker: Arc<dyn Broker> =
            Arc::new(crate::messaging::JetStreamBroker::connect(nats, service).await?);
        let redis_conn = crate::store::connect_redis(redis)?;
        let store: Arc<dyn crate::store::OrderStore> =
            Arc::new(crate::store::RedisStore::new(redis_conn.clone()));
        let topology_ready = Arc::new(AtomicBool::new(false));
        let topology_step = TopologyStep::for_settings(nats);
        let health = Health::new(
            service,
            vec![
                Box::new(crate::health::BrokerCheck {
                    broker: broker.clone(),
                    topology_ready: topology_ready.clone(),
                }),
                Box::new(crate::health::StoreCheck {
                    store: store.clone(),
                }),
            ],
        );
        let tasks = BackgroundTasks::new();
        tasks.spawn(
            "create streams",
            ensure_topology(
                broker.clone(),
                topology_step,
                topology_ready,
                shutdown.clone(),
            ),
        );
        tasks.spawn(
            "follow Redis failovers",
            redis_conn.clone().follow_failovers(shutdown.clone()),
        );
        tasks.spawn(
            "refresh dependency gauges",
            watch_health(health.clone(), shutdown.clone()),
        );
        tracing::info!(nats = ?nats.redacted_servers(), topology = ?topology_step, redis = %redis, "{service} started");
        Ok(Self {
            service,
            broker,
            redis: redis_conn,
            store,
            health,
            tasks,
        })
    }

    /// Runs `handler` on the durable consumer `spec` until `shutdown` fires
    /// (readiness answers 503 from then on), then lets in-flight messages
    /// finish within `options.shutdown_grace` and hands back the rest.
    /// Returns when the shutdown grace ends, for [`Connections::stop`].
    pub async fn consume(
        &self,
        spec: ConsumerSpec,
        handler: impl Handler,
        options: ConsumerOptions,
        shutdown: &CancellationToken,
    ) -> Instant {
        let grace = options.shutdown_grace;
        let drain = drain_on(shutdown, &self.health);
        let consumer = run_consumer(self.broker.clone(), spec, Arc::new(handler), options, drain);
        let ((), grace_ends) = until_drained(consumer, shutdown, grace).await;
        grace_ends
    }

    /// Stops the service once its consumer has drained: the ops server
    /// (after the requests in flight), then the background tasks, which end
    /// on `shutdown`, waited for until `grace_ends` (what
    /// [`Connections::consume`] returned), so the whole stop stays within
    /// `Catga__ShutdownGraceSeconds`.
    pub async fn stop(self, ops: OpsServer, grace_ends: Instant) -> Result<(), ServiceError> {
        let stopped = ops.stop().await;
        self.tasks.wait_until(grace_ends).await;
        tracing::info!("{} stopped", self.service);
        stopped
    }
}

/// A consumer service's HTTP server (health and metrics on its listener),
/// with what it reports on its durable consumer: the consumer-lag gauges and
/// the forwarder of messages the broker gave up on.
pub struct OpsServer {
    server: JoinHandle<std::io::Result<()>>,
    stop: CancellationToken,
}

impl OpsServer {
    /// Starts serving on `listener`; the gauges and the forwarder run on the
    /// connections' background tasks until `shutdown`.
    pub fn start(
        listener: TcpListener,
        limits: crate::http::ServerLimits,
        connections: &Connections,
        spec: &ConsumerSpec,
        shutdown: &CancellationToken,
    ) -> Self {
        let service = connections.service;
        connections.tasks.spawn(
            "report consumer lag",
            report_consumer_lag(
                connections.broker.clone(),
                spec.clone(),
                service,
                shutdown.clone(),
            ),
        );
        let (broker, spec_for_forwarder, forwarder_stop) =
            (connections.broker.clone(), spec.clone(), shutdown.clone());
        connections
            .tasks
            .spawn("dead-letter exhausted messages", async move {
                broker
                    .dead_letter_exhausted(&spec_for_forwarder, service, forwarder_stop)
                    .await;
            });
        // Stopped apart from `shutdown`: probes and scrapes are answered
        // until the consumer has drained.
        let stop = CancellationToken::new();
        let server = connections.tasks.spawn_joinable(crate::http::serve(
            listener,
            ops_router(connections.health.clone(), service),
            stop.clone(),
            limits,
        ));
        Self { server, stop }
    }

    /// Stops the server once the requests in flight are answered.
    async fn stop(self) -> Result<(), ServiceError> {
        self.stop.cancel();
        self.server.await.map_err(|source| ServiceError::Task {
            task: "ops server",
            source,
        })??;
        Ok(())
    }
}

/// The whole `main` of a service binary: answer the [`ENSURE_TOPOLOGY`]
/// subcommand, read settings (a bad one prints one
/// line naming it and exits 2), answer the `healthcheck` subcommand, set up
/// telemetry and fault injection, bind the port, run until SIGTERM/Ctrl-C.
pub async fn main<S, E>(
    binary: &str,
    read: fn(&crate::config::Env) -> Result<S, crate::config::ConfigError>,
    common: fn(&S) -> &crate::config::CommonSettings,
    run: impl AsyncFnOnce(S, TcpListener, CancellationToken) -> Result<(), E>,
) -> std::process::ExitCode
where
    E: std::error::Error + 'static,
{
    if std::env::args().nth(1).as_deref() == Some(ENSURE_TOPOLOGY) {
        return ensure_topology_command(binary).await;
    }
    let settings = match read(&crate::config::Env::from_process()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{binary}: {}", chain(&err));
            return std::process::ExitCode::from(2);
        }
    };
    let port = common(&settings).http_port;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(common(&settings).health_port()).await;
    }
    let _telemetry = telemetry::init(common(&settings));
    let _failpoints = crate::failpoints();
    let listener = match TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(port, error = %chain(&err), "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let outcome =
        crate::shutdown::until_signalled(&shutdown, run(settings, listener, shutdown.clone()))
            .await;
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %chain(&err), "{binary} failed");
            std::process::ExitCode::FAILURE
        }
    }
}
