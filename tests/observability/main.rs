//! Observability (docker/observability/) held against the code and a real Prometheus.
//!
//! Static: every metric the Grafana dashboard and the alert rules refer to is
//! one of `catga_core::contracts::metrics`, the dashboard is provisionable and
//! uses the provisioned datasources, the alert rules carry severity and
//! annotations and each has a unit test in alerts.test.yml.
//!
//! Live: the whole system (real NATS, Redis and the three service binaries)
//! scraped by a real `prometheus` (Debian package) configured like the
//! Kubernetes one (namespace label by relabelling, job catga-pods, the alert
//! rules loaded); the deployment guide's three PromQL queries must return
//! data, every dashboard query must evaluate, every rule must evaluate
//! without error and none may fire on a healthy system.
//!
//! The NATS and Redis rows and alerts read exporter metrics: `exporters.rs`
//! checks them (Redis against a real redis_exporter, Debian's
//! prometheus-redis-exporter, which the live test below also scrapes).
//!
//! Run: `tests/observability/check.sh` (installs prometheus and
//! prometheus-redis-exporter if missing), then
//! `cargo build --workspace --bins && cargo test -p catga-tests --test observability`.

mod exporters;

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use catga_core::contracts::{consumers, metrics, services};
use catga_tests::{Process, System, free_port, order_body, wait_for_port};
use serde_json::{Value, json};

/// Every metric the services export, from the contract (never respelled here).
const METRICS: [&str; 13] = [
    metrics::REQUESTS_TOTAL,
    metrics::REQUEST_DURATION,
    metrics::MESSAGES_PUBLISHED,
    metrics::MESSAGES_PROCESSED,
    metrics::REDELIVERIES,
    metrics::DEAD_LETTERS,
    metrics::IDEMPOTENCY_HITS,
    metrics::ORDERS,
    metrics::NOTIFICATIONS,
    metrics::CONSUMER_PENDING,
    metrics::CONSUMER_ACK_PENDING,
    metrics::DEPENDENCY_UP,
    metrics::READY,
];

const SERVICES: [&str; 3] = [
    services::ORDER_API,
    services::ORDER_SERVICE,
    services::NOTIFICATION_SERVICE,
];

/// The namespace the Kubernetes scrape configuration puts on every series.
const NAMESPACE: &str = "catga-cluster";

/// The deployment guide's queries, which must return data.
const GUIDE_NAMESPACE_RATE: &str =
    r#"sum(rate(catga_requests_total{namespace="catga-cluster"}[1m]))"#;
const GUIDE_RATE_BY_SERVICE: &str = "sum(rate(catga_requests_total[1m])) by (service)";
const GUIDE_P95: &str =
    "histogram_quantile(0.95, sum(rate(catga_request_duration_bucket[5m])) by (le))";
/// The guide's container CPU query (cAdvisor, scraped from the kubelets in Kubernetes).
const GUIDE_CONTAINER_CPU: &str =
    r#"sum(rate(container_cpu_usage_seconds_total{namespace="catga-cluster"}[5m])) by (pod)"#;

/// Alerts the operators rely on (docs/observability.md).
const REQUIRED_ALERTS: [&str; 12] = [
    "CatgaTargetDown",
    "CatgaInstanceNotReady",
    "CatgaServiceUnavailable",
    "CatgaDependencyDown",
    "CatgaHttpErrorRatioHigh",
    "CatgaConsumerLagGrowing",
    "CatgaDeadLetters",
    // NATS and Redis themselves (the exporters beside them).
    "CatgaNatsNodeDown",
    "CatgaJetStreamStorageHigh",
    "CatgaRedisDown",
    "CatgaRedisMemoryNearMax",
    "CatgaRedisReplicationBroken",
];

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(root().join(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn yaml(relative: &str) -> Value {
    serde_norway::from_str(&read(relative)).unwrap_or_else(|e| panic!("{relative}: {e}"))
}

fn dashboard() -> Value {
    serde_json::from_str(&read("docker/observability/grafana/dashboards/catga.json"))
        .expect("catga.json is JSON")
}

/// The `catga_[a-z_]+` names in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let bytes = expr.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while let Some(found) = expr[i..].find("catga_") {
        let start = i + found;
        let preceded_by_ident =
            start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start + "catga_".len();
        while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
            end += 1;
        }
        if !preceded_by_ident {
            names.insert(expr[start..end].to_owned());
        }
        i = end;
    }
    names
}

