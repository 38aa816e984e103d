//! Shared helpers of the end-to-end tests: real `nats-server` and
//! `redis-server` processes on free loopback ports, the service binaries as
//! child processes, a webhook receiver, and an HTTP client for the API.
//!
//! Everything a test starts is stopped when its handle drops.

#![allow(clippy::missing_panics_doc)]

use std::{
    collections::HashMap,
    net::{SocketAddr, TcpListener as StdListener},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use catga_core::config::keys;
use serde_json::Value;
use tempfile::TempDir;

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The directory holding the workspace's compiled binaries: the one of the
/// running executable's profile (a test runs from target/<profile>/deps/, a
/// tool such as the benchmark from target/<profile>/).
pub fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target/<profile>");
    if dir.file_name().is_some_and(|name| name == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Path of a workspace binary, which must have been built (`cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` before the tests (tests/run.sh does)",
        path.display()
    );
    path
}

/// Finds a program on PATH (the Debian packages install to /usr/bin or /usr/sbin).
pub fn program(name: &str) -> PathBuf {
    let candidates = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")]);
    for dir in candidates {
        let path = dir.join(name);
        if path.is_file() {
            return path;
        }
    }
    panic!("{name} is not installed: run tests/run.sh, which installs it (apt-get install {name})");
}

/// Waits until something accepts TCP connections on `port`.
pub async fn wait_for_port(port: u16, within: Duration) {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("nothing listens on port {port} after {within:?}");
}

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A child process killed when dropped, with its output in a log file. It
/// can be killed and started again (same command) through a shared reference.
pub struct Process {
    name: String,
    program: PathBuf,
    args: Vec<String>,
    env: HashMap<String, String>,
    log: PathBuf,
    child: Mutex<Option<Child>>,
}

impl Process {
    pub fn spawn(
        name: &str,
        program: PathBuf,
        args: Vec<String>,
        env: HashMap<String, String>,
        log_dir: &Path,
    ) -> Self {
        let process = Self {
            name: name.to_owned(),
            program,
            args,
            env,
            log: log_dir.join(format!("{name}.log")),
            child: Mutex::new(None),
        };
        process.start_again();
        process
    }

    /// Starts the command (again, after [`Process::kill`]).
    pub fn start_again(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log file");
        let err = log.try_clone().expect("log file");
        let child = Command::new(&self.program)
            .args(&self.args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", self.program.display()));
        *self.child.lock().expect("lock") = Some(child);
    }

    /// The running process's id, if it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.lock().expect("lock").as_ref().map(Child::id)
    }

    /// SIGKILL, like a crashed node. Its files stay.
    pub fn kill(&self) {
        if let Some(mut child) = self.child.lock().expect("lock").take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, then waits for the exit status (at most `within`).
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        let mut child = self.child.lock().expect("lock").take().expect("running");
        let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).expect("pid fits"));
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = child.try_wait().expect("wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("{} did not exit within {within:?} of SIGTERM", self.name);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Starts the same command again (same ports, same data directory).
    pub fn restart(&self) {
        self.kill();
        self.start_again();
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A server program on a free loopback port with its own data directory.
pub struct Server {
    pub port: u16,
    pub process: Process,
    _dir: TempDir,
}

impl Server {
    /// Starts `program` with the arguments `args(port, data_dir)` builds.
    pub async fn start(name: &str, args: impl FnOnce(u16, &Path) -> Vec<String>) -> Self {
        Self::start_on(name, free_port(), args).await
    }

    /// Starts `program` on a chosen port.
    pub async fn start_on(
        name: &str,
        port: u16,
        args: impl FnOnce(u16, &Path) -> Vec<String>,
    ) -> Self {
        let dir = TempDir::new().expect("temp dir");
        let process = Process::spawn(
            name,
            program(name),
            args(port, dir.path()),
            HashMap::new(),
            dir.path(),
        );
        wait_for_port(port, Duration::from_secs(10)).await;
        Self {
            port,
            process,
            _dir: dir,
        }
    }

    /// Restarts on the same port and data directory (what was persisted survives).
    pub async fn restart(&self) {
        self.process.restart();
        wait_for_port(self.port, Duration::from_secs(10)).await;
    }
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

/// A `nats-server` with JetStream on a free port.
pub struct Nats(pub Server);

impl Nats {
    pub async fn start() -> Self {
        Self(
            Server::start("nats-server", |port, dir| {
                let store = dir.join("jetstream").display().to_string();
                strings(&[
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-sd",
                    &store,
                ])
            })
            .await,
        )
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.0.port)
    }

    /// A JetStream client for tests that inspect or inject messages.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let client = async_nats::connect(self.url())
            .await
            .expect("connect to NATS");
        async_nats::jetstream::new(client)
    }
}

/// A JetStream cluster of `nats-server` nodes routed on loopback.
pub struct NatsCluster {
    pub nodes: Vec<Server>,
}

impl NatsCluster {
    pub async fn start(size: usize) -> Self {
        let client_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let route_ports: Vec<u16> = (0..size).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = futures::future::join_all((0..size).map(|i| {
            let routes = routes.clone();
            let route_port = route_ports[i];
            Server::start_on("nats-server", client_ports[i], move |port, dir| {
                let store = dir.join("jetstream").display().to_string();
                strings(&[
                    "-js",
                    "-a",
                    "127.0.0.1",
                    "-p",
                    &port.to_string(),
                    "-sd",
                    &store,
                    "-n",
                    &format!("node{i}"),
                    "--cluster_name",
                    "catga",
                    "--cluster",
                    &format!("nats://127.0.0.1:{route_port}"),
                    "--routes",
                    &routes,
                ])
            })
        }))
        .await;
        Self { nodes }
    }

    /// `NATS__Url`: every node, comma-separated.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Waits until the cluster has elected a JetStream meta leader and
    /// answers account requests (a fresh cluster needs a few seconds).
    pub async fn wait_for_jetstream(&self) {
        let js = self.jetstream().await;
        eventually("the JetStream cluster", Duration::from_secs(60), || async {
            // Any JetStream API answer (here: "no such stream") means the
            // cluster has a meta leader; a timeout means it has not yet.
            match js.get_stream("CATGA_READINESS_PROBE").await {
                Ok(_) => Some(()),
                Err(err) => match err.kind() {
                    async_nats::jetstream::context::GetStreamErrorKind::JetStream(e)
                        if e.code() == 404 =>
                    {
                        Some(())
                    }
                    _ => None,
                },
            }
        })
        .await;
    }

    /// A JetStream client connected to the cluster.
    pub async fn jetstream(&self) -> async_nats::jetstream::Context {
        let servers: Vec<String> = self.urls().split(',').map(str::to_owned).collect();
        let client = async_nats::ConnectOptions::new()
            .retry_on_initial_connect()
            .connect(servers)
            .await
            .expect("connect to NATS");
        async_nats::jetstream::new(client)
    }
}

/// A `redis-server` with AOF persistence on a free port.
pub struct Redis(pub Server);

impl Redis {
    pub async fn start() -> Self {
        Self(
            Server::start("redis-server", |port, dir| {
                let dir = dir.display().to_string();
                strings(&[
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--dir",
                    &dir,
                    "--appendonly",
                    "yes",
                    "--save",
                    "",
                ])
            })
            .await,
        )
    }

    pub fn configuration(&self) -> String {
        format!("127.0.0.1:{}", self.0.port)
    }
}

/// Serves `app` on a free loopback port for the rest of the test.
pub async fn serve_on_loopback(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub idempotency_key: Option<String>,
    pub traceparent: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct ReceiverState {
    received: Vec<Received>,
    failures_left: usize,
    attempts: usize,
}

/// An HTTP server standing in for a notification webhook. It can be told to
/// fail the next requests, to exercise retries.
#[derive(Clone)]
pub struct WebhookReceiver {
    pub url: String,
    state: Arc<Mutex<ReceiverState>>,
}

impl WebhookReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let app = Router::new()
            .route("/hooks/orders", post(receive))
            .with_state(Arc::clone(&state));
        let addr = serve_on_loopback(app).await;
        Self {
            url: format!("http://{addr}/hooks/orders"),
            state,
        }
    }

    /// Answers 503 to the next `count` requests.
    pub fn fail_next(&self, count: usize) {
        self.state.lock().expect("lock").failures_left = count;
    }

    /// Successfully delivered notifications, in arrival order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("lock").received.clone()
    }

    /// All requests, failed ones included.
    pub fn attempts(&self) -> usize {
        self.state.lock().expect("lock").attempts
    }

    /// Notifications for `order_id`.
    pub fn for_order(&self, order_id: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.body["orderId"].as_str() == Some(order_id))
            .collect()
    }
}

