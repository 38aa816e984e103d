//! Conformance of the Kubernetes manifests (k8s/) with the code.
//!
//! The static checks read the manifests and hold them against catga-core's
//! constants and the services' own settings parsers: probe paths and ports,
//! env var names and values, image names, selectors, HPA targets,
//! NetworkPolicy flows, security contexts, graceful termination, the guide's
//! numbers, the generated copies (one source of truth) and the on-demand
//! load generator Job (k8s/tools/loadgen.yml). `runtime.rs` then starts the
//! three binaries with the environment the manifests give them, against a
//! local 3-node NATS cluster and Redis, waits for the declared readiness
//! probe, and runs loadgen against them with the Job's settings.
//!
//! Run: `cargo build --workspace --bins && cargo test -p catga-tests --test manifests`.

mod model;
mod runtime;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use catga_core::{
    config::{Env, keys},
    contracts::{consumers, services, streams},
};
use model::{Object, find, labels, objects, resolve_port, root, selects};
use serde_json::Value;

/// The three services with what the deployment guide asks of each.
pub struct App {
    pub service: &'static str,
    pub default_port: u16,
    pub default_service_name: &'static str,
    pub replicas: u64,
    pub requests: (&'static str, &'static str),
    pub limits: (&'static str, &'static str),
    pub hpa: (u64, u64),
    /// Memory target of the HPA, when it has one (percent).
    pub memory_target: Option<u64>,
}

pub const APPS: [App; 3] = [
    App {
        service: services::ORDER_API,
        default_port: order_api::config::DEFAULT_PORT,
        default_service_name: order_api::config::DEFAULT_SERVICE_NAME,
        replicas: 3,
        requests: ("100m", "128Mi"),
        limits: ("1000m", "512Mi"),
        hpa: (3, 10),
        memory_target: Some(80),
    },
    App {
        service: services::ORDER_SERVICE,
        default_port: order_service::config::DEFAULT_PORT,
        default_service_name: order_service::config::DEFAULT_SERVICE_NAME,
        replicas: 3,
        requests: ("100m", "128Mi"),
        limits: ("500m", "256Mi"),
        hpa: (3, 20),
        memory_target: None,
    },
    App {
        service: services::NOTIFICATION_SERVICE,
        default_port: notification_service::config::DEFAULT_PORT,
        default_service_name: notification_service::config::DEFAULT_SERVICE_NAME,
        replicas: 2,
        requests: ("50m", "64Mi"),
        limits: ("200m", "128Mi"),
        hpa: (2, 10),
        memory_target: None,
    },
];

/// Every setting the services read (catga_core::config::keys).
const KNOWN_KEYS: &[&str] = &[
    keys::NATS_URL,
    keys::NATS_QUEUE_GROUP,
    keys::NATS_STREAM_REPLICAS,
    keys::NATS_ACK_WAIT_SECONDS,
    keys::REDIS_CONFIGURATION,
    keys::REDIS_PASSWORD,
    keys::ENABLE_IDEMPOTENCY,
    keys::MAX_RETRY_ATTEMPTS,
    keys::IDEMPOTENCY_TTL_SECONDS,
    keys::SHUTDOWN_GRACE_SECONDS,
    keys::HTTP_PORT,
    keys::HTTP_OPS_PORT,
    keys::HTTP_MAX_BODY_BYTES,
    keys::OTEL_SERVICE_NAME,
    keys::OTEL_SERVICE_NAME_STD,
    keys::OTEL_JAEGER_ENDPOINT,
    keys::LOG_LEVEL,
    keys::LOG_FORMAT,
    keys::WEBHOOK_URL,
    keys::WEBHOOK_TIMEOUT_SECONDS,
    keys::JWT_SECRET,
];

/// What the services' own settings parsers make of a manifest environment.
pub struct Parsed {
    pub http_port: u16,
    /// order-api's `Http__OpsPort` (probes and `/metrics`).
    pub ops_port: Option<u16>,
    pub shutdown_grace: Duration,
    pub service_name: String,
    pub nats: catga_core::config::NatsSettings,
}

/// Runs the service's `Settings::from_env` on `env`; panics with the service's
/// own message when it refuses the configuration.
pub fn parse_settings(service: &str, env: &Env) -> Parsed {
    let fail = |err: catga_core::config::ConfigError| -> ! {
        panic!("{service} refuses the manifest environment: {err}")
    };
    match service {
        services::ORDER_API => {
            let s = order_api::Settings::from_env(env).unwrap_or_else(|e| fail(e));
            let Some(order_api::Distributed { nats, .. }) =
                order_api::Distributed::from_env(env).unwrap_or_else(|e| fail(e))
            else {
                panic!(
                    "order-api would run embedded: {} is not set",
                    keys::NATS_URL
                )
            };
            Parsed {
                http_port: s.common.http_port,
                ops_port: s.common.ops_port,
                shutdown_grace: s.common.shutdown_grace,
                service_name: s.common.service_name,
                nats,
            }
        }
        services::ORDER_SERVICE => {
            let s = order_service::Settings::from_env(env).unwrap_or_else(|e| fail(e));
            Parsed {
                http_port: s.common.http_port,
                ops_port: s.common.ops_port,
                shutdown_grace: s.common.shutdown_grace,
                service_name: s.common.service_name,
                nats: s.nats,
            }
        }
        services::NOTIFICATION_SERVICE => {
            let s = notification_service::Settings::from_env(env).unwrap_or_else(|e| fail(e));
            Parsed {
                http_port: s.common.http_port,
                ops_port: s.common.ops_port,
                shutdown_grace: s.common.shutdown_grace,
                service_name: s.common.service_name,
                nats: s.nats,
            }
        }
        other => panic!("unknown service {other}"),
    }
}

/// The keys of Secret catga-secrets that k8s/tools/create-secrets.sh generates.
fn generated_secret_keys() -> BTreeSet<String> {
    let script = std::fs::read_to_string(root().join("k8s/tools/create-secrets.sh"))
        .expect("k8s/tools/create-secrets.sh");
    script
        .split("--from-literal=")
        .skip(1)
        .map(|rest| rest.split('=').next().expect("key").to_owned())
        .collect()
}

/// Test values for the secrets, long enough for every check the services make.
pub fn secret_value(key: &str) -> String {
    format!("{key}-test-value-{}", "x".repeat(32))
}