/// A series name back to its metric family (histograms expose three series).
fn family(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|suffix| name.strip_suffix(suffix))
        .unwrap_or(name)
}

/// The contract metrics an expression uses, or the names it uses that are not in the contract.
fn contract_metrics(expr: &str) -> Result<BTreeSet<&'static str>, Vec<String>> {
    let mut known = BTreeSet::new();
    let mut unknown = Vec::new();
    for name in metric_names(expr) {
        match METRICS.into_iter().find(|m| *m == family(&name)) {
            Some(metric) => {
                known.insert(metric);
            }
            None => unknown.push(name),
        }
    }
    if unknown.is_empty() {
        Ok(known)
    } else {
        Err(unknown)
    }
}

/// Panics if an expression names a metric the services do not export; returns the families used.
fn check_metrics(source: &str, expr: &str) -> BTreeSet<&'static str> {
    contract_metrics(expr).unwrap_or_else(|unknown| {
        panic!(
            "{source}: {unknown:?} not among the metrics of catga_core::contracts::metrics \
             (known: {METRICS:?}); expression: {expr}"
        )
    })
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for panel in list.as_array().into_iter().flatten() {
            out.push(panel);
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// `(where, expression)` of every panel query and template variable query.
fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {:?}: a target without expr", panel["title"]));
            queries.push((format!("panel {}", panel["title"]), expr.to_owned()));
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let query = variable["query"]["query"]
            .as_str()
            .or_else(|| variable["query"].as_str())
            .unwrap_or_default();
        queries.push((format!("variable {}", variable["name"]), query.to_owned()));
    }
    queries
}

/// The alert rules: `(name, rule)`.
fn alert_rules() -> Vec<(String, Value)> {
    let rules = yaml("docker/observability/prometheus/alerts.yml");
    let groups = rules["groups"].as_array().expect("alerts.yml: groups");
    groups
        .iter()
        .flat_map(|group| group["rules"].as_array().expect("group rules").iter())
        .map(|rule| {
            let name = rule["alert"]
                .as_str()
                .unwrap_or_else(|| panic!("alerts.yml: a rule without alert name: {rule}"));
            (name.to_owned(), rule.clone())
        })
        .collect()
}

/// Datasource uid -> url, from a Grafana provisioning file's text.
fn datasources(text: &str) -> BTreeMap<String, String> {
    let parsed: Value = serde_norway::from_str(text).expect("datasources YAML");
    parsed["datasources"]
        .as_array()
        .expect("datasources")
        .iter()
        .map(|d| {
            (
                d["uid"].as_str().expect("uid").to_owned(),
                d["url"].as_str().expect("url").to_owned(),
            )
        })
        .collect()
}

/// The `data` of a ConfigMap in one of the k8s/ manifests.
fn k8s_configmap(file: &str, name: &str) -> Value {
    let text = read(file);
    for document in serde_norway::Deserializer::from_str(&text) {
        let object: Value =
            serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{file}: {e}"));
        if object["kind"] == "ConfigMap" && object["metadata"]["name"] == name {
            return object["data"].clone();
        }
    }
    panic!("{file}: no ConfigMap {name}");
}

