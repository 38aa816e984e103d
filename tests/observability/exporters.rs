//! The NATS and Redis rows of the dashboard and the infrastructure alerts,
//! which read exporter metrics rather than the services' own.
//!
//! Redis: Debian's `prometheus-redis-exporter` is the real redis_exporter, so
//! its metrics are checked for real: the names the dashboard and the alerts
//! use must be exported, and the alerts' own expressions (read from
//! alerts.yml) must select a Redis near maxmemory and a broken replication
//! link once a real Redis is brought there. NATS (prometheus-nats-exporter)
//! and cAdvisor (the kubelet) have no binary here: their names are held to
//! the list below, taken from the exporters' sources, and the alerts on them
//! are covered by the promtool unit tests of alerts.test.yml.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::Path,
    time::{Duration, Instant},
};

use catga_tests::{Process, Server, free_port, program, wait_for_port};
use serde_json::{Value, json};

use crate::{Prometheus, alert_rules};

/// The exporter binary (Debian package prometheus-redis-exporter).
pub const REDIS_EXPORTER: &str = "prometheus-redis-exporter";

/// Where each family of non-contract metric comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// redis_exporter: checked against the real binary.
    Redis,
    /// natsio/prometheus-nats-exporter (-varz -healthz -jsz=all).
    Nats,
    /// The kubelet's cAdvisor endpoint.
    Cadvisor,
}

/// Metric names of the NATS exporter and cAdvisor the dashboard and alerts
/// may use (prometheus-nats-exporter: collector/varz, healthz.go, jsz.go;
/// cAdvisor: the series the Kubernetes scrape job keeps).
const NATS_METRICS: [&str; 8] = [
    "gnatsd_healthz_status",
    "gnatsd_varz_routes",
    "gnatsd_varz_connections",
    "gnatsd_varz_in_msgs",
    "gnatsd_varz_out_msgs",
    "jetstream_server_total_message_bytes",
    "jetstream_server_max_storage",
    "jetstream_server_jetstream_disabled",
];
const CADVISOR_METRICS: [&str; 2] = [
    "container_cpu_usage_seconds_total",
    "container_memory_working_set_bytes",
];

/// Exporter metric names in an expression: `(source, name)`.
pub fn exporter_metrics(expr: &str) -> BTreeSet<(Source, String)> {
    let bytes = expr.as_bytes();
    let mut found = BTreeSet::new();
    for (prefix, source) in [
        ("redis_", Source::Redis),
        ("gnatsd_", Source::Nats),
        ("jetstream_", Source::Nats),
        ("container_", Source::Cadvisor),
    ] {
        let mut i = 0;
        while let Some(at) = expr[i..].find(prefix) {
            let start = i + at;
            let mut end = start + prefix.len();
            while end < bytes.len() && (bytes[end].is_ascii_lowercase() || bytes[end] == b'_') {
                end += 1;
            }
            let inside_word =
                start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
            // A label value or a quoted string is no metric.
            let quoted = start > 0 && bytes[start - 1] == b'"';
            if !inside_word && !quoted {
                found.insert((source, expr[start..end].to_owned()));
            }
            i = end;
        }
    }
    found
}

/// Panics on a NATS or cAdvisor name outside the known lists.
pub fn check_known(source: &str, expr: &str) {
    for (family, name) in exporter_metrics(expr) {
        let known: &[&str] = match family {
            Source::Redis => continue,
            Source::Nats => &NATS_METRICS,
            Source::Cadvisor => &CADVISOR_METRICS,
        };
        assert!(
            known.contains(&name.as_str()),
            "{source}: {name} is not a metric of the {family:?} exporter this project deploys: {expr}"
        );
    }
}

/// A redis_exporter for the Redis on `redis_port`, on a free port.
pub async fn redis_exporter(name: &str, redis_port: u16, dir: &Path) -> (Process, u16) {
    let port = free_port();
    let process = Process::spawn(
        name,
        program(REDIS_EXPORTER),
        vec![
            "-redis.addr".to_owned(),
            format!("redis://127.0.0.1:{redis_port}"),
            "-web.listen-address".to_owned(),
            format!("127.0.0.1:{port}"),
        ],
        HashMap::new(),
        dir,
    );
    wait_for_port(port, Duration::from_secs(10)).await;
    (process, port)
}