/// The manifest environment of `app`, secrets filled with test values.
pub fn manifest_env(objects: &[Object], app: &App) -> BTreeMap<String, String> {
    let deployment = find(objects, "Deployment", app.service);
    let env = model::env_of(model::main_container(deployment));
    let mut all = env.values;
    for (name, (_secret, key)) in env.secrets {
        all.insert(name, secret_value(&key));
    }
    all
}

#[test]
fn k8s_top_level_holds_only_manifests_namespace_first() {
    let files = model::manifest_files();
    assert!(!files.is_empty());
    for f in &files {
        let name = f.file_name().and_then(|n| n.to_str()).expect("file name");
        let digits = name.get(..3).unwrap_or_default();
        assert!(
            digits.len() == 3
                && digits[..2].chars().all(|c| c.is_ascii_digit())
                && digits.ends_with('-')
                && name.ends_with(".yml"),
            "k8s/{name}: kubectl apply -f k8s/ reads every file at that level; only NN-name.yml manifests belong there"
        );
        let objs = model::load_file(f);
        assert!(!objs.is_empty(), "k8s/{name} holds no object");
    }
    let all = objects();
    let first = &all[0];
    assert_eq!(
        (first.kind(), first.name()),
        ("Namespace", model::NAMESPACE),
        "the namespace must be the first object applied"
    );
    for o in &all[1..] {
        assert_eq!(
            o.namespace(),
            Some(model::NAMESPACE),
            "{} must live in {}",
            o.describe(),
            model::NAMESPACE
        );
        assert_ne!(
            o.kind(),
            "Secret",
            "{}: no secret in the repository",
            o.describe()
        );
    }
}

#[test]
fn generated_files_are_byte_identical_to_their_sources() {
    let root = root();
    // Alert rules and dashboards: the ConfigMaps carry the files verbatim.
    let generated = model::load_file(&root.join("k8s/29-monitoring-generated.yml"));
    let rules = find(&generated, "ConfigMap", "prometheus-rules");
    let source = std::fs::read_to_string(root.join("docker/observability/prometheus/alerts.yml"))
        .expect("docker/observability/prometheus/alerts.yml");
    assert_eq!(
        rules.value["data"]["alerts.yml"].as_str(),
        Some(source.as_str()),
        "prometheus-rules differs from docker/observability/prometheus/alerts.yml: run k8s/tools/sync.sh"
    );
    let dashboards = find(&generated, "ConfigMap", "grafana-dashboards");
    let data = dashboards.value["data"].as_object().expect("data");
    let dir = root.join("docker/observability/grafana/dashboards");
    let mut sources = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).expect("docker/observability/grafana/dashboards") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        let text = std::fs::read_to_string(&path).expect("dashboard");
        serde_json::from_str::<Value>(&text)
            .unwrap_or_else(|err| panic!("{name} is not JSON: {err}"));
        assert_eq!(
            data.get(&name).and_then(Value::as_str),
            Some(text.as_str()),
            "grafana-dashboards/{name} differs from its source: run k8s/tools/sync.sh"
        );
        sources.insert(name);
    }
    assert!(sources.contains("catga.json"));
    assert_eq!(
        data.keys().cloned().collect::<BTreeSet<_>>(),
        sources,
        "grafana-dashboards holds exactly the dashboards of docker/observability/grafana/dashboards"
    );

    // The kustomize base: byte-identical copies of the top-level manifests.
    let copies = root.join("k8s/kustomize/base/resources");
    let mut copied = BTreeSet::new();
    for entry in std::fs::read_dir(&copies).expect("k8s/kustomize/base/resources") {
        copied.insert(
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned(),
        );
    }
    let mut originals = BTreeSet::new();
    for f in model::manifest_files() {
        let name = f.file_name().expect("name").to_string_lossy().into_owned();
        assert_eq!(
            std::fs::read(&f).expect("manifest"),
            std::fs::read(copies.join(&name)).unwrap_or_default(),
            "k8s/kustomize/base/resources/{name} differs from k8s/{name}: run k8s/tools/sync.sh"
        );
        originals.insert(name);
    }
    assert_eq!(copied, originals, "run k8s/tools/sync.sh");
    let kustomization = model::load_file(&root.join("k8s/kustomize/base/kustomization.yaml"));
    let listed: BTreeSet<String> = kustomization[0].value["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .map(|r| {
            r.as_str()
                .expect("path")
                .trim_start_matches("resources/")
                .to_owned()
        })
        .collect();
    assert_eq!(listed, originals, "the base lists every manifest");
}

#[test]
fn images_are_what_the_docker_build_produces_and_pinned() {
    let all = objects();
    let version = env!("CARGO_PKG_VERSION");
    for app in &APPS {
        let deployment = find(&all, "Deployment", app.service);
        let image = model::main_container(deployment)["image"]
            .as_str()
            .expect("image");
        let expected = format!("catga/{}:{version}", app.service);
        assert_eq!(image, expected, "{}", deployment.describe());
        let dockerfile = root().join("docker").join(app.service).join("Dockerfile");
        if let Ok(text) = std::fs::read_to_string(&dockerfile) {
            assert!(
                text.contains(&expected),
                "{} does not build {expected}",
                dockerfile.display()
            );
        }
    }
    let mut with_tools = all.clone();
    with_tools.extend(model::tool_objects());
    for o in with_tools.iter().filter(|o| o.is_workload()) {
        for c in model::all_containers(o.pod()) {
            let image = c["image"].as_str().expect("image");
            let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
            assert!(
                !tag.is_empty() && !tag.contains('/') && tag != "latest",
                "{}: image {image} is not pinned by tag",
                o.describe()
            );
        }
    }
}