#[test]
fn dashboard_refers_only_to_exported_metrics_and_shows_them_all() {
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard);
    assert!(queries.len() > 10, "too few queries: {queries:?}");
    let mut used = BTreeSet::new();
    for (source, expr) in &queries {
        assert!(!expr.trim().is_empty(), "{source}: empty query");
        used.extend(check_metrics(source, expr));
        exporters::check_known(source, expr);
    }
    // A row for NATS, for Redis and for the containers (the guide's CPU query).
    let families: BTreeSet<exporters::Source> = queries
        .iter()
        .flat_map(|(_, expr)| exporters::exporter_metrics(expr))
        .map(|(family, _)| family)
        .collect();
    assert_eq!(
        families,
        BTreeSet::from([
            exporters::Source::Redis,
            exporters::Source::Nats,
            exporters::Source::Cadvisor
        ]),
        "dashboard rows for the NATS and Redis exporters and cAdvisor"
    );
    assert!(
        queries.iter().any(|(_, expr)| expr == GUIDE_CONTAINER_CPU),
        "the dashboard lacks the deployment guide's query {GUIDE_CONTAINER_CPU}"
    );
    let missing: Vec<_> = METRICS.iter().filter(|m| !used.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "metrics no dashboard panel shows: {missing:?}"
    );
    for guide in [GUIDE_NAMESPACE_RATE, GUIDE_RATE_BY_SERVICE, GUIDE_P95] {
        assert!(
            queries.iter().any(|(_, expr)| expr == guide),
            "the dashboard lacks the deployment guide's query {guide}"
        );
    }
}

#[test]
fn dashboard_is_provisionable_with_the_provisioned_datasources() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "catga");
    assert!(dashboard["title"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion must be recent (datasource references by uid): {}",
        dashboard["schemaVersion"]
    );
    assert!(
        dashboard["id"].is_null(),
        "a provisioned dashboard carries no database id"
    );

    let provisioned = datasources(&read(
        "docker/observability/grafana/provisioning/datasources/datasources.yml",
    ));
    assert_eq!(
        provisioned.get("prometheus").map(String::as_str),
        Some("http://prometheus:9090")
    );
    assert!(provisioned.contains_key("jaeger"), "{provisioned:?}");

    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        let title = &panel["title"];
        assert!(
            ids.insert(panel["id"].as_u64().expect("panel id")),
            "duplicate id: {title}"
        );
        for field in ["x", "y", "w", "h"] {
            assert!(
                panel["gridPos"][field].is_u64(),
                "panel {title}: gridPos.{field}"
            );
        }
        let refs = std::iter::once(&panel["datasource"]).chain(
            panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|t| &t["datasource"]),
        );
        for datasource in refs.filter(|d| !d.is_null()) {
            let uid = datasource["uid"]
                .as_str()
                .unwrap_or_else(|| panic!("panel {title}: datasource not referenced by uid"));
            assert!(
                provisioned.contains_key(uid),
                "panel {title}: datasource uid {uid} is not provisioned ({provisioned:?})"
            );
        }
    }
    for variable in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let uid = variable["datasource"]["uid"].as_str().unwrap_or_default();
        assert!(
            provisioned.contains_key(uid),
            "variable {}: uid {uid}",
            variable["name"]
        );
    }

    // The dashboard provider loads the folder Kubernetes mounts the generated
    // ConfigMap at, and Kubernetes provisions exactly these files (generated
    // from them by k8s/tools/sync.sh).
    let provider = yaml("docker/observability/grafana/provisioning/dashboards/dashboards.yml");
    let path = provider["providers"][0]["options"]["path"]
        .as_str()
        .expect("providers[0].options.path");
    let k8s = k8s_configmap("k8s/29-monitoring-generated.yml", "grafana-provisioning");
    let k8s_provider: Value =
        serde_norway::from_str(k8s["dashboards.yml"].as_str().expect("dashboards.yml"))
            .expect("k8s dashboards.yml");
    assert_eq!(k8s_provider["providers"][0]["options"]["path"], path);
    assert_eq!(
        datasources(k8s["datasources.yml"].as_str().expect("datasources.yml")),
        provisioned,
        "docker/observability/grafana/provisioning/datasources/datasources.yml and ConfigMap \
         grafana-provisioning of k8s/29-monitoring-generated.yml disagree (run k8s/tools/sync.sh)"
    );
}