async fn receive(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let mut state = state.lock().expect("lock");
    state.attempts += 1;
    if state.failures_left > 0 {
        state.failures_left -= 1;
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
    state.received.push(Received {
        idempotency_key: headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body,
    });
    StatusCode::OK
}

/// The sum of a metric over several services.
pub async fn metric_total(services: &[Service], prefix: &str) -> f64 {
    let values = futures::future::join_all(services.iter().map(|s| s.metric_sum(prefix))).await;
    values.iter().sum()
}

/// A service binary running as a process.
pub struct Service {
    pub name: &'static str,
    pub port: u16,
    pub process: Process,
}

impl Service {
    /// Starts `name` with `env` (plus its own `Http__Port`) and waits until ready.
    pub async fn start(name: &'static str, env: &HashMap<String, String>, log_dir: &Path) -> Self {
        let service = Self::spawn(name, env, log_dir);
        service.wait_ready(Duration::from_secs(40)).await;
        service
    }

    /// Starts `name` without waiting.
    pub fn spawn(name: &'static str, env: &HashMap<String, String>, log_dir: &Path) -> Self {
        let port = free_port();
        let mut env = env.clone();
        env.insert("Http__Port".into(), port.to_string());
        let log_name = format!("{name}-{port}");
        let process = Process::spawn(&log_name, binary(name), Vec::new(), env, log_dir);
        Self {
            name,
            port,
            process,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub async fn ready_status(&self) -> Option<u16> {
        reqwest::get(self.url("/health/ready"))
            .await
            .ok()
            .map(|r| r.status().as_u16())
    }

    pub async fn wait_ready(&self, within: Duration) {
        let name = self.name;
        let logs = || self.process.logs();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if self.ready_status().await == Some(200) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("{name} not ready after {within:?}; its log:\n{}", logs());
    }

    /// The value of a Prometheus series line starting with `prefix`, summed.
    pub async fn metric_sum(&self, prefix: &str) -> f64 {
        let text = reqwest::get(self.url("/metrics"))
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        text.lines()
            .filter(|line| line.starts_with(prefix))
            .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }
}

/// What every service of a test system needs: where NATS, Redis and the
/// webhook are, and the admin JWT secret. Callers add their own settings.
pub fn service_env(nats_url: &str, redis: &str, webhook_url: &str) -> HashMap<String, String> {
    [
        (keys::NATS_URL, nats_url),
        (keys::REDIS_CONFIGURATION, redis),
        (keys::JWT_SECRET, JWT_SECRET),
        (keys::WEBHOOK_URL, webhook_url),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// The whole system: NATS, Redis, a webhook receiver, order-api, two
/// order-service replicas and a notification-service.
pub struct System {
    pub nats: Nats,
    pub redis: Redis,
    pub webhook: WebhookReceiver,
    pub api: Service,
    pub order_services: Vec<Service>,
    pub notifications: Service,
    pub env: HashMap<String, String>,
    pub logs: TempDir,
}

/// The JWT secret the test system runs with.
pub const JWT_SECRET: &str = "test-secret-that-is-long-enough-for-hs256";

impl System {
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// Starts the system with extra environment for every service.
    pub async fn start_with(extra_env: &[(&str, &str)]) -> Self {
        let (nats, redis, webhook) =
            tokio::join!(Nats::start(), Redis::start(), WebhookReceiver::start());
        let logs = TempDir::new().expect("log dir");
        let mut env = service_env(&nats.url(), &redis.configuration(), &webhook.url);
        env.insert(keys::SHUTDOWN_GRACE_SECONDS.into(), "10".into());
        env.insert(keys::LOG_LEVEL.into(), "info,catga_core=debug".into());
        env.extend(
            extra_env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let (api, first, second, notifications) = tokio::join!(
            Service::start("order-api", &env, logs.path()),
            Service::start("order-service", &env, logs.path()),
            Service::start("order-service", &env, logs.path()),
            Service::start("notification-service", &env, logs.path()),
        );
        Self {
            nats,
            redis,
            webhook,
            api,
            order_services: vec![first, second],
            notifications,
            env,
            logs,
        }
    }

    /// The API client.
    pub fn client(&self) -> Api {
        Api::new(self.api.url(""))
    }

    /// Every service's log, for failure messages.
    pub fn all_logs(&self) -> String {
        let mut out = String::new();
        for service in std::iter::once(&self.api)
            .chain(&self.order_services)
            .chain(std::iter::once(&self.notifications))
        {
            out.push_str(&format!(
                "===== {} :{}\n{}",
                service.name,
                service.port,
                service.process.logs()
            ));
        }
        out
    }
}

/// A response: status, selected headers and the JSON body.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }
}

/// A small client for the order API.
#[derive(Clone)]
pub struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: String) -> Self {
        Self {
            base,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("HTTP client"),
        }
    }

    /// Sends a raw request; `Err` when no answer came (refused, reset, timed out).
    pub async fn try_send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Result<Reply, reqwest::Error> {
        let mut request = self.http.request(method, format!("{}{path}", self.base));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request.body(body);
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await?;
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok(Reply {
            status,
            headers,
            body,
        })
    }

    /// Sends a raw request that must be answered.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        self.try_send(method, path, headers, body)
            .await
            .expect("request answered")
    }

    pub async fn post_json(&self, path: &str, body: &Value, headers: &[(&str, &str)]) -> Reply {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(
            reqwest::Method::POST,
            path,
            &all,
            Some(serde_json::to_vec(body).expect("json")),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, &[], None).await
    }

    /// Places an order for `(productId, quantity)` lines.
    pub async fn place(&self, customer: &str, lines: &[(&str, u32)]) -> Reply {
        self.post_json("/api/orders", &order_body(customer, lines), &[])
            .await
    }

    /// Waits until the order leaves `Pending`; returns it.
    pub async fn final_state(&self, order_id: &str) -> Value {
        eventually(
            &format!("order {order_id} to leave Pending"),
            Duration::from_secs(20),
            || async {
                let reply = self.get(&format!("/api/orders/{order_id}")).await;
                assert_eq!(
                    reply.status, 200,
                    "order {order_id} must exist: {:?}",
                    reply.body
                );
                (reply.body["status"] != "Pending").then_some(reply.body)
            },
        )
        .await
    }

    /// The catalog entry of `product_id`.
    pub async fn product(&self, product_id: &str) -> Value {
        let reply = self.get("/api/products").await;
        reply
            .body
            .as_array()
            .and_then(|all| all.iter().find(|p| p["productId"] == product_id).cloned())
            .unwrap_or_else(|| panic!("no product {product_id} in {:?}", reply.body))
    }

    /// Creates or replaces a product with an admin token.
    pub async fn upsert_product(
        &self,
        product_id: &str,
        name: &str,
        price: &str,
        stock: i64,
    ) -> Reply {
        let token = admin_token(JWT_SECRET, "admin");
        let auth = format!("Bearer {token}");
        let body = serde_json::json!({"name": name, "unitPrice": price, "stock": stock});
        self.send(
            reqwest::Method::PUT,
            &format!("/api/products/{product_id}"),
            &[
                ("content-type", "application/json"),
                ("authorization", &auth),
            ],
            Some(serde_json::to_vec(&body).expect("json")),
        )
        .await
    }
}

/// The JSON body of an order for `(productId, quantity)` lines.
pub fn order_body(customer: &str, lines: &[(&str, u32)]) -> Value {
    serde_json::json!({
        "customerId": customer,
        "items": lines
            .iter()
            .map(|(product, quantity)| serde_json::json!({"productId": product, "quantity": quantity}))
            .collect::<Vec<_>>(),
    })
}

/// An HS256 token with `role`, valid for an hour.
pub fn admin_token(secret: &str, role: &str) -> String {
    let exp = time::OffsetDateTime::now_utc().unix_timestamp() + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({"sub": "e2e", "role": role, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()).expect("key"),
    )
    .expect("token")
}

/// One span an OTLP receiver got.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
}

/// A real OTLP/HTTP trace receiver (`POST /v1/traces`, protobuf), decoding
/// with the `opentelemetry-proto` definitions.
#[derive(Clone)]
pub struct OtlpReceiver {
    pub endpoint: String,
    spans: Arc<Mutex<Vec<ReceivedSpan>>>,
}

impl OtlpReceiver {
    pub async fn start() -> Self {
        let spans = Arc::new(Mutex::new(Vec::new()));
        let app = Router::new()
            .route("/v1/traces", post(receive_traces))
            .with_state(Arc::clone(&spans));
        let addr = serve_on_loopback(app).await;
        Self {
            endpoint: format!("http://{addr}"),
            spans,
        }
    }

    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.spans.lock().expect("lock").clone()
    }

    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        self.spans()
            .into_iter()
            .filter(|s| s.trace_id == trace_id)
            .collect()
    }
}

async fn receive_traces(
    State(spans): State<Arc<Mutex<Vec<ReceivedSpan>>>>,
    body: axum::body::Bytes,
) -> (StatusCode, [(&'static str, &'static str); 1], Vec<u8>) {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse},
        common::v1::any_value::Value as AnyValue,
    };
    use prost::Message;

    let protobuf = [("content-type", "application/x-protobuf")];
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, protobuf, Vec::new());
    };
    let mut received = spans.lock().expect("lock");
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
                AnyValue::StringValue(name) => Some(name.clone()),
                _ => None,
            })
            .unwrap_or_default();
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                received.push(ReceivedSpan {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_span_id: hex(&span.parent_span_id),
                });
            }
        }
    }
    (
        StatusCode::OK,
        protobuf,
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