#[test]
fn probes_ports_and_env_match_what_each_service_reads() {
    let all = objects();
    let secret_keys = generated_secret_keys();
    for app in &APPS {
        let deployment = find(&all, "Deployment", app.service);
        let container = model::main_container(deployment);
        let env = model::env_of(container);
        // Every name is one the services read (or a documented OTEL standard).
        for name in env.values.keys().chain(env.secrets.keys()) {
            assert!(
                KNOWN_KEYS.contains(&name.as_str()) || name.starts_with("OTEL_"),
                "{}: {name} is read by no service (see catga_core::config::keys)",
                deployment.describe()
            );
        }
        for (name, (secret, key)) in &env.secrets {
            assert_eq!(secret, "catga-secrets", "{name}");
            assert!(
                secret_keys.contains(key),
                "{name}: key {key} is not generated by k8s/tools/create-secrets.sh"
            );
        }
        assert!(env.secrets.contains_key(keys::REDIS_PASSWORD));

        let values = manifest_env(&all, app);
        let parsed = parse_settings(app.service, &Env::from_pairs(values.clone()));
        assert_eq!(
            parsed.http_port, app.default_port,
            "{} listens on its default port",
            app.service
        );
        assert_eq!(
            parsed.service_name, app.default_service_name,
            "{}: the guide's Jaeger service name",
            app.service
        );
        assert_eq!(parsed.nats.queue_group, consumers::ORDER_PROCESSING);
        assert_eq!(
            values.get(keys::ENABLE_IDEMPOTENCY).map(String::as_str),
            Some("true")
        );
        let jaeger = values
            .get(keys::OTEL_JAEGER_ENDPOINT)
            .expect("Jaeger endpoint");
        assert!(
            !jaeger.contains(":14268"),
            "{jaeger}: the legacy Thrift endpoint; use Jaeger's OTLP receiver"
        );

        // Container ports are the service's; probes and the prometheus
        // annotation name the port of /health and /metrics (order-api's ops
        // port, off the LoadBalancer's path).
        let ports: Vec<u16> = container["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .filter_map(|p| p["containerPort"].as_u64())
            .map(|p| u16::try_from(p).expect("port"))
            .collect();
        let declared: Vec<u16> = std::iter::once(parsed.http_port)
            .chain(parsed.ops_port)
            .collect();
        assert_eq!(ports, declared, "{}", deployment.describe());
        let health_port = parsed.ops_port.unwrap_or(parsed.http_port);
        let live = &container["livenessProbe"];
        let ready = &container["readinessProbe"];
        assert_eq!(live["httpGet"]["path"], "/health");
        assert_eq!(ready["httpGet"]["path"], "/health/ready");
        for (probe, delay, period) in [(live, 30, 10), (ready, 10, 5)] {
            assert_eq!(
                resolve_port(container, &probe["httpGet"]["port"]),
                Some(health_port)
            );
            assert_eq!(probe["initialDelaySeconds"], delay, "the guide's timing");
            assert_eq!(probe["periodSeconds"], period, "the guide's timing");
        }
        let annotations = &deployment.pod()["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"], "true");
        assert_eq!(annotations["prometheus.io/port"], health_port.to_string());
        assert_eq!(annotations["prometheus.io/path"], "/metrics");
    }
}