#[test]
fn alert_rules_refer_only_to_exported_metrics_and_are_documented_and_tested() {
    let rules = alert_rules();
    let names: BTreeSet<&str> = rules.iter().map(|(name, _)| name.as_str()).collect();
    for required in REQUIRED_ALERTS {
        assert!(names.contains(required), "alerts.yml lacks {required}");
    }
    let tests = read("docker/observability/prometheus/alerts.test.yml");
    let docs = read("docs/observability.md");
    for (name, rule) in &rules {
        let expr = rule["expr"].as_str().expect("expr");
        check_metrics(&format!("alert {name}"), expr);
        exporters::check_known(&format!("alert {name}"), expr);
        assert!(
            matches!(
                rule["labels"]["severity"].as_str(),
                Some("warning" | "critical")
            ),
            "alert {name}: severity must be warning or critical"
        );
        for annotation in ["summary", "description"] {
            assert!(
                rule["annotations"][annotation]
                    .as_str()
                    .is_some_and(|t| !t.trim().is_empty()),
                "alert {name}: no {annotation} annotation"
            );
        }
        assert!(
            tests.contains(&format!("alertname: {name}\n")),
            "alert {name} has no unit test in alerts.test.yml"
        );
        assert!(
            docs.contains(name.as_str()),
            "docs/observability.md does not explain {name}"
        );
    }
    // The metrics the alerts are about.
    let used: BTreeSet<&str> = rules
        .iter()
        .flat_map(|(name, rule)| check_metrics(name, rule["expr"].as_str().unwrap_or_default()))
        .collect();
    for needed in [
        metrics::REQUESTS_TOTAL,
        metrics::DEAD_LETTERS,
        metrics::CONSUMER_PENDING,
        metrics::CONSUMER_ACK_PENDING,
        metrics::DEPENDENCY_UP,
        metrics::READY,
    ] {
        assert!(used.contains(needed), "no alert on {needed}");
    }
    // The generated Kubernetes ConfigMap carries the same rules.
    let generated = k8s_configmap("k8s/29-monitoring-generated.yml", "prometheus-rules");
    assert_eq!(
        generated["alerts.yml"].as_str(),
        Some(read("docker/observability/prometheus/alerts.yml").as_str()),
        "k8s/29-monitoring-generated.yml is stale: run k8s/tools/sync.sh"
    );
}

#[test]
fn metric_name_extraction() {
    let names = metric_names(
        r#"sum(rate(catga_request_duration_bucket{x="catga-cluster"}[5m])) / my_catga_x + catga_ready"#,
    );
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        ["catga_ready", "catga_request_duration_bucket"]
    );
    assert_eq!(
        family("catga_request_duration_count"),
        metrics::REQUEST_DURATION
    );
    assert_eq!(
        contract_metrics("rate(catga_nope_total[1m]) / catga_orders_total"),
        Err(vec!["catga_nope_total".to_owned()]),
        "an unknown metric must be refused"
    );
    assert_eq!(
        contract_metrics("histogram_quantile(0.5, catga_request_duration_bucket)"),
        Ok([metrics::REQUEST_DURATION].into_iter().collect())
    );
}

// ---------------------------------------------------------------------------
// Live: a real Prometheus scraping the running system.

struct Prometheus {
    base: String,
    http: reqwest::Client,
    process: Process,
}

impl Prometheus {
    /// Waits until Prometheus answers ready (storage open, rules loaded).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = self
                .http
                .get(format!("{}/-/ready", self.base))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready; its log:\n{}",
                self.process.logs()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn get(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let url =
            reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).expect("url");
        let response = self.http.get(url).send().await.expect("prometheus answers");
        let status = response.status();
        let body: Value = response.json().await.expect("prometheus JSON");
        assert!(
            status.is_success() && body["status"] == "success",
            "{path} {params:?}: HTTP {status}: {body}"
        );
        body["data"].clone()
    }

    /// An instant vector: `(labels, value)` per series.
    async fn query(&self, promql: &str) -> Vec<(Value, f64)> {
        let data = self.get("/api/v1/query", &[("query", promql)]).await;
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .expect("result")
                .iter()
                .map(|series| {
                    let value = series["value"][1]
                        .as_str()
                        .and_then(|v| v.parse::<f64>().ok())
                        .unwrap_or(f64::NAN);
                    (series["metric"].clone(), value)
                })
                .collect(),
            Some("scalar") => {
                vec![(
                    Value::Null,
                    data["result"][1]
                        .as_str()
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(f64::NAN),
                )]
            }
            other => panic!("{promql}: unexpected result type {other:?}"),
        }
    }
}

