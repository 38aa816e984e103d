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
mod nats_auth;
mod runtime;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::Duration,
};

use catga_core::{
    config::{Env, RedisTopology, keys},
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
    keys::NATS_USER,
    keys::NATS_PASSWORD,
    keys::NATS_CREDS_FILE,
    keys::NATS_TLS_CA_FILE,
    keys::REDIS_CONFIGURATION,
    keys::REDIS_PASSWORD,
    keys::REDIS_SENTINEL_PASSWORD,
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
    pub redis: catga_core::config::RedisSettings,
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
            // A distributed order-api authenticates its callers (or says it does not).
            s.auth.require_for_distributed().unwrap_or_else(|e| fail(e));
            let Some(order_api::Distributed { nats, redis, .. }) =
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
                redis,
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
                redis: s.redis,
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
                redis: s.redis,
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

/// The manifest environment of `app`, secrets filled with test values. The
/// optional ones (webhook URLs, only in the Secret when an operator gives
/// them) are left unset, as in a default install.
pub fn manifest_env(objects: &[Object], app: &App) -> BTreeMap<String, String> {
    let deployment = find(objects, "Deployment", app.service);
    let env = model::env_of(model::main_container(deployment));
    let mut all = env.values;
    for (name, (_secret, key)) in env.secrets {
        if !env.optional.contains(&name) {
            all.insert(name, secret_value(&key));
        }
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
        // ClusterRole/ClusterRoleBinding: kubelet metrics (nodes are cluster-scoped).
        let expected = (!o.is_cluster_scoped()).then_some(model::NAMESPACE);
        assert_eq!(
            o.namespace(),
            expected,
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

    // Redis and Sentinel configuration and scripts: ConfigMap redis-config
    // carries docker/redis/ verbatim (Compose mounts the same files).
    let generated = model::load_file(&root.join("k8s/19-redis-generated.yml"));
    let data = find(&generated, "ConfigMap", "redis-config").value["data"]
        .as_object()
        .expect("data")
        .clone();
    let mut sources = BTreeSet::new();
    for entry in std::fs::read_dir(root.join("docker/redis")).expect("docker/redis") {
        let path = entry.expect("entry").path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .expect("name")
            .to_owned();
        assert_eq!(
            data.get(&name).and_then(Value::as_str),
            Some(std::fs::read_to_string(&path).expect("source").as_str()),
            "redis-config/{name} differs from docker/redis/{name}: run k8s/tools/sync.sh"
        );
        sources.insert(name);
    }
    assert_eq!(data.keys().cloned().collect::<BTreeSet<_>>(), sources);

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
        let stage = dockerfile_stage(app.service, &expected);
        assert!(
            stage.contains(&format!(r#"ENTRYPOINT ["/usr/local/bin/{}"]"#, app.service)),
            "docker/Dockerfile: stage {} runs another binary",
            app.service
        );
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

/// The stage `target` of docker/Dockerfile (one per image), checked to be the
/// one its documented build command tags `image`.
fn dockerfile_stage(target: &str, image: &str) -> String {
    let text =
        std::fs::read_to_string(root().join("docker/Dockerfile")).expect("docker/Dockerfile");
    assert!(
        text.contains(&format!(
            "docker build -f docker/Dockerfile --target {target} -t {image} ."
        )),
        "docker/Dockerfile does not say how to build {image} from target {target}"
    );
    let header = format!("FROM runtime AS {target}\n");
    let start = text
        .find(&header)
        .unwrap_or_else(|| panic!("docker/Dockerfile has no stage {target} on the runtime base"));
    let rest = &text[start + header.len()..];
    let end = rest.find("\nFROM ").map_or(rest.len(), |i| i + 1);
    rest[..end].to_owned()
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
    // Relative to the namespace (pod DNS through the headless Service): no
    // namespace and no cluster domain to go stale.
    let expected: Vec<String> = (0..replicas)
        .map(|i| format!("nats://nats-{i}.{}:{client_port}", headless.name()))
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
        // Redis__Configuration names every Sentinel by its stable pod name
        // (headless Service) and the service name they monitor.
        assert_eq!(
            parsed.redis.topology,
            RedisTopology::Sentinel {
                sentinels: sentinel_endpoints(&all),
                service_name: sentinel_service_name(),
                password: Some(secret_value(SENTINEL_PASSWORD_KEY)),
            },
            "{}: {} goes through the Sentinels",
            app.service,
            keys::REDIS_CONFIGURATION
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

/// The Secret key of the Sentinels' password (their `requirepass`).
const SENTINEL_PASSWORD_KEY: &str = "redis-sentinel-password";

/// A file of ConfigMap redis-config (generated from docker/redis/).
fn redis_config(name: &str) -> String {
    find(&objects(), "ConfigMap", "redis-config").value["data"][name]
        .as_str()
        .unwrap_or_else(|| panic!("redis-config has no {name}"))
        .to_owned()
}

/// What `sentinel.sh` monitors: `sentinel monitor <name> $master <quorum>`.
fn sentinel_monitor() -> (String, u64) {
    let script = redis_config("sentinel.sh");
    let line = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("echo \"sentinel monitor "))
        .expect("sentinel.sh writes a `sentinel monitor` line");
    let words: Vec<&str> = line.trim_end_matches('"').split_whitespace().collect();
    let [name, "$master", quorum] = words.as_slice() else {
        panic!("sentinel monitor line is not `<name> $master <quorum>`: {line}")
    };
    ((*name).to_owned(), quorum.parse().expect("quorum"))
}

fn sentinel_service_name() -> String {
    sentinel_monitor().0
}

/// `host:port` of every Sentinel pod, by its stable name.
fn sentinel_endpoints(all: &[Object]) -> Vec<(String, u16)> {
    let sentinels = find(all, "StatefulSet", "redis-sentinel");
    let headless = find(
        all,
        "Service",
        sentinels.spec()["serviceName"]
            .as_str()
            .expect("serviceName"),
    );
    assert_eq!(headless.spec()["clusterIP"], "None");
    let port = resolve_port(model::main_container(sentinels), &Value::from("sentinel"))
        .expect("sentinel port");
    (0..sentinels.spec()["replicas"].as_u64().expect("replicas"))
        .map(|i| {
            (
                format!("{}-{i}.{}", sentinels.name(), headless.name()),
                port,
            )
        })
        .collect()
}

/// Three Redis pods, three Sentinels with a majority quorum, and nothing
/// that makes the ordinal the master: no Service pinned to one Redis pod, a
/// start script that asks the Sentinels (then the nodes) before it falls back
/// to redis-0 on the first boot, and Sentinels that know the nodes by their
/// stable names and write their configuration into an emptyDir.
#[test]
fn sentinel_decides_the_master_not_the_ordinal() {
    let all = objects();
    let redis = find(&all, "StatefulSet", "redis");
    let sentinels = find(&all, "StatefulSet", "redis-sentinel");
    assert_eq!(redis.spec()["replicas"], 3);
    assert_eq!(sentinels.spec()["replicas"], 3);
    let (service_name, quorum) = sentinel_monitor();
    assert_eq!(quorum, 2, "a majority of the three Sentinels");
    // PDBs keep a quorum of both.
    for w in [redis, sentinels] {
        let pdb = all
            .iter()
            .find(|o| {
                o.kind() == "PodDisruptionBudget"
                    && selects(&o.spec()["selector"], &labels(w.pod()))
            })
            .unwrap_or_else(|| panic!("{}: no PDB", w.describe()));
        assert_eq!(pdb.spec()["minAvailable"], 2, "{}", pdb.describe());
    }
    // No Service follows a fixed pod: a `redis-master` pinned to redis-0
    // would point at a demoted node after a failover.
    for service in all.iter().filter(|o| o.kind() == "Service") {
        assert!(
            service.spec()["selector"]["statefulset.kubernetes.io/pod-name"].is_null(),
            "{} selects one pod",
            service.describe()
        );
    }
    // The headless Services resolve before ready (the first boot needs it).
    for w in [redis, sentinels] {
        let headless = find(
            &all,
            "Service",
            w.spec()["serviceName"].as_str().expect("name"),
        );
        assert_eq!(
            headless.spec()["publishNotReadyAddresses"],
            true,
            "{}",
            headless.describe()
        );
    }
    // The start script: asks, and falls back to redis-0 only when nobody answers.
    let find_master = redis_config("find-master.sh");
    assert!(
        find_master.contains(&format!("sentinel get-master-addr-by-name {service_name}")),
        "find-master.sh asks the Sentinels for {service_name}"
    );
    let start = redis_config("start.sh");
    assert!(start.contains(". /etc/redis/find-master.sh"));
    let replicaof: Vec<&str> = start.lines().filter(|l| l.contains("replicaof")).collect();
    assert!(
        replicaof.iter().any(|l| l.contains("replicaof $master")),
        "start.sh follows the master it found: {replicaof:?}"
    );
    let first_boot = start
        .find("sentinel_master")
        .zip(start.find("replicaof redis-0.redis"))
        .is_some_and(|(asks, fallback)| asks < fallback);
    assert!(
        first_boot,
        "redis-0 is the master only after asking the Sentinels"
    );
    assert!(
        !start.contains("replicaof redis-0.redis 6379\" >>"),
        "start.sh writes its role once, after deciding it"
    );
    // Sentinels: host names, a writable configuration in an emptyDir.
    let conf = redis_config("sentinel.conf");
    for line in [
        "sentinel resolve-hostnames yes",
        "sentinel announce-hostnames yes",
    ] {
        assert!(
            conf.lines().any(|l| l.trim() == line),
            "sentinel.conf lacks {line:?}"
        );
    }
    let script = redis_config("sentinel.sh");
    assert!(script.contains(&format!(
        "sentinel announce-ip $HOSTNAME.{}",
        sentinels.spec()["serviceName"].as_str().expect("name")
    )));
    assert!(start.contains(&format!(
        "me=\"$HOSTNAME.{}\"",
        redis.spec()["serviceName"].as_str().expect("name")
    )));
    assert!(start.contains("replica-announce-ip $me"));
    let conf_path = script
        .lines()
        .find_map(|l| l.trim().strip_prefix("run_dir=\"${REDIS_RUN_DIR:-"))
        .and_then(|l| l.strip_suffix("}\""))
        .expect("sentinel.sh names its configuration's folder");
    let container = model::main_container(sentinels);
    let mount = container["volumeMounts"]
        .as_array()
        .expect("mounts")
        .iter()
        .find(|m| {
            conf_path.starts_with(m["mountPath"].as_str().unwrap_or("-")) && m["readOnly"] != true
        })
        .unwrap_or_else(|| panic!("{conf_path} is on no writable mount"));
    assert!(
        sentinels.pod()["spec"]["volumes"]
            .as_array()
            .expect("volumes")
            .iter()
            .any(|v| v["name"] == mount["name"] && !v["emptyDir"].is_null()),
        "the Sentinel's configuration is in an emptyDir"
    );
    // Authentication: the Sentinels' password is its own Secret key, which
    // the services are given as REDIS_SENTINEL_PASSWORD.
    assert!(
        script.contains("requirepass \\\"$REDIS_SENTINEL_PASSWORD\\\""),
        "{script}"
    );
    assert!(generated_secret_keys().contains(SENTINEL_PASSWORD_KEY));
    for w in [sentinels, redis] {
        let env = model::env_of(model::main_container(w));
        assert_eq!(
            env.secrets.get(keys::REDIS_SENTINEL_PASSWORD),
            Some(&("catga-secrets".to_owned(), SENTINEL_PASSWORD_KEY.to_owned())),
            "{}",
            w.describe()
        );
    }
    for app in &APPS {
        let env = model::env_of(model::main_container(find(&all, "Deployment", app.service)));
        assert_eq!(
            env.secrets.get(keys::REDIS_SENTINEL_PASSWORD),
            Some(&("catga-secrets".to_owned(), SENTINEL_PASSWORD_KEY.to_owned())),
            "{}",
            app.service
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
                // The HPA owns the scale: a replica count in the Deployment
                // would reset it on every apply.
                assert!(
                    w.spec()["replicas"].is_null(),
                    "{} sets replicas although {} scales it",
                    w.describe(),
                    o.describe()
                );
                let (min, max) = (
                    o.spec()["minReplicas"].as_u64().expect("min"),
                    o.spec()["maxReplicas"].as_u64().expect("max"),
                );
                assert!(1 <= min && min <= max, "{}", o.describe());
                for c in model::all_containers(w.pod()) {
                    assert!(
                        !c["resources"]["requests"]["cpu"].is_null(),
                        "HPA on CPU needs requests"
                    );
                }
            }
            "RoleBinding" | "ClusterRoleBinding" => {
                let role = find(
                    &all,
                    o.value["roleRef"]["kind"].as_str().expect("role kind"),
                    o.value["roleRef"]["name"].as_str().expect("role"),
                );
                for s in o.value["subjects"].as_array().expect("subjects") {
                    find(&all, "ServiceAccount", s["name"].as_str().expect("sa"));
                    assert_eq!(s["namespace"], model::NAMESPACE, "{}", o.describe());
                }
                assert!(role.value["rules"][0]["verbs"].as_array().expect("verbs").iter().all(|v| ["get", "list", "watch"].contains(&v.as_str().unwrap_or_default())));
            }
            _ => {}
        }
    }
    // ConfigMaps, claims and Secrets the pods use exist (or are the generated Secret).
    for w in &pods {
        for v in w.pod()["spec"]["volumes"].as_array().into_iter().flatten() {
            if let Some(name) = v["configMap"]["name"].as_str() {
                find(&all, "ConfigMap", name);
            }
            if let Some(name) = v["persistentVolumeClaim"]["claimName"].as_str() {
                find(&all, "PersistentVolumeClaim", name);
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
        // The guide's replica count is the HPA's floor; the Deployment sets none.
        assert!(d.spec()["replicas"].is_null(), "{}", d.describe());
        assert_eq!(
            find(
                &all,
                "HorizontalPodAutoscaler",
                &format!("{}-hpa", app.service)
            )
            .spec()["minReplicas"],
            app.replicas,
            "{}: the guide's replicas",
            app.service
        );
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
    // A rolling restart moves on only when this node is fully current (its
    // streams and consumers caught up), not merely when JetStream is enabled.
    assert_eq!(
        nats["startupProbe"]["httpGet"]["path"], "/healthz",
        "the startupProbe waits for full health"
    );
    let nats_conf = find(&all, "ConfigMap", "nats-config").value["data"]["nats.conf"]
        .as_str()
        .expect("nats.conf")
        .to_owned();
    assert!(nats_conf.contains("jetstream {") && nats_conf.contains("cluster {"));
    for i in 0..3 {
        assert!(nats_conf.contains(&format!("nats-route://nats-{i}.nats:6222")));
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
/// `statefulset.kubernetes.io/pod-name` (what a Service may select).
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
        // The Sentinels, then the master they name (any Redis node).
        let RedisTopology::Sentinel { sentinels, .. } = &parsed.redis.topology else {
            panic!("{}: Redis not through the Sentinels", app.service)
        };
        for (_, port) in sentinels {
            add(app.service, "redis-sentinel", *port);
        }
        add(app.service, "redis", 6379);
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
    // Sentinels watch the nodes and each other; a starting node asks them.
    add("redis-sentinel", "redis", 6379);
    add("redis-sentinel", "redis-sentinel", 26379);
    add("redis", "redis-sentinel", 26379);
    // The exporters beside NATS and Redis, scraped by Prometheus on their
    // `metrics` ports; alerts to Alertmanager.
    for (app, port) in [("nats", 7777), ("redis", 9121)] {
        let workload = find(all, "StatefulSet", app);
        let exporter = model::all_containers(workload.pod())
            .into_iter()
            .find(|c| c["name"] == "exporter")
            .unwrap_or_else(|| panic!("{}: no exporter", workload.describe()));
        assert_eq!(
            resolve_port(exporter, &Value::from("metrics")),
            Some(port),
            "{}",
            workload.describe()
        );
        add("prometheus", app, port);
    }
    add("prometheus", "alertmanager", 9093);
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

    // The image target loadgen of docker/Dockerfile builds, its entrypoint running `orders`.
    let container = model::main_container(job);
    let expected = format!("catga/loadgen:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(container["image"], expected.as_str(), "{what}");
    let stage = dockerfile_stage(LOADGEN, &expected);
    assert!(stage.contains(r#"ENTRYPOINT ["/usr/local/bin/loadgen"]"#));
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
    // Its tokens are signed with the very secret order-api validates them with.
    let api_env = model::env_of(model::main_container(find(
        &all,
        "Deployment",
        services::ORDER_API,
    )));
    let api_secret = api_env
        .secrets
        .get(keys::JWT_SECRET)
        .unwrap_or_else(|| panic!("order-api takes {} from a Secret", keys::JWT_SECRET));
    assert_eq!(
        env.secrets.iter().collect::<Vec<_>>(),
        [(&loadgen::cli::JWT_SECRET_ENV.to_owned(), api_secret)],
        "{what}: its only secret is order-api's {}",
        keys::JWT_SECRET
    );
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
    // Its own namespace, whatever it is called.
    assert_eq!(
        job["kubernetes_sd_configs"],
        serde_json::json!([{"role": "pod", "namespaces": {"own_namespace": true}}])
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

    // Alerts go to the Alertmanager Service, on its port.
    let targets = &config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"];
    let (host, port) = targets[0]
        .as_str()
        .and_then(|t| t.split_once(':'))
        .expect("alertmanager host:port");
    let service = find(&all, "Service", host);
    assert!(
        service.spec()["ports"]
            .as_array()
            .expect("ports")
            .iter()
            .any(|p| p["port"].as_u64() == port.parse().ok()),
        "{host}:{port}"
    );
    let alertmanager = find(&all, "Deployment", "alertmanager");
    let env = model::env_of(model::main_container(alertmanager));
    assert!(
        env.secrets
            .values()
            .any(|(secret, key)| secret == "catga-secrets"
                && key == "alertmanager-webhook-url"
                && generated_secret_keys().contains(key)),
        "Alertmanager's webhook URL comes from Secret catga-secrets (create-secrets.sh)"
    );

    // The exporters' jobs keep the pods of their app on the port named `metrics`.
    let job_of = |name: &str| {
        config["scrape_configs"]
            .as_array()
            .expect("jobs")
            .iter()
            .find(|j| j["job_name"] == name)
            .unwrap_or_else(|| panic!("no scrape job {name}"))
            .clone()
    };
    for app in ["nats", "redis"] {
        let job = job_of(app);
        let keep = &job["relabel_configs"][0];
        assert_eq!(keep["action"], "keep");
        assert_eq!(keep["regex"], format!("{app};metrics"));
        let statefulset = find(&all, "StatefulSet", app);
        assert!(
            model::all_containers(statefulset.pod())
                .iter()
                .any(|c| resolve_port(c, &Value::from("metrics")).is_some()),
            "{}: no port named metrics",
            statefulset.describe()
        );
    }
    // Kubelet and cAdvisor: node discovery, the token, and a ClusterRole that
    // may read node metrics bound to Prometheus' service account.
    for name in ["kubelet", "cadvisor"] {
        let job = job_of(name);
        assert_eq!(job["kubernetes_sd_configs"][0]["role"], "node", "{name}");
        assert!(
            job["authorization"]["credentials_file"]
                .as_str()
                .is_some_and(|f| f.ends_with("serviceaccount/token")),
            "{name}"
        );
    }
    assert_eq!(job_of("cadvisor")["metrics_path"], "/metrics/cadvisor");
    let binding = all
        .iter()
        .find(|o| {
            o.kind() == "ClusterRoleBinding" && o.value["subjects"][0]["name"] == "prometheus"
        })
        .expect("a ClusterRoleBinding for Prometheus");
    let role = find(
        &all,
        "ClusterRole",
        binding.value["roleRef"]["name"].as_str().expect("role"),
    );
    let resources: BTreeSet<&str> = role.value["rules"]
        .as_array()
        .expect("rules")
        .iter()
        .flat_map(|r| r["resources"].as_array().into_iter().flatten())
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(resources, BTreeSet::from(["nodes", "nodes/metrics"]));
    // Its TSDB on a claim.
    let data = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == "data")
        .expect("data volume");
    let claim = find(
        &all,
        "PersistentVolumeClaim",
        data["persistentVolumeClaim"]["claimName"]
            .as_str()
            .expect("Prometheus data on a PersistentVolumeClaim"),
    );
    assert!(!claim.spec()["resources"]["requests"]["storage"].is_null());

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
    let objs = model::load_file(
        &root().join("k8s/kustomize/components/keda/order-service-scaledobject.yml"),
    );
    let so = find(&objs, "ScaledObject", services::ORDER_SERVICE);
    assert_eq!(so.spec()["scaleTargetRef"]["name"], services::ORDER_SERVICE);
    let all = objects();
    let hpa = find(&all, "HorizontalPodAutoscaler", "order-service-hpa");
    assert_eq!(so.spec()["minReplicaCount"], hpa.spec()["minReplicas"]);
    assert_eq!(so.spec()["maxReplicaCount"], hpa.spec()["maxReplicas"]);
    // A running install moves to KEDA: the ScaledObject adopts the HPA the
    // base created (same name) instead of being rejected.
    assert_eq!(
        so.value["metadata"]["annotations"]["scaledobject.keda.sh/transfer-hpa-ownership"],
        "true"
    );
    assert_eq!(
        so.spec()["advanced"]["horizontalPodAutoscalerConfig"]["name"],
        hpa.name()
    );
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
    // The headless Service of the namespace, so KEDA reaches the consumer
    // leader by server name (= pod name); no cluster domain (search path).
    let endpoint = m["natsServerMonitoringEndpoint"]
        .as_str()
        .expect("endpoint");
    assert_eq!(endpoint, format!("nats.{}.svc:8222", model::NAMESPACE));
    let conf = find(&all, "ConfigMap", "nats-config").value["data"]["nats.conf"]
        .as_str()
        .expect("conf")
        .to_owned();
    assert!(conf.contains("server_name: $POD_NAME"));

    // When kubectl is here, the overlays render as intended: production
    // without KEDA (no CRD needed), the component replacing the HPA.
    let Some(production) = model::kustomize("k8s/kustomize/production") else {
        return;
    };
    assert!(!production.iter().any(|o| o.kind() == "ScaledObject"));
    find(&production, "HorizontalPodAutoscaler", "order-service-hpa");
    let with_keda = model::kustomize("tests/k8s/overlays/production-keda").expect("renders");
    assert!(with_keda.iter().any(|o| o.kind() == "ScaledObject"));
    assert!(
        !with_keda
            .iter()
            .any(|o| o.kind() == "HorizontalPodAutoscaler" && o.name() == "order-service-hpa"),
        "KEDA owns order-service's HPA with the component"
    );
    let dev = model::kustomize("k8s/kustomize/dev").expect("dev renders");
    for w in dev.iter().filter(|o| o.kind() == "StatefulSet") {
        assert_eq!(w.spec()["replicas"], 1, "dev: {}", w.describe());
        assert!(w.spec()["volumeClaimTemplates"].is_null(), "dev: no PVC");
    }
    for h in dev.iter().filter(|o| o.kind() == "HorizontalPodAutoscaler") {
        assert_eq!(h.spec()["minReplicas"], 1, "dev: {}", h.describe());
    }
    assert!(!dev.iter().any(|o| o.kind() == "PodDisruptionBudget"));
    assert!(
        !dev.iter().any(|o| o.kind() == "PersistentVolumeClaim"),
        "dev: no PVC"
    );
}

/// Every Deployment an HPA or a KEDA ScaledObject scales, in `objects`.
fn autoscaled(objects: &[Object]) -> BTreeSet<String> {
    objects
        .iter()
        .filter(|o| matches!(o.kind(), "HorizontalPodAutoscaler" | "ScaledObject"))
        .map(|o| {
            o.spec()["scaleTargetRef"]["name"]
                .as_str()
                .expect("scaleTargetRef.name")
                .to_owned()
        })
        .collect()
}

#[test]
fn autoscaled_deployments_set_no_replicas_in_any_rendering() {
    let mut renderings = vec![("k8s/*.yml".to_owned(), objects())];
    for dir in model::RENDERINGS {
        let Some(objs) = model::kustomize(dir) else {
            eprintln!("kubectl not installed: only k8s/*.yml checked");
            break;
        };
        renderings.push((dir.to_owned(), objs));
    }
    for (what, objs) in &renderings {
        let scaled = autoscaled(objs);
        let names: BTreeSet<String> = APPS.iter().map(|a| a.service.to_owned()).collect();
        assert_eq!(scaled, names, "{what}: the three services are autoscaled");
        for name in &scaled {
            let d = find(objs, "Deployment", name);
            assert!(
                d.spec()["replicas"].is_null(),
                "{what}: {} sets spec.replicas; `kubectl apply` would reset the autoscaler's scale",
                d.describe()
            );
        }
    }
    // The check itself: a Deployment with replicas under an HPA is caught.
    let mut broken = objects();
    let d = broken
        .iter_mut()
        .find(|o| o.kind() == "Deployment" && o.name() == services::ORDER_API)
        .expect("order-api");
    d.value["spec"]["replicas"] = Value::from(3);
    assert!(
        autoscaled(&broken)
            .iter()
            .any(|name| { !find(&broken, "Deployment", name).spec()["replicas"].is_null() }),
        "a replica count on an autoscaled Deployment must be found"
    );
}

#[test]
fn images_retarget_from_one_place_per_path() {
    let version = env!("CARGO_PKG_VERSION");
    // Kustomize: the base's images block names every service image with the
    // workspace version; the overlays add none of their own.
    let base = model::load_file(&root().join("k8s/kustomize/base/kustomization.yaml"));
    let images = base[0].value["images"]
        .as_array()
        .expect("images: in the base");
    for app in &APPS {
        let name = format!("catga/{}", app.service);
        let entry = images
            .iter()
            .find(|i| i["name"] == name.as_str())
            .unwrap_or_else(|| panic!("the base's images: lacks {name}"));
        assert_eq!(entry["newTag"], version, "{name}");
    }
    for overlay in ["dev", "production", "other-namespace"] {
        let k =
            model::load_file(&root().join(format!("k8s/kustomize/{overlay}/kustomization.yaml")));
        assert!(
            k[0].value["images"].is_null(),
            "k8s/kustomize/{overlay}: images are set once, in the base"
        );
    }
    // Compose: CATGA_REGISTRY and CATGA_TAG, defaulting to what the docs build.
    let compose = std::fs::read_to_string(root().join("docker/compose.yaml")).expect("compose");
    for app in &APPS {
        assert!(
            compose.contains(&format!(
                "image: ${{CATGA_REGISTRY:-catga}}/{}:${{CATGA_TAG:-{version}}}",
                app.service
            )),
            "docker/compose.yaml: {} not named from CATGA_REGISTRY/CATGA_TAG",
            app.service
        );
    }
    // The bake file: REGISTRY and TAG, with the same defaults.
    let bake = std::fs::read_to_string(root().join("docker/docker-bake.hcl")).expect("bake");
    assert!(bake.contains("variable \"REGISTRY\" {\n  default = \"catga\"\n}"));
    assert!(bake.contains(&format!(
        "variable \"TAG\" {{\n  default = \"{version}\"\n}}"
    )));
    assert!(
        bake.contains("  target     = image\n  tags       = [\"${REGISTRY}/${image}:${TAG}\"]")
    );
    let matrix = bake
        .split("image = [")
        .nth(1)
        .and_then(|rest| rest.split(']').next())
        .expect("docker/docker-bake.hcl: the matrix of images");
    let listed: BTreeSet<&str> = matrix
        .split(',')
        .map(|i| i.trim().trim_matches('"'))
        .collect();
    let images: BTreeSet<&str> = APPS.iter().map(|a| a.service).chain([LOADGEN]).collect();
    assert_eq!(listed, images, "docker/docker-bake.hcl builds every image");
    // Rendered, the base carries exactly the images block's names.
    if let Some(rendered) = model::kustomize("k8s/kustomize/base") {
        for app in &APPS {
            let d = find(&rendered, "Deployment", app.service);
            assert_eq!(
                model::main_container(d)["image"],
                format!("catga/{}:{version}", app.service)
            );
        }
    }
}

#[test]
fn names_follow_a_namespace_change() {
    // In the manifests, addresses inside the namespace name no namespace and
    // no cluster domain.
    let all = objects();
    let text: String = model::manifest_files()
        .iter()
        .map(|f| std::fs::read_to_string(f).expect("manifest"))
        .collect();
    assert!(
        !text.contains("svc.cluster.local"),
        "k8s/*.yml hard-wires the cluster domain"
    );
    for app in &APPS {
        for (name, value) in manifest_env(&all, app) {
            assert!(
                !value.contains(model::NAMESPACE),
                "{}: {name}={value} names the namespace",
                app.service
            );
        }
    }
    // Rendered into another namespace (the documented example, KEDA
    // included), nothing points back at catga-cluster.
    let Some(moved) = model::kustomize("k8s/kustomize/other-namespace") else {
        return;
    };
    let target = "catga-staging";
    for o in &moved {
        if o.kind() == "Namespace" {
            assert_eq!(o.name(), target);
        } else if !o.is_cluster_scoped() {
            assert_eq!(o.namespace(), Some(target), "{}", o.describe());
        }
        for subject in o.value["subjects"].as_array().into_iter().flatten() {
            assert_eq!(subject["namespace"], target, "{}", o.describe());
        }
        // The dashboard carries the guide's literal queries (their label
        // value is the guide's namespace); nothing else may.
        if o.kind() == "ConfigMap" && o.name() == "grafana-dashboards" {
            continue;
        }
        let text = serde_json::to_string(&o.value).expect("JSON");
        assert!(
            !text.contains(model::NAMESPACE),
            "{} still names {} after the namespace change",
            o.describe(),
            model::NAMESPACE
        );
    }
    let so = find(&moved, "ScaledObject", services::ORDER_SERVICE);
    assert_eq!(
        so.spec()["triggers"][0]["metadata"]["natsServerMonitoringEndpoint"],
        format!("nats.{target}.svc:8222")
    );
}

#[test]
fn notification_webhook_is_configurable_and_reachable() {
    let all = objects();
    let d = find(&all, "Deployment", services::NOTIFICATION_SERVICE);
    let env = model::env_of(model::main_container(d));
    let (secret, key) = env
        .secrets
        .get(keys::WEBHOOK_URL)
        .unwrap_or_else(|| panic!("{} comes from a Secret", keys::WEBHOOK_URL));
    assert_eq!(secret, "catga-secrets");
    assert!(generated_secret_keys().contains(key), "{key}");
    assert!(
        env.optional.contains(keys::WEBHOOK_URL),
        "without the key, notifications are log lines"
    );
    // Egress to HTTPS outside the cluster's private ranges.
    let me = labels(d.pod());
    let allowed = all.iter().filter(|o| o.kind() == "NetworkPolicy").any(|p| {
        selects(&p.spec()["podSelector"], &me)
            && p.spec()["egress"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|rule| {
                    let public = rule["to"].as_array().into_iter().flatten().any(|peer| {
                        peer["ipBlock"]["cidr"] == "0.0.0.0/0"
                            && peer["ipBlock"]["except"]
                                .as_array()
                                .is_some_and(|e| e.iter().any(|c| c == "10.0.0.0/8"))
                    });
                    let https = rule["ports"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .any(|p| p["port"] == 443);
                    public && https
                })
    });
    assert!(
        allowed,
        "no NetworkPolicy lets notification-service reach its webhook"
    );
}

/// `(image, tag) -> files` from the "Pinned versions" table of docs/containers.md.
fn documented_pins() -> BTreeMap<(String, String), BTreeSet<String>> {
    let doc = std::fs::read_to_string(root().join("docs/containers.md")).expect("docs");
    let section = doc
        .split("## Pinned versions")
        .nth(1)
        .expect("docs/containers.md: Pinned versions")
        .split("\n## ")
        .next()
        .unwrap_or_default();
    section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let unquote = |c: &str| c.trim_matches('`').to_owned();
            let files = cells[3].split(", ").map(unquote).collect::<BTreeSet<_>>();
            ((unquote(cells[1]), unquote(cells[2])), files)
        })
        .collect()
}

#[test]
fn every_pinned_image_is_in_the_one_version_list() {
    let pins = documented_pins();
    assert!(pins.len() >= 10, "{pins:?}");
    // Where images are named: manifests, tools, Compose, the Dockerfile, the
    // test's stand-ins.
    let mut files: Vec<String> = model::manifest_files()
        .iter()
        .chain(
            std::fs::read_dir(root().join("k8s/tools"))
                .expect("k8s/tools")
                .map(|e| e.expect("entry").path())
                .filter(|p| p.extension().is_some_and(|e| e == "yml"))
                .collect::<Vec<_>>()
                .iter(),
        )
        .map(|p| {
            p.strip_prefix(root())
                .expect("in the repository")
                .display()
                .to_string()
        })
        .filter(|f| f != "k8s/29-monitoring-generated.yml")
        .collect();
    files.extend(
        [
            "docker/compose.yaml",
            "docker/Dockerfile",
            "tests/docker/standins.sh",
        ]
        .map(String::from),
    );
    let mut found: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let text = std::fs::read_to_string(root().join(file)).expect("file");
        for line in text.lines() {
            let line = line.trim();
            let reference = line
                .strip_prefix("image: ")
                .or_else(|| line.strip_prefix("- image: "))
                .or_else(|| line.strip_prefix("FROM "))
                .or_else(|| {
                    line.split_once("=\"")
                        .filter(|(var, _)| var.starts_with("IMG_"))
                        .map(|(_, rest)| rest.trim_end_matches('"'))
                })
                .map(|r| r.split_whitespace().next().unwrap_or_default());
            let Some(reference) = reference else { continue };
            // The project's own images and stages, and test-only helpers.
            if reference.starts_with("catga")
                || reference.starts_with("${")
                || !reference.contains(':')
            {
                continue;
            }
            let (image, tag) = reference.rsplit_once(':').expect("image:tag");
            found
                .entry((image.to_owned(), tag.to_owned()))
                .or_default()
                .insert(file.clone());
        }
    }
    assert_eq!(
        found, pins,
        "docs/containers.md \"Pinned versions\" must list every image:tag and exactly the files that pin it"
    );
}