#[test]
fn connection_settings_point_at_the_manifests_services() {
    let all = objects();
    let nats = find(&all, "StatefulSet", "nats");
    let replicas = nats.spec()["replicas"].as_u64().expect("replicas");
    let headless = find(
        &all,
        "Service",
        nats.spec()["serviceName"].as_str().expect("serviceName"),
    );
    assert_eq!(headless.spec()["clusterIP"], "None");
    let client_port =
        resolve_port(model::main_container(nats), &Value::from("client")).expect("client port");
    let expected: Vec<String> = (0..replicas)
        .map(|i| {
            format!(
                "nats://nats-{i}.{}.{}.svc.cluster.local:{client_port}",
                headless.name(),
                model::NAMESPACE
            )
        })
        .collect();
    for app in &APPS {
        let values = manifest_env(&all, app);
        let parsed = parse_settings(app.service, &Env::from_pairs(values.clone()));
        assert_eq!(
            parsed.nats.servers, expected,
            "{}: one URL per NATS pod",
            app.service
        );
        assert_eq!(
            u64::try_from(parsed.nats.stream_replicas).expect("replicas"),
            replicas,
            "{}: {} matches the NATS cluster size",
            app.service,
            keys::NATS_STREAM_REPLICAS
        );
        // Redis__Configuration names the master Service and its port.
        let redis = values.get(keys::REDIS_CONFIGURATION).expect("Redis");
        let (host, port) = redis
            .split(',')
            .next()
            .and_then(|e| e.rsplit_once(':'))
            .expect("host:port");
        let service = find(&all, "Service", host);
        assert_eq!(
            service.spec()["selector"]["statefulset.kubernetes.io/pod-name"],
            "redis-0",
            "the master is redis-0"
        );
        assert!(
            service.spec()["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["port"].as_u64() == port.parse().ok())
        );
        // The Jaeger endpoint is a Service port of Jaeger's OTLP receiver.
        let jaeger = url::Url::parse(values.get(keys::OTEL_JAEGER_ENDPOINT).expect("endpoint"))
            .expect("URL");
        let service = find(&all, "Service", jaeger.host_str().expect("host"));
        let port = service.spec()["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .find(|p| p["port"].as_u64() == jaeger.port().map(u64::from))
            .unwrap_or_else(|| panic!("{jaeger}: no such port on Service {}", service.name()));
        assert!(
            port["name"]
                .as_str()
                .unwrap_or_default()
                .starts_with("otlp"),
            "{jaeger} is not an OTLP port"
        );
    }
}

#[test]
fn selectors_and_targets_resolve() {
    let all = objects();
    let pods: Vec<&Object> = all.iter().filter(|o| o.is_workload()).collect();
    for w in &pods {
        if w.kind() != "Pod" {
            assert!(
                selects(&w.spec()["selector"], &labels(w.pod())),
                "{}: selector does not match its own pods",
                w.describe()
            );
        }
    }
    for o in &all {
        match o.kind() {
            "Service" => {
                let target = pods
                    .iter()
                    .find(|w| {
                        pod_label_sets(w)
                            .iter()
                            .any(|l| selects(&o.spec()["selector"], l))
                    })
                    .unwrap_or_else(|| panic!("{} selects no pod", o.describe()));
                for p in o.spec()["ports"].as_array().expect("ports") {
                    assert!(
                        model::all_containers(target.pod())
                            .iter()
                            .any(|c| resolve_port(c, &p["targetPort"]).is_some()),
                        "{}: targetPort {} is no container port of {}",
                        o.describe(),
                        p["targetPort"],
                        target.describe()
                    );
                }
            }
            "PodDisruptionBudget" | "NetworkPolicy" => {
                let selector = if o.kind() == "NetworkPolicy" {
                    &o.spec()["podSelector"]
                } else {
                    &o.spec()["selector"]
                };
                assert!(
                    pods.iter().any(|w| selects(selector, &labels(w.pod()))),
                    "{} selects no pod",
                    o.describe()
                );
            }
            "HorizontalPodAutoscaler" => {
                let target = &o.spec()["scaleTargetRef"];
                let w = find(
                    &all,
                    target["kind"].as_str().expect("kind"),
                    target["name"].as_str().expect("name"),
                );
                let replicas = w.spec()["replicas"].as_u64().expect("replicas");
                let (min, max) = (
                    o.spec()["minReplicas"].as_u64().expect("min"),
                    o.spec()["maxReplicas"].as_u64().expect("max"),
                );
                assert!(min <= replicas && replicas <= max, "{}", o.describe());
                for c in model::all_containers(w.pod()) {
                    assert!(
                        !c["resources"]["requests"]["cpu"].is_null(),
                        "HPA on CPU needs requests"
                    );
                }
            }
            "RoleBinding" => {
                let role = find(
                    &all,
                    "Role",
                    o.value["roleRef"]["name"].as_str().expect("role"),
                );
                for s in o.value["subjects"].as_array().expect("subjects") {
                    find(&all, "ServiceAccount", s["name"].as_str().expect("sa"));
                }
                assert!(role.value["rules"][0]["verbs"].as_array().expect("verbs").iter().all(|v| ["get", "list", "watch"].contains(&v.as_str().unwrap_or_default())));
            }
            _ => {}
        }
    }
    // ConfigMaps and Secrets the pods use exist (or are the generated Secret).
    for w in &pods {
        for v in w.pod()["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(name) = v["configMap"]["name"].as_str() {
                find(&all, "ConfigMap", name);
            }
        }
        if let Some(sa) = w.pod()["spec"]["serviceAccountName"].as_str() {
            find(&all, "ServiceAccount", sa);
        }
    }
}

#[test]
fn numbers_are_the_guides() {
    let all = objects();
    for app in &APPS {
        let d = find(&all, "Deployment", app.service);
        assert_eq!(d.spec()["replicas"], app.replicas, "{}", app.service);
        assert_eq!(d.spec()["strategy"]["type"], "RollingUpdate");
        assert_eq!(d.spec()["strategy"]["rollingUpdate"]["maxSurge"], 1);
        assert_eq!(d.spec()["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
        let r = &model::main_container(d)["resources"];
        assert_eq!(
            (
                r["requests"]["cpu"].as_str(),
                r["requests"]["memory"].as_str()
            ),
            (Some(app.requests.0), Some(app.requests.1))
        );
        assert_eq!(
            (r["limits"]["cpu"].as_str(), r["limits"]["memory"].as_str()),
            (Some(app.limits.0), Some(app.limits.1))
        );
        let anti = &d.pod()["spec"]["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
            [0]["podAffinityTerm"];
        assert_eq!(anti["topologyKey"], "kubernetes.io/hostname");
        assert!(selects(&anti["labelSelector"], &labels(d.pod())));

        let hpa = find(
            &all,
            "HorizontalPodAutoscaler",
            &format!("{}-hpa", app.service),
        );
        assert_eq!(
            (
                hpa.spec()["minReplicas"].as_u64(),
                hpa.spec()["maxReplicas"].as_u64()
            ),
            (Some(app.hpa.0), Some(app.hpa.1))
        );
        let targets: BTreeMap<String, u64> = hpa.spec()["metrics"]
            .as_array()
            .expect("metrics")
            .iter()
            .map(|m| {
                (
                    m["resource"]["name"].as_str().expect("name").to_owned(),
                    m["resource"]["target"]["averageUtilization"]
                        .as_u64()
                        .expect("target"),
                )
            })
            .collect();
        let mut expected = BTreeMap::from([("cpu".to_owned(), 70)]);
        if let Some(mem) = app.memory_target {
            expected.insert("memory".to_owned(), mem);
        }
        assert_eq!(targets, expected, "{}", hpa.describe());
        find(&all, "PodDisruptionBudget", &format!("{}-pdb", app.service));
    }
    let behavior = &find(&all, "HorizontalPodAutoscaler", "order-api-hpa").spec()["behavior"];
    assert_eq!(behavior["scaleDown"]["stabilizationWindowSeconds"], 300);
    assert_eq!(
        behavior["scaleDown"]["policies"][0],
        serde_json::json!({"type": "Percent", "value": 50, "periodSeconds": 60})
    );
    assert_eq!(behavior["scaleUp"]["stabilizationWindowSeconds"], 0);
    assert_eq!(
        behavior["scaleUp"]["policies"][0],
        serde_json::json!({"type": "Percent", "value": 100, "periodSeconds": 30})
    );
    assert_eq!(
        find(&all, "PodDisruptionBudget", "order-api-pdb").spec()["minAvailable"],
        2
    );

    let api = find(&all, "Service", services::ORDER_API);
    assert_eq!(api.spec()["type"], "LoadBalancer");
    assert_eq!(api.spec()["ports"][0]["port"], 80);
    assert_eq!(
        resolve_port(
            model::main_container(find(&all, "Deployment", services::ORDER_API)),
            &api.spec()["ports"][0]["targetPort"]
        ),
        Some(order_api::config::DEFAULT_PORT)
    );

    for (name, storage) in [("nats", "10Gi"), ("redis", "5Gi")] {
        let s = find(&all, "StatefulSet", name);
        assert_eq!(s.spec()["replicas"], 3);
        assert_eq!(
            s.spec()["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"],
            storage
        );
        let pdb = all
            .iter()
            .find(|o| {
                o.kind() == "PodDisruptionBudget"
                    && selects(&o.spec()["selector"], &labels(s.pod()))
            })
            .expect("PDB");
        assert_eq!(
            pdb.spec()["minAvailable"],
            2,
            "{}: quorum kept",
            pdb.describe()
        );
    }
    let nats = model::main_container(find(&all, "StatefulSet", "nats"));
    assert_eq!(
        nats["resources"]["requests"],
        serde_json::json!({"cpu": "100m", "memory": "128Mi"})
    );
    assert_eq!(
        nats["resources"]["limits"],
        serde_json::json!({"cpu": "500m", "memory": "512Mi"})
    );
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        let path = nats[probe]["httpGet"]["path"].as_str().expect("path");
        assert!(path.starts_with("/healthz"), "{probe}");
        assert_eq!(
            resolve_port(nats, &nats[probe]["httpGet"]["port"]),
            Some(8222)
        );
    }
    let nats_conf = find(&all, "ConfigMap", "nats-config").value["data"]["nats.conf"]
        .as_str()
        .expect("nats.conf")
        .to_owned();
    assert!(nats_conf.contains("jetstream {") && nats_conf.contains("cluster {"));
    for i in 0..3 {
        assert!(nats_conf.contains(&format!(
            "nats-route://nats-{i}.nats.catga-cluster.svc.cluster.local:6222"
        )));
    }
    let redis_conf = find(&all, "ConfigMap", "redis-config").value["data"]["redis.conf"]
        .as_str()
        .expect("redis.conf")
        .to_owned();
    for line in [
        "appendonly yes",
        "save 900 1",
        "maxmemory 256mb",
        "dir /data",
    ] {
        assert!(
            redis_conf.lines().any(|l| l.trim() == line),
            "redis.conf lacks {line:?}"
        );
    }
}

#[test]
fn every_pod_is_locked_down() {
    let mut all = objects();
    all.extend(model::tool_objects());
    for w in all.iter().filter(|o| o.is_workload()) {
        let spec = &w.pod()["spec"];
        let what = w.describe();
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{what}");
        assert!(
            spec["securityContext"]["runAsUser"]
                .as_u64()
                .is_some_and(|u| u > 0),
            "{what}"
        );
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{what}"
        );
        let needs_token = w.name() == "prometheus";
        assert_eq!(
            spec["automountServiceAccountToken"], needs_token,
            "{what}: token only where needed"
        );
        for c in model::all_containers(w.pod()) {
            let sc = &c["securityContext"];
            let name = c["name"].as_str().unwrap_or_default();
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what} {name}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what} {name}");
            assert_eq!(
                sc["capabilities"]["drop"],
                serde_json::json!(["ALL"]),
                "{what} {name}"
            );
            assert!(sc["capabilities"]["add"].is_null(), "{what} {name}");
            for k in ["requests", "limits"] {
                for r in ["cpu", "memory"] {
                    let q = c["resources"][k][r]
                        .as_str()
                        .unwrap_or_else(|| panic!("{what} {name}: no {k}.{r}"));
                    assert!(model::quantity(q) > 0);
                }
            }
            if k8s_is_long_running(w, c) {
                assert!(
                    !c["livenessProbe"].is_null() && !c["readinessProbe"].is_null(),
                    "{what} {name}: probes"
                );
            }
        }
    }
}

