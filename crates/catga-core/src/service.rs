//! Start-up and shutdown steps every service shares.

use std::{
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::{
    contracts::metrics as names,
    health::Health,
    messaging::{Broker, ConsumerSpec},
    telemetry,
};

/// Creates the streams (retrying until NATS answers), then sets `ready`.
pub async fn ensure_topology(
    broker: Arc<dyn Broker>,
    ready: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    if crate::shutdown::retry_until_ok("set up streams", &shutdown, || broker.ensure_topology())
        .await
        .is_some()
    {
        ready.store(true, Ordering::Release);
    }
}

/// A token that fires after `shutdown`, once readiness has turned 503: the
/// service stops taking work only after load balancers stop sending it.
pub fn drain_on(shutdown: &CancellationToken, health: &Health) -> CancellationToken {
    let drain = CancellationToken::new();
    let (fire, shutdown, health) = (drain.clone(), shutdown.clone(), health.clone());
    tokio::spawn(async move {
        shutdown.cancelled().await;
        health.start_draining();
        fire.cancel();
    });
    drain
}

/// Health and metrics endpoints: all the HTTP a consumer service serves.
pub fn ops_router(health: Health, service: &'static str) -> Router {
    crate::health::router(health)
        .merge(telemetry::metrics_router())
        .layer(axum::middleware::from_fn_with_state(
            service,
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
pub async fn report_consumer_lag(
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
            Err(err) => tracing::debug!(error = %err, "cannot read consumer lag"),
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
            eprintln!("healthcheck: {err}");
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
            // reqwest's own message is generic; the cause says what happened.
            let err = err.without_url();
            let mut message = err.to_string();
            let mut source = std::error::Error::source(&err);
            while let Some(cause) = source {
                message = format!("{message}: {cause}");
                source = cause.source();
            }
            eprintln!("healthcheck: {url}: {message}");
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
    #[error("HTTP server: {0}")]
    Http(#[from] std::io::Error),
}

/// A distributed service's connections and readiness. Opening them starts
/// the background start-up work: creating the streams once NATS answers, and
/// refreshing the dependency gauges.
pub struct Connections {
    pub broker: Arc<dyn Broker>,
    pub redis: redis::aio::ConnectionManager,
    pub store: Arc<dyn crate::store::OrderStore>,
    pub health: Health,
}

impl Connections {
    /// Connects in the background (never fails for a dependency that is away).
    pub async fn open(
        service: &'static str,
        nats: &crate::config::NatsSettings,
        redis: &crate::config::RedisSettings,
        shutdown: &CancellationToken,
    ) -> Result<Self, ServiceError> {
        let broker: Arc<dyn Broker> =
            Arc::new(crate::messaging::JetStreamBroker::connect(nats, service).await?);
        let redis_conn = crate::store::connect_redis(redis)?;
        let store: Arc<dyn crate::store::OrderStore> =
            Arc::new(crate::store::RedisStore::new(redis_conn.clone()));
        let topology_ready = Arc::new(AtomicBool::new(false));
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
        tokio::spawn(ensure_topology(
            broker.clone(),
            topology_ready,
            shutdown.clone(),
        ));
        tokio::spawn(watch_health(health.clone(), shutdown.clone()));
        tracing::info!(nats = ?nats.redacted_servers(), redis = %redis, "{service} started");
        Ok(Self {
            broker,
            redis: redis_conn,
            store,
            health,
        })
    }
}

/// Runs a consumer service: health and metrics on `listener`, consumer-lag
/// gauges, and `consume` (given the token that fires once readiness has turned
/// 503) until it has drained; then stops the HTTP server.
pub async fn serve_while_consuming<F>(
    service: &'static str,
    listener: tokio::net::TcpListener,
    connections: &Connections,
    spec: ConsumerSpec,
    shutdown: CancellationToken,
    consume: impl FnOnce(ConsumerSpec, CancellationToken) -> F,
) -> Result<(), ServiceError>
where
    F: Future<Output = ()>,
{
    tokio::spawn(report_consumer_lag(
        connections.broker.clone(),
        spec.clone(),
        service,
        shutdown.clone(),
    ));
    {
        let (broker, spec, shutdown) = (connections.broker.clone(), spec.clone(), shutdown.clone());
        tokio::spawn(async move { broker.dead_letter_exhausted(&spec, service, shutdown).await });
    }
    let server_stop = CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(
        listener,
        ops_router(connections.health.clone(), service),
        server_stop.clone(),
    ));
    consume(spec, drain_on(&shutdown, &connections.health)).await;
    server_stop.cancel();
    server
        .await
        .map_err(|err| std::io::Error::other(err.to_string()))??;
    tracing::info!("{service} stopped");
    Ok(())
}

/// The whole `main` of a service binary: read settings (a bad one prints one
/// line naming it and exits 2), answer the `healthcheck` subcommand, set up
/// telemetry and fault injection, bind the port, run until SIGTERM/Ctrl-C.
pub async fn main<S, E>(
    binary: &str,
    read: fn(&crate::config::Env) -> Result<S, crate::config::ConfigError>,
    common: fn(&S) -> &crate::config::CommonSettings,
    run: impl AsyncFnOnce(S, tokio::net::TcpListener, CancellationToken) -> Result<(), E>,
) -> std::process::ExitCode
where
    E: std::fmt::Display,
{
    let settings = match read(&crate::config::Env::from_process()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("{binary}: {err}");
            return std::process::ExitCode::from(2);
        }
    };
    let port = common(&settings).http_port;
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return healthcheck(port).await;
    }
    let _telemetry = telemetry::init(common(&settings));
    let _failpoints = crate::failpoints();
    let listener = match tokio::net::TcpListener::bind(("0.0.0.0", port)).await {
        Ok(listener) => listener,
        Err(err) => {
            tracing::error!(port, error = %err, "cannot listen");
            return std::process::ExitCode::FAILURE;
        }
    };
    match run(settings, listener, crate::shutdown::on_signals()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "{binary} failed");
            std::process::ExitCode::FAILURE
        }
    }
}
