//! The machine's own limits, measured with the client libraries the services
//! use: an axum server that only echoes (the HTTP ceiling for this load
//! generator), JetStream publish-with-acknowledgement (async-nats, what
//! order-api does per order) and Redis `SET NX EX` (redis-rs through the
//! services' connection manager, the cheapest write the order path makes).

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_nats::jetstream::{self, stream};
use axum::{
    Router,
    body::Bytes,
    http::{Method, StatusCode, header},
    response::{IntoResponse, Response},
};
use catga_core::{
    CancellationToken,
    config::{Env, RedisSettings, keys},
    contracts::headers,
    store::connect_redis,
};
use tokio::{net::TcpListener, task::JoinSet, time::Instant};

use crate::report::{BaselineSummary, Latencies};

#[derive(Debug, thiserror::Error)]
pub enum BaselineError {
    #[error("cannot connect to NATS: {0}")]
    NatsConnect(#[from] async_nats::ConnectError),
    #[error("cannot use the NATS credentials: {0}")]
    NatsOptions(String),
    #[error("cannot create the baseline stream: {0}")]
    Stream(String),
    #[error("invalid Redis configuration: {0}")]
    RedisConfig(#[from] catga_core::config::ConfigError),
    #[error("cannot connect to Redis: {0}")]
    Redis(#[from] catga_core::store::StoreError),
    #[error("the echo server stopped: {0}")]
    Serve(#[from] std::io::Error),
}

/// Names of the streams the JetStream baseline makes (and deletes) start so.
pub const BASELINE_STREAM_PREFIX: &str = "LOADGEN_BASELINE_";

/// Serves the echo app on `listener` until `shutdown`.
pub async fn serve_echo(listener: TcpListener, shutdown: CancellationToken) -> std::io::Result<()> {
    let app = Router::new().fallback(echo);
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

/// POST answers 202 with the request body (what order-api answers with,
/// minus the work); anything else 200 with `{}`. Also a webhook sink.
async fn echo(method: Method, body: Bytes) -> Response {
    let json = [(header::CONTENT_TYPE, "application/json")];
    if method == Method::POST {
        (StatusCode::ACCEPTED, json, body).into_response()
    } else {
        (StatusCode::OK, json, "{}").into_response()
    }
}

/// Publishes `payload_bytes`-byte messages, each with its own `Nats-Msg-Id`
/// (order-api deduplicates the same way), to a file-backed stream made for
/// the run and deleted after it; `concurrency` publishers each wait for the
/// acknowledgement before the next.
pub async fn jetstream_publish(
    servers: &[String],
    concurrency: usize,
    duration: Duration,
    payload_bytes: usize,
) -> Result<BaselineSummary, BaselineError> {
    // The URLs' credentials (the NATS operator's: the run makes a stream).
    let settings = catga_core::config::NatsSettings {
        servers: servers.to_vec(),
        credentials: catga_core::config::NatsCredentials::in_urls(servers),
        ..catga_core::config::NatsSettings::default()
    };
    let client = catga_core::messaging::nats_connect_options(&settings)
        .map_err(|err| BaselineError::NatsOptions(catga_core::error::chain(&err).to_string()))?
        .connect(servers)
        .await?;
    let context = jetstream::new(client);
    let run = uuid::Uuid::now_v7().simple().to_string();
    let name = format!("{BASELINE_STREAM_PREFIX}{run}");
    let subject = format!("loadgen.baseline.{run}");
    context
        .create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![subject.clone()],
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_secs(120),
            ..Default::default()
        })
        .await
        .map_err(|err| BaselineError::Stream(err.to_string()))?;
    let payload = Bytes::from(vec![b'x'; payload_bytes]);
    let publisher = context.clone();
    let summary = hammer(
        "JetStream publish + ack",
        concurrency,
        duration,
        move |seq| {
            let context = publisher.clone();
            let subject = subject.clone();
            let payload = payload.clone();
            async move {
                let mut message_headers = async_nats::HeaderMap::new();
                message_headers.insert(headers::NATS_MSG_ID, seq.to_string().as_str());
                let ack = context
                    .publish_with_headers(subject, message_headers, payload)
                    .await
                    .map_err(|err| err.kind().to_string())?;
                ack.await.map(drop).map_err(|err| err.kind().to_string())
            }
        },
    )
    .await;
    if let Err(err) = context.delete_stream(&name).await {
        eprintln!("cannot delete the baseline stream {name}: {err}");
    }
    Ok(summary)
}

/// `SET <unique key> <value> NX EX 60` through the connection the services
/// use (one multiplexed connection), `concurrency` commands in flight.
pub async fn redis_set_nx(
    configuration: &str,
    concurrency: usize,
    duration: Duration,
) -> Result<BaselineSummary, BaselineError> {
    let settings = RedisSettings::from_env(&Env::from_pairs([(
        keys::REDIS_CONFIGURATION,
        configuration,
    )]))?;
    let connection = connect_redis(&settings)?;
    let run = uuid::Uuid::now_v7().simple().to_string();
    Ok(
        hammer("Redis SET NX EX", concurrency, duration, move |seq| {
            let mut connection = connection.clone();
            let key = format!("loadgen:baseline:{run}:{seq}");
            async move {
                redis::cmd("SET")
                    .arg(key)
                    .arg("1")
                    .arg("NX")
                    .arg("EX")
                    .arg(60)
                    .query_async::<Option<String>>(&mut connection)
                    .await
                    .map(drop)
                    .map_err(|err| format!("{:?}", err.kind()))
            }
        })
        .await,
    )
}

/// Runs `operation` from `concurrency` loops for `duration`.
async fn hammer<F, Fut>(
    name: &str,
    concurrency: usize,
    duration: Duration,
    operation: F,
) -> BaselineSummary
where
    F: Fn(u64) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<(), String>> + Send,
{
    let start = Instant::now();
    let deadline = start + duration;
    let next_seq = Arc::new(AtomicU64::new(0));
    let mut loops = JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let operation = operation.clone();
        let next_seq = next_seq.clone();
        loops.spawn(async move {
            let mut latencies = Latencies::new();
            let mut errors: BTreeMap<String, u64> = BTreeMap::new();
            while Instant::now() < deadline {
                let seq = next_seq.fetch_add(1, Ordering::Relaxed);
                let began = Instant::now();
                match operation(seq).await {
                    Ok(()) => latencies.record(began.elapsed()),
                    Err(kind) => *errors.entry(kind).or_default() += 1,
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Latencies::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    while let Some(joined) = loops.join_next().await {
        match joined {
            Ok((mine, my_errors)) => {
                latencies.add(&mine);
                for (kind, n) in my_errors {
                    *errors.entry(kind).or_default() += n;
                }
            }
            Err(err) => *errors.entry(format!("task failed: {err}")).or_default() += 1,
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    BaselineSummary {
        name: name.to_owned(),
        concurrency,
        duration_s: elapsed,
        operations: latencies.len(),
        errors,
        ops_per_s: latencies.len() as f64 / elapsed.max(f64::EPSILON),
        latency: latencies.summary(),
    }
}