/// The labels of each pod of a workload: a StatefulSet's pods also carry
/// `statefulset.kubernetes.io/pod-name` (what `redis-master` selects).
fn pod_label_sets(w: &Object) -> Vec<BTreeMap<String, String>> {
    let base = labels(w.pod());
    if w.kind() != "StatefulSet" {
        return vec![base];
    }
    (0..w.spec()["replicas"].as_u64().unwrap_or(1))
        .map(|i| {
            let mut l = base.clone();
            l.insert(
                "statefulset.kubernetes.io/pod-name".to_owned(),
                format!("{}-{i}", w.name()),
            );
            l
        })
        .collect()
}

fn k8s_is_long_running(w: &Object, c: &Value) -> bool {
    !w.runs_once()
        && w.pod()["spec"]["containers"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|x| x["name"] == c["name"]))
}

#[test]
fn termination_outlasts_the_pause_and_the_drain() {
    let all = objects();
    for app in &APPS {
        let d = find(&all, "Deployment", app.service);
        let spec = &d.pod()["spec"];
        let container = model::main_container(d);
        let parsed = parse_settings(app.service, &Env::from_pairs(manifest_env(&all, app)));
        let command: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
            .as_array()
            .expect("a preStop exec")
            .iter()
            .map(|v| v.as_str().expect("arg"))
            .collect();
        let [program, "sleep", seconds] = command.as_slice() else {
            panic!(
                "{}: preStop is not `<busybox> sleep N`: {command:?}",
                d.describe()
            )
        };
        let pause: u64 = seconds.parse().expect("seconds");
        assert!(pause >= 5, "endpoints need a few seconds to drop the pod");
        // The pause binary comes from an emptyDir an init container fills.
        let (dir, file) = program.rsplit_once('/').expect("absolute path");
        let volume = container["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["mountPath"] == dir)
            .expect("the pause volume")["name"]
            .clone();
        assert!(
            spec["volumes"]
                .as_array()
                .expect("volumes")
                .iter()
                .any(|v| v["name"] == volume && !v["emptyDir"].is_null())
        );
        let init = spec["initContainers"]
            .as_array()
            .expect("init container")
            .iter()
            .find(|c| {
                c["volumeMounts"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|m| m["name"] == volume)
            })
            .expect("an init container fills the pause volume");
        assert!(
            init["command"]
                .as_array()
                .expect("command")
                .iter()
                .any(|a| a.as_str().is_some_and(|a| a.ends_with(&format!("/{file}"))))
        );
        let grace = spec["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace period");
        assert!(
            grace > pause + parsed.shutdown_grace.as_secs(),
            "{}: grace {grace}s must exceed preStop {pause}s + drain {}s",
            d.describe(),
            parsed.shutdown_grace.as_secs()
        );
    }
}

/// Flows the system needs: (from app label, to app label, port).
fn needed_flows(all: &[Object]) -> BTreeSet<(String, String, u16)> {
    let mut flows = BTreeSet::new();
    let mut add = |a: &str, b: &str, p: u16| flows.insert((a.to_owned(), b.to_owned(), p));
    for app in &APPS {
        let values = manifest_env(all, app);
        let parsed = parse_settings(app.service, &Env::from_pairs(values.clone()));
        for server in &parsed.nats.servers {
            add(
                app.service,
                "nats",
                url::Url::parse(server).expect("URL").port().expect("port"),
            );
        }
        let redis = values[keys::REDIS_CONFIGURATION]
            .split(',')
            .next()
            .and_then(|e| e.rsplit_once(':'))
            .expect("host:port");
        add(app.service, "redis", redis.1.parse().expect("port"));
        let jaeger = url::Url::parse(&values[keys::OTEL_JAEGER_ENDPOINT]).expect("URL");
        add(app.service, "jaeger", jaeger.port().expect("port"));
        // Scrapes go to the port of /metrics (order-api's ops port).
        add(
            "prometheus",
            app.service,
            parsed.ops_port.unwrap_or(parsed.http_port),
        );
    }
    add("nats", "nats", 6222);
    add("redis", "redis", 6379);
    add("grafana", "prometheus", 9090);
    add("grafana", "jaeger", 16686);
    flows
}

fn policy_allows(
    policies: &[&Object],
    from: &BTreeMap<String, String>,
    to: &BTreeMap<String, String>,
    port: u16,
) -> bool {
    let side = |pod: &BTreeMap<String, String>,
                peer_pod: &BTreeMap<String, String>,
                kind: &str,
                peers: &str| {
        let selecting: Vec<&&Object> = policies
            .iter()
            .filter(|p| selects(&p.spec()["podSelector"], pod))
            .filter(|p| {
                p.spec()["policyTypes"]
                    .as_array()
                    .is_some_and(|t| t.iter().any(|t| t == kind))
            })
            .collect();
        if selecting.is_empty() {
            return true;
        }
        let key = if kind == "Ingress" {
            "ingress"
        } else {
            "egress"
        };
        selecting.iter().any(|p| {
            p.spec()[key].as_array().into_iter().flatten().any(|rule| {
                let peer_ok = match rule[peers].as_array() {
                    None => true,
                    Some(list) => list.iter().any(|peer| {
                        peer["namespaceSelector"].is_null()
                            && peer["ipBlock"].is_null()
                            && selects(&peer["podSelector"], peer_pod)
                    }),
                };
                let port_ok = match rule["ports"].as_array() {
                    None => true,
                    Some(ports) => ports.iter().any(|p| {
                        p["port"].as_u64() == Some(u64::from(port))
                            && p["protocol"].as_str().unwrap_or("TCP") == "TCP"
                    }),
                };
                peer_ok && port_ok
            })
        })
    };
    side(from, to, "Egress", "to") && side(to, from, "Ingress", "from")
}

#[test]
fn network_policies_allow_exactly_the_needed_flows() {
    let all = objects();
    let policies: Vec<&Object> = all.iter().filter(|o| o.kind() == "NetworkPolicy").collect();
    let deny = find(&all, "NetworkPolicy", "default-deny-all");
    assert_eq!(deny.spec()["podSelector"], serde_json::json!({}));
    assert!(deny.spec()["ingress"].is_null() && deny.spec()["egress"].is_null());
    let dns = find(&all, "NetworkPolicy", "allow-dns-egress");
    let dns_ports: BTreeSet<(String, u64)> = dns.spec()["egress"][0]["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["protocol"].as_str().expect("proto").to_owned(),
                p["port"].as_u64().expect("port"),
            )
        })
        .collect();
    assert_eq!(
        dns_ports,
        BTreeSet::from([("TCP".to_owned(), 53), ("UDP".to_owned(), 53)])
    );

    let needed = needed_flows(&all);
    let pods: Vec<(String, BTreeMap<String, String>, Vec<u16>)> = all
        .iter()
        .filter(|o| o.is_workload())
        .map(|w| {
            let ports = model::all_containers(w.pod())
                .iter()
                .flat_map(|c| c["ports"].as_array().into_iter().flatten())
                .filter_map(|p| p["containerPort"].as_u64())
                .map(|p| u16::try_from(p).expect("port"))
                .collect();
            (labels(w.pod())["app"].clone(), labels(w.pod()), ports)
        })
        .collect();
    let mut allowed = BTreeSet::new();
    for (from, from_labels, _) in &pods {
        for (to, to_labels, ports) in &pods {
            for &port in ports {
                if policy_allows(&policies, from_labels, to_labels, port) {
                    allowed.insert((from.clone(), to.clone(), port));
                }
            }
        }
    }
    let missing: Vec<_> = needed.difference(&allowed).collect();
    let extra: Vec<_> = allowed.difference(&needed).collect();
    assert!(
        missing.is_empty(),
        "flows the system needs but the NetworkPolicies block: {missing:?}"
    );
    assert!(
        extra.is_empty(),
        "flows the NetworkPolicies allow but nothing needs: {extra:?}"
    );
    // order-api takes traffic from outside the cluster (its LoadBalancer) on
    // its API port only; its ops port (/health, /metrics) from pods only.
    let api = find(&all, "NetworkPolicy", services::ORDER_API);
    let ingress = api.spec()["ingress"].as_array().expect("ingress rules");
    let open: Vec<_> = ingress.iter().filter(|r| r["from"].is_null()).collect();
    assert_eq!(open.len(), 1, "{ingress:?}");
    assert_eq!(
        open[0]["ports"],
        serde_json::json!([{"protocol": "TCP", "port": order_api::config::DEFAULT_PORT}])
    );
    for rule in ingress.iter().filter(|r| !r["from"].is_null()) {
        assert_eq!(
            rule["ports"],
            serde_json::json!([{"protocol": "TCP", "port": order_api::config::DEFAULT_OPS_PORT}]),
            "{rule:?}"
        );
        for peer in rule["from"].as_array().expect("from") {
            assert!(
                peer["ipBlock"].is_null() && peer["namespaceSelector"].is_null(),
                "the ops port is for pods of the namespace only: {peer:?}"
            );
        }
    }
}