/// A real `prometheus` (Debian package) scraping `scrape_configs` every
/// second with the alert rules loaded, on a free port; returns once ready.
async fn start_prometheus(dir: &Path, scrape_configs: Vec<Value>) -> Prometheus {
    let config = json!({
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [root().join("docker/observability/prometheus/alerts.yml")],
        "scrape_configs": scrape_configs,
    });
    let config_path = dir.join("prometheus.yml");
    std::fs::write(
        &config_path,
        serde_norway::to_string(&config).expect("YAML"),
    )
    .expect("write prometheus.yml");
    let port = free_port();
    let process = Process::spawn(
        "prometheus",
        catga_tests::program("prometheus"),
        vec![
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
            "--log.level=warn".to_owned(),
        ],
        HashMap::new(),
        dir,
    );
    let prometheus = Prometheus {
        base: format!("http://127.0.0.1:{port}"),
        http: reqwest::Client::new(),
        process,
    };
    wait_for_port(port, Duration::from_secs(20)).await;
    // Prometheus answers 503 until its storage is open and the rules loaded.
    prometheus.wait_ready().await;
    prometheus
}

/// Whether the guide's queries (and a few sharper ones) show the traffic; `Err` says what is missing.
async fn traffic_visible(prometheus: &Prometheus) -> Result<Vec<String>, String> {
    let mut report = Vec::new();

    let total = prometheus.query(GUIDE_NAMESPACE_RATE).await;
    match total.as_slice() {
        [(_, v)] if v.is_finite() && *v > 0.0 => {
            report.push(format!("{GUIDE_NAMESPACE_RATE} = {v:.3}"))
        }
        other => return Err(format!("{GUIDE_NAMESPACE_RATE} returned {other:?}")),
    }

    let by_service: BTreeMap<String, f64> = prometheus
        .query(GUIDE_RATE_BY_SERVICE)
        .await
        .into_iter()
        .map(|(labels, v)| (labels["service"].as_str().unwrap_or("<none>").to_owned(), v))
        .collect();
    let names: BTreeSet<&str> = by_service.keys().map(String::as_str).collect();
    if names != SERVICES.into_iter().collect() || !by_service.values().all(|v| *v > 0.0) {
        return Err(format!(
            "{GUIDE_RATE_BY_SERVICE} returned {by_service:?}, expected {SERVICES:?} > 0"
        ));
    }
    report.push(format!("{GUIDE_RATE_BY_SERVICE} = {by_service:?}"));

    let p95 = prometheus.query(GUIDE_P95).await;
    match p95.as_slice() {
        [(_, v)] if v.is_finite() && *v > 0.0 => report.push(format!("{GUIDE_P95} = {v:.4}s")),
        other => return Err(format!("{GUIDE_P95} returned {other:?}")),
    }

    // Beyond the probes and scrapes every service answers: the orders posted
    // and the messages handled.
    let posted = r#"sum(rate(catga_requests_total{service="order-api", kind="http", operation="POST /api/orders", outcome="success"}[15s]))"#;
    match prometheus.query(posted).await.as_slice() {
        [(_, v)] if *v > 0.0 => report.push(format!("{posted} = {v:.3}")),
        other => return Err(format!("{posted} returned {other:?}")),
    }
    let handled_query =
        r#"sum by (service) (rate(catga_requests_total{kind="message", outcome="success"}[1m]))"#;
    let handled: BTreeMap<String, f64> = prometheus
        .query(handled_query)
        .await
        .into_iter()
        .map(|(labels, v)| (labels["service"].as_str().unwrap_or("<none>").to_owned(), v))
        .collect();
    for consumer in [services::ORDER_SERVICE, services::NOTIFICATION_SERVICE] {
        if !handled.get(consumer).is_some_and(|v| *v > 0.0) {
            return Err(format!(
                "{handled_query} returned {handled:?}: no messages handled by {consumer}"
            ));
        }
    }
    report.push(format!("{handled_query} = {handled:?}"));
    Ok(report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_services_and_the_guide_queries_return_data() {
    let started = Instant::now();
    let system = System::start().await;
    let api = system.client();
    for i in 0..20 {
        let reply = api.place(&format!("obs-{i}"), &[("PROD-001", 1)]).await;
        assert_eq!(reply.status, 202, "order {i}: {:?}", reply.body);
    }
    // A client retry with the same Idempotency-Key: an idempotency hit.
    let body = order_body("obs-retry", &[("PROD-001", 1)]);
    for _ in 0..2 {
        let reply = api
            .as_customer("obs-retry")
            .post_json("/api/orders", &body, &[("idempotency-key", "obs-retry-1")])
            .await;
        assert_eq!(reply.status, 202, "{:?}", reply.body);
    }

    // Configured like the Kubernetes Prometheus (k8s/30-monitoring.yml): job
    // catga-pods, labels app and namespace, the alert rules loaded; job redis:
    // a real redis_exporter beside the system's Redis.
    let dir = tempfile::TempDir::new().expect("temp dir");
    let (_redis_exporter, redis_exporter_port) =
        exporters::redis_exporter("redis-exporter", system.redis.0.port, dir.path()).await;
    let targets: Vec<Value> = std::iter::once(&system.api)
        .chain(&system.order_services)
        .chain(std::iter::once(&system.notifications))
        .map(|s| json!({"targets": [format!("127.0.0.1:{}", s.ops_port)], "labels": {"app": s.name}}))
        .collect();
    let prometheus = start_prometheus(
        dir.path(),
        vec![
            json!({
                "job_name": "catga-pods",
                "static_configs": targets,
                "relabel_configs": [{"target_label": "namespace", "replacement": NAMESPACE}],
            }),
            exporters::redis_job(redis_exporter_port),
        ],
    )
    .await;

    // Every target scraped successfully.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let data = prometheus
            .get("/api/v1/targets", &[("state", "active")])
            .await;
        let targets = data["activeTargets"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let up = targets.iter().filter(|t| t["health"] == "up").count();
        if targets.len() == 5 && up == 5 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "targets not all up: {targets:#?}\nprometheus log:\n{}",
            prometheus.process.logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // A trickle of orders while Prometheus collects samples.
    let stop = Arc::new(AtomicBool::new(false));
    let placed = Arc::new(AtomicUsize::new(0));
    let traffic = tokio::spawn({
        let (stop, placed, api) = (Arc::clone(&stop), Arc::clone(&placed), api.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                let reply = api.place("obs-trickle", &[("PROD-001", 1)]).await;
                assert_eq!(reply.status, 202, "{:?}", reply.body);
                placed.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(10)).await;

    let deadline = Instant::now() + Duration::from_secs(15);
    let report = loop {
        match traffic_visible(&prometheus).await {
            Ok(report) => break report,
            Err(missing) => assert!(
                Instant::now() < deadline,
                "{missing}\nprometheus log:\n{}\nservices:\n{}",
                prometheus.process.logs(),
                system.all_logs()
            ),
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    stop.store(true, Ordering::Relaxed);
    traffic.await.expect("traffic task");
    for line in &report {
        println!("{line}");
    }

    // Every dashboard query is valid PromQL against the real series (Grafana's
    // variables replaced by what they expand to).
    // Only counters of rare events (created at their first increment) may
    // have no series on a healthy system.
    let rare = [metrics::REDELIVERIES, metrics::DEAD_LETTERS];
    let mut with_data = 0;
    let mut empty = Vec::new();
    let queries = dashboard_queries(&dashboard());
    for (source, expr) in &queries {
        if let Some(label) = expr
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .and_then(|args| args.split_once(','))
        {
            let (metric, label) = (label.0.trim(), label.1.trim());
            let values = prometheus
                .get(
                    &format!("/api/v1/label/{label}/values"),
                    &[("match[]", metric)],
                )
                .await;
            let values: BTreeSet<&str> = values
                .as_array()
                .expect("label values")
                .iter()
                .filter_map(Value::as_str)
                .collect();
            assert_eq!(values, SERVICES.into_iter().collect(), "{source}: {expr}");
            continue;
        }
        let promql = expr
            .replace("$__rate_interval", "1m")
            .replace("$__range", "1m")
            .replace("$__interval", "15s")
            .replace("$service", ".*");
        let absent_here: BTreeSet<exporters::Source> = exporters::exporter_metrics(expr)
            .into_iter()
            .map(|(family, _)| family)
            .filter(|family| *family != exporters::Source::Redis)
            .collect();
        if !prometheus.query(&promql).await.is_empty() {
            with_data += 1;
        } else if !absent_here.is_empty() {
            // No NATS exporter or kubelet binary here: names checked statically,
            // alerts by promtool's unit tests.
            println!("no {absent_here:?} exporter in this test, for {source}: {promql}");
        } else if check_metrics(source, expr).iter().all(|m| rare.contains(m)) {
            println!("no data, as expected on a healthy system, for {source}: {promql}");
        } else {
            empty.push(format!("{source}: {promql}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries without data:\n{}",
        empty.join("\n")
    );
    let orders: BTreeMap<String, f64> = prometheus
        .query(&format!("sum by (status) ({})", metrics::ORDERS))
        .await
        .into_iter()
        .map(|(labels, v)| (labels["status"].as_str().unwrap_or_default().to_owned(), v))
        .collect();
    assert!(
        orders.get("Pending").is_some_and(|v| *v >= 20.0) && orders.contains_key("Confirmed"),
        "orders by status: {orders:?}"
    );

    // The alert rules evaluate without error on the real series, and a
    // healthy system fires none of them.
    let rules = prometheus.get("/api/v1/rules", &[("type", "alert")]).await;
    let mut evaluated = 0;
    for group in rules["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            evaluated += 1;
            assert_eq!(rule["health"], "ok", "rule {} failed: {rule}", rule["name"]);
            assert_ne!(
                rule["state"], "firing",
                "alert fires on a healthy system: {rule}"
            );
        }
    }
    assert_eq!(
        evaluated,
        alert_rules().len(),
        "Prometheus loaded every rule of alerts.yml"
    );

    // The lag gauges cover exactly the two durable consumers (polled: the
    // services refresh them every few seconds, Prometheus scrapes after).
    let expected: std::collections::BTreeSet<&str> =
        [consumers::ORDER_PROCESSING, consumers::NOTIFICATIONS].into();
    let lag_query = format!(
        "{} or {}",
        metrics::CONSUMER_PENDING,
        metrics::CONSUMER_ACK_PENDING
    );
    let seen = catga_tests::eventually(
        "consumer lag gauges for both durable consumers",
        Duration::from_secs(30),
        || async {
            let seen: std::collections::BTreeSet<String> = prometheus
                .query(&lag_query)
                .await
                .into_iter()
                .map(|(labels, _)| labels["consumer"].as_str().unwrap_or_default().to_owned())
                .collect();
            (seen.len() >= expected.len()).then_some(seen)
        },
    )
    .await;
    assert_eq!(
        seen.iter()
            .map(String::as_str)
            .collect::<std::collections::BTreeSet<_>>(),
        expected,
        "consumer labels of the lag gauges"
    );

    println!(
        "{} orders placed, {with_data}/{} dashboard queries with data, {evaluated} rules ok, {:.1}s",
        20 + placed.load(Ordering::Relaxed),
        queries.len(),
        started.elapsed().as_secs_f64()
    );
    prometheus.process.kill();
}