fn redis_cli(port: u16, args: &[&str]) -> String {
    let output = std::process::Command::new(program("redis-cli"))
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli runs");
    assert!(output.status.success(), "redis-cli {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

fn info_field(port: u16, section: &str, field: &str) -> String {
    redis_cli(port, &["INFO", section])
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")).map(str::to_owned))
        .unwrap_or_else(|| panic!("INFO {section} has no {field}"))
}

/// The instances an expression selects now.
async fn selected(prometheus: &Prometheus, expr: &str) -> BTreeSet<String> {
    prometheus
        .query(expr)
        .await
        .into_iter()
        .map(|(labels, _)| labels["instance"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Waits until `expr` selects exactly the one instance `instance`.
async fn until_selected(prometheus: &Prometheus, expr: &str, instance: &str) {
    let expected = BTreeSet::from([instance.to_owned()]);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = selected(prometheus, expr).await;
        if now == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "`{expr}` selects {now:?}, expected {expected:?}\nprometheus log:\n{}",
            prometheus.process.logs()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// A redis-server on a free loopback port, nothing saved, with `extra` arguments.
async fn redis_server(extra: &[String]) -> Server {
    Server::start("redis-server", |port, data| {
        let mut args: Vec<String> = ["--port", &port.to_string(), "--bind", "127.0.0.1"]
            .map(str::to_owned)
            .to_vec();
        args.extend(["--dir".to_owned(), data.display().to_string()]);
        args.extend(["--save".to_owned(), String::new()]);
        args.extend_from_slice(extra);
        args
    })
    .await
}

/// A real master and replica, each with a real redis_exporter, scraped by a
/// real Prometheus: healthy, none of the Redis alerts' expressions selects
/// anything; filled to 95% of maxmemory, the memory alert selects the
/// master; with the master killed, the replication alert selects the replica
/// and the down alert the master's exporter. Every redis_ name the dashboard
/// and the alerts use is one the exporter really exports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_alerts_select_a_real_redis_near_maxmemory_and_a_broken_replica() {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let master = redis_server(&["--maxmemory-policy".to_owned(), "noeviction".to_owned()]).await;
    let replica = redis_server(&[
        "--replicaof".to_owned(),
        "127.0.0.1".to_owned(),
        master.port.to_string(),
    ])
    .await;
    // A generous maxmemory first: healthy.
    redis_cli(master.port, &["CONFIG", "SET", "maxmemory", "256mb"]);
    let (_master_exporter, master_metrics) =
        redis_exporter("redis-exporter-master", master.port, dir.path()).await;
    let (_replica_exporter, replica_metrics) =
        redis_exporter("redis-exporter-replica", replica.port, dir.path()).await;
    let master_instance = format!("127.0.0.1:{master_metrics}");
    let replica_instance = format!("127.0.0.1:{replica_metrics}");
    let prometheus = crate::start_prometheus(
        dir.path(),
        vec![json!({
            "job_name": "redis",
            "static_configs": [{"targets": [&master_instance, &replica_instance]}],
        })],
    )
    .await;

    let rules: BTreeMap<String, String> = alert_rules()
        .into_iter()
        .map(|(name, rule)| (name, rule["expr"].as_str().expect("expr").to_owned()))
        .collect();
    let expr = |name: &str| {
        rules
            .get(name)
            .unwrap_or_else(|| panic!("alerts.yml has no {name}"))
            .clone()
    };
    let none = BTreeSet::new();

    // The replica is linked and both are scraped.
    until_selected(&prometheus, "redis_master_link_up == 1", &replica_instance).await;
    until_selected(&prometheus, "redis_connected_slaves == 1", &master_instance).await;

    // Every redis_ name of the dashboard and the alerts is exported.
    let exported: BTreeSet<String> = prometheus
        .get("/api/v1/label/__name__/values", &[])
        .await
        .as_array()
        .expect("names")
        .iter()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect();
    let mut used = Vec::new();
    for (source, query) in crate::dashboard_queries(&crate::dashboard())
        .into_iter()
        .chain(rules.iter().map(|(n, e)| (format!("alert {n}"), e.clone())))
    {
        for (family, name) in exporter_metrics(&query) {
            if family == Source::Redis {
                assert!(
                    exported.contains(&name),
                    "{source}: {name} is not exported by redis_exporter ({REDIS_EXPORTER}); expression: {query}"
                );
                used.push(name);
            }
        }
    }
    assert!(used.len() >= 5, "the Redis row and alerts: {used:?}");

    // Healthy: nothing selected.
    for name in [
        "CatgaRedisDown",
        "CatgaRedisMemoryNearMax",
        "CatgaRedisReplicationBroken",
    ] {
        assert_eq!(
            selected(&prometheus, &expr(name)).await,
            none,
            "{name} on a healthy pair"
        );
    }

    // 95% of maxmemory on the master (noeviction: near refusing writes).
    let ballast = "x".repeat(100_000);
    for i in 0..20 {
        redis_cli(
            master.port,
            &["SET", &format!("catga:test:ballast:{i}"), &ballast],
        );
    }
    let used_bytes: u64 = info_field(master.port, "memory", "used_memory")
        .parse()
        .expect("used_memory");
    let limit = used_bytes * 100 / 95;
    redis_cli(
        master.port,
        &["CONFIG", "SET", "maxmemory", &limit.to_string()],
    );
    until_selected(
        &prometheus,
        &expr("CatgaRedisMemoryNearMax"),
        &master_instance,
    )
    .await;

    // The master dies: the replica's link breaks, the master's exporter
    // reports redis_up 0.
    master.process.kill();
    until_selected(
        &prometheus,
        &expr("CatgaRedisReplicationBroken"),
        &replica_instance,
    )
    .await;
    until_selected(&prometheus, &expr("CatgaRedisDown"), &master_instance).await;
    prometheus.process.kill();
    drop(replica);
}

/// The redis_exporter scrape job for the live test of main.rs.
pub fn redis_job(exporter_port: u16) -> Value {
    json!({
        "job_name": "redis",
        "static_configs": [{"targets": [format!("127.0.0.1:{exporter_port}")]}],
    })
}

#[test]
fn exporter_metric_names_are_found_in_expressions() {
    let found = exporter_metrics(
        r#"redis_memory_used_bytes / (redis_memory_max_bytes > 0) or gnatsd_varz_routes{x="redis_no"} + my_redis_x"#,
    );
    assert_eq!(
        found,
        BTreeSet::from([
            (Source::Redis, "redis_memory_max_bytes".to_owned()),
            (Source::Redis, "redis_memory_used_bytes".to_owned()),
            (Source::Nats, "gnatsd_varz_routes".to_owned()),
        ])
    );
    let panicked = std::panic::catch_unwind(|| check_known("test", "gnatsd_varz_nope"));
    assert!(panicked.is_err(), "an unknown NATS metric must be refused");
}