/// The load generator Job (k8s/tools/loadgen.yml) and the variables it is
/// configured with (loadgen's `LOADGEN_*` settings).
pub const LOADGEN: &str = "loadgen";
pub const LOADGEN_URL: &str = "LOADGEN_URL";
pub const LOADGEN_DURATION: &str = "LOADGEN_DURATION";
/// loadgen's `--follow-timeout` default: how long the run may go on after
/// the last order was placed.
const LOADGEN_FOLLOW_TIMEOUT: Duration = Duration::from_secs(30);

/// A loadgen duration as the Job writes it: `90s`, `5m`, `1h`.
fn job_duration(text: &str) -> Duration {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: u64 = n.parse().unwrap_or_else(|_| panic!("duration {text:?}"));
    Duration::from_secs(match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("duration {text:?}: use s, m or h"),
    })
}

#[test]
fn loadgen_job_runs_the_image_against_the_order_api_service_once() {
    let all = objects();
    let tools = model::tool_objects();
    let job = find(&tools, "Job", LOADGEN);
    let what = job.describe();
    assert!(
        !all.iter().any(|o| o.kind() == "Job"),
        "no Job in k8s/: `kubectl apply -f k8s/` would start it on every deploy"
    );
    assert_eq!(job.namespace(), Some(model::NAMESPACE), "{what}");

    // The image docker/loadgen/Dockerfile builds, its entrypoint running `orders`.
    let container = model::main_container(job);
    let expected = format!("catga/loadgen:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(container["image"], expected.as_str(), "{what}");
    let dockerfile = std::fs::read_to_string(root().join("docker/loadgen/Dockerfile"))
        .expect("docker/loadgen/Dockerfile");
    assert!(
        dockerfile.contains(&format!("-t {expected} .")),
        "docker/loadgen/Dockerfile does not build {expected}"
    );
    assert!(dockerfile.contains(r#"ENTRYPOINT ["/usr/local/bin/loadgen"]"#));
    assert!(
        container["command"].is_null(),
        "{what}: the image's entrypoint runs"
    );
    assert_eq!(container["args"][0], "orders", "{what}");

    // Runs once: no retry, a deadline past the run, cleaned up afterwards.
    let spec = job.spec();
    assert_eq!(
        spec["backoffLimit"], 0,
        "{what}: a failed load test is not retried"
    );
    assert_eq!(job.pod()["spec"]["restartPolicy"], "Never", "{what}");
    assert!(
        spec["ttlSecondsAfterFinished"]
            .as_u64()
            .is_some_and(|t| t >= 600),
        "{what}: keep the finished Job (and its log) a while, then delete it"
    );
    let env = model::env_of(container);
    assert!(env.secrets.is_empty(), "{what}: needs no secret");
    let cli = std::fs::read_to_string(root().join("crates/loadgen/src/cli.rs"))
        .expect("crates/loadgen/src/cli.rs");
    for name in env.values.keys() {
        assert!(
            cli.contains(&format!("env = \"{name}\"")),
            "{what}: loadgen reads no {name}"
        );
    }
    let run = job_duration(
        env.values
            .get(LOADGEN_DURATION)
            .unwrap_or_else(|| panic!("{what}: {LOADGEN_DURATION} is set")),
    );
    let deadline = Duration::from_secs(
        spec["activeDeadlineSeconds"]
            .as_u64()
            .unwrap_or_else(|| panic!("{what}: activeDeadlineSeconds")),
    );
    assert!(
        deadline > run + LOADGEN_FOLLOW_TIMEOUT,
        "{what}: the deadline {deadline:?} must outlast the run {run:?} and the follow-up of its last orders {LOADGEN_FOLLOW_TIMEOUT:?}"
    );

    // Its URL is the order-api Service, by name and port, which leads to order-api's pods.
    let url = url::Url::parse(&env.values[LOADGEN_URL]).expect("LOADGEN_URL is a URL");
    assert_eq!(url.scheme(), "http");
    let host = url.host_str().expect("host");
    let (name, domain) = host.split_once('.').unwrap_or((host, ""));
    assert!(
        domain.is_empty()
            || domain == model::NAMESPACE
            || domain == format!("{}.svc.cluster.local", model::NAMESPACE),
        "{url}: a Service of {}",
        model::NAMESPACE
    );
    assert_eq!(name, services::ORDER_API, "{url}: the order-api Service");
    let service = find(&all, "Service", name);
    let port = url.port_or_known_default().expect("port");
    let service_port = service.spec()["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|p| p["port"].as_u64() == Some(u64::from(port)))
        .unwrap_or_else(|| panic!("{url}: Service {name} has no port {port}"));
    let api = find(&all, "Deployment", services::ORDER_API);
    assert!(selects(&service.spec()["selector"], &labels(api.pod())));
    let pod_port = resolve_port(model::main_container(api), &service_port["targetPort"])
        .expect("the Service's targetPort is an order-api container port");
    assert_eq!(pod_port, order_api::config::DEFAULT_PORT);

    // The NetworkPolicies: DNS and order-api's port, nothing else; nothing in.
    let policies: Vec<&Object> = all
        .iter()
        .chain(&tools)
        .filter(|o| o.kind() == "NetworkPolicy")
        .collect();
    let me = labels(job.pod());
    assert_eq!(me["app"], LOADGEN);
    let dns = find(&all, "NetworkPolicy", "allow-dns-egress");
    assert!(selects(&dns.spec()["podSelector"], &me), "DNS egress");
    assert!(
        policy_allows(&policies, &me, &labels(api.pod()), pod_port),
        "the NetworkPolicies block loadgen -> order-api:{pod_port}"
    );
    // Its own policy, egress side alone (others' ingress rules aside): order-api only.
    let own = find(&tools, "NetworkPolicy", LOADGEN);
    assert!(selects(&own.spec()["podSelector"], &me));
    assert_eq!(
        own.spec()["egress"],
        serde_json::json!([{
            "to": [{"podSelector": {"matchLabels": {"app": services::ORDER_API}}}],
            "ports": [{"protocol": "TCP", "port": pod_port}],
        }]),
        "{}",
        own.describe()
    );
    for w in all.iter().filter(|o| o.is_workload()) {
        let ports: BTreeSet<u16> = model::all_containers(w.pod())
            .iter()
            .flat_map(|c| c["ports"].as_array().into_iter().flatten())
            .filter_map(|p| p["containerPort"].as_u64())
            .map(|p| u16::try_from(p).expect("port"))
            .chain([pod_port])
            .collect();
        for port in ports {
            if w.name() != services::ORDER_API || port != pod_port {
                assert!(
                    !policy_allows(&policies, &me, &labels(w.pod()), port),
                    "loadgen may reach {}:{port}; it needs order-api:{pod_port} only",
                    w.describe()
                );
            }
            assert!(
                !policy_allows(&policies, &labels(w.pod()), &me, port),
                "{} may connect to loadgen",
                w.describe()
            );
        }
    }
}

#[test]
fn prometheus_discovers_the_namespace_pods_and_loads_the_rules() {
    let all = objects();
    let config = find(&all, "ConfigMap", "prometheus-config").value["data"]["prometheus.yml"]
        .as_str()
        .expect("prometheus.yml")
        .to_owned();
    let config: Value = serde_norway::from_str(&config).expect("prometheus.yml is YAML");
    let job = config["scrape_configs"]
        .as_array()
        .expect("jobs")
        .iter()
        .find(|j| j["job_name"] == "catga-pods")
        .expect("pod job");
    assert_eq!(
        job["kubernetes_sd_configs"],
        serde_json::json!([{"role": "pod", "namespaces": {"names": [model::NAMESPACE]}}])
    );
    let relabels = job["relabel_configs"].as_array().expect("relabels");
    let has = |source: &str, action: &str, target: Option<&str>| {
        relabels.iter().any(|r| {
            r["source_labels"]
                .as_array()
                .is_some_and(|s| s.iter().any(|l| l == source))
                && r["action"] == action
                && target.is_none_or(|t| r["target_label"] == t)
        })
    };
    assert!(has(
        "__meta_kubernetes_pod_annotation_prometheus_io_scrape",
        "keep",
        None
    ));
    assert!(has(
        "__meta_kubernetes_pod_annotation_prometheus_io_path",
        "replace",
        Some("__metrics_path__")
    ));
    assert!(has(
        "__meta_kubernetes_pod_annotation_prometheus_io_port",
        "replace",
        Some("__address__")
    ));
    assert!(has(
        "__meta_kubernetes_namespace",
        "replace",
        Some("namespace")
    ));
    assert!(
        !relabels.iter().any(|r| r["target_label"] == "service"),
        "the services set their own `service` label"
    );

    // Rules: the generated ConfigMap, mounted where rule_files looks.
    let deployment = find(&all, "Deployment", "prometheus");
    let pod = &deployment.pod()["spec"];
    let mount_of = |volume_cm: &str| {
        let volume = pod["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .find(|v| v["configMap"]["name"] == volume_cm)
            .expect("volume")["name"]
            .clone();
        model::main_container(deployment)["volumeMounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["name"] == volume)
            .expect("mount")["mountPath"]
            .as_str()
            .expect("path")
            .to_owned()
    };
    let rules_dir = mount_of("prometheus-rules");
    assert_eq!(
        config["rule_files"],
        serde_json::json!([format!("{rules_dir}/*.yml")])
    );
    assert_eq!(pod["serviceAccountName"], "prometheus");

    // Grafana: datasources point at the Services, the dashboards at the mounted ConfigMap.
    let provisioning = &find(&all, "ConfigMap", "grafana-provisioning").value["data"];
    let datasources: Value = serde_norway::from_str(
        provisioning["datasources.yml"]
            .as_str()
            .expect("datasources"),
    )
    .expect("YAML");
    for ds in datasources["datasources"].as_array().expect("list") {
        let url = url::Url::parse(ds["url"].as_str().expect("url")).expect("URL");
        let service = find(&all, "Service", url.host_str().expect("host"));
        assert!(
            service.spec()["ports"]
                .as_array()
                .expect("ports")
                .iter()
                .any(|p| p["port"].as_u64() == url.port().map(u64::from)),
            "{url}"
        );
    }
    let dashboards: Value =
        serde_norway::from_str(provisioning["dashboards.yml"].as_str().expect("dashboards"))
            .expect("YAML");
    let grafana = find(&all, "Deployment", "grafana");
    let dash_volume = grafana.pod()["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["configMap"]["name"] == "grafana-dashboards")
        .expect("dashboards volume")["name"]
        .clone();
    let mount = model::main_container(grafana)["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| m["name"] == dash_volume)
        .expect("mount")["mountPath"]
        .clone();
    assert_eq!(dashboards["providers"][0]["options"]["path"], mount);
}

#[test]
fn keda_scales_order_service_on_the_order_processing_backlog() {
    let objs =
        model::load_file(&root().join("k8s/kustomize/production/order-service-scaledobject.yml"));
    let so = find(&objs, "ScaledObject", services::ORDER_SERVICE);
    assert_eq!(so.spec()["scaleTargetRef"]["name"], services::ORDER_SERVICE);
    let all = objects();
    let hpa = find(&all, "HorizontalPodAutoscaler", "order-service-hpa");
    assert_eq!(so.spec()["minReplicaCount"], hpa.spec()["minReplicas"]);
    assert_eq!(so.spec()["maxReplicaCount"], hpa.spec()["maxReplicas"]);
    let trigger = so.spec()["triggers"]
        .as_array()
        .expect("triggers")
        .iter()
        .find(|t| t["type"] == "nats-jetstream")
        .expect("a nats-jetstream trigger");
    let m = &trigger["metadata"];
    assert_eq!(m["stream"], streams::ORDER_COMMANDS);
    let order_service = find(&all, "Deployment", services::ORDER_SERVICE);
    let values = model::env_of(model::main_container(order_service)).values;
    let durable = values
        .get(keys::NATS_QUEUE_GROUP)
        .map_or(consumers::ORDER_PROCESSING, String::as_str);
    assert_eq!(m["consumer"], durable, "the durable order-service binds");
    // The headless Service, so KEDA reaches the consumer leader by server name (= pod name).
    let endpoint = m["natsServerMonitoringEndpoint"]
        .as_str()
        .expect("endpoint");
    assert_eq!(
        endpoint,
        format!("nats.{}.svc.cluster.local:8222", model::NAMESPACE)
    );
    let conf = find(&all, "ConfigMap", "nats-config").value["data"]["nats.conf"]
        .as_str()
        .expect("conf")
        .to_owned();
    assert!(conf.contains("server_name: $POD_NAME"));

    // When kubectl is here, the overlays render as intended.
    let Some(rendered) = kustomize("production") else {
        return;
    };
    assert!(rendered.iter().any(|o| o.kind() == "ScaledObject"));
    assert!(
        !rendered
            .iter()
            .any(|o| o.kind() == "HorizontalPodAutoscaler" && o.name() == "order-service-hpa"),
        "KEDA owns order-service's HPA in production"
    );
    let dev = kustomize("dev").expect("dev renders");
    for w in dev
        .iter()
        .filter(|o| matches!(o.kind(), "Deployment" | "StatefulSet"))
    {
        assert_eq!(w.spec()["replicas"], 1, "dev: {}", w.describe());
        assert!(w.spec()["volumeClaimTemplates"].is_null(), "dev: no PVC");
    }
    assert!(!dev.iter().any(|o| o.kind() == "PodDisruptionBudget"));
}

fn kustomize(overlay: &str) -> Option<Vec<Object>> {
    let dir = root().join("k8s/kustomize").join(overlay);
    let output = std::process::Command::new("kubectl")
        .arg("kustomize")
        .arg(&dir)
        .output()
        .ok()?;
    assert!(
        output.status.success(),
        "kubectl kustomize {overlay}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = std::env::temp_dir().join(format!(
        "catga-kustomize-{overlay}-{}.yml",
        std::process::id()
    ));
    std::fs::write(&path, &output.stdout).expect("write");
    let objs = model::load_file(&path);
    let _ = std::fs::remove_file(&path);
    Some(objs)
}
