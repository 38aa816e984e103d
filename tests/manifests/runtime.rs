//! The services started as processes with the environment the manifests give
//! them: cluster host names mapped to a local 3-node NATS JetStream cluster
//! (the manifests ask for 3 stream replicas) and the Redis topology of the
//! manifests: a master, two replicas and three Sentinels, password-protected
//! (the data password and the Sentinels' own), which the services reach
//! through the Sentinels as `Redis__Configuration` says; secrets filled with
//! test values. Each must turn ready on the readiness probe
//! its manifest declares, answer its liveness probe and metrics path, and stop
//! within its drain time on SIGTERM. In between, loadgen runs with the load
//! generator Job's arguments and environment (its URL mapped to the local
//! order-api, a shorter duration): every order must be accepted and final.

use std::{
    collections::BTreeMap,
    net::TcpListener,
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use catga_core::{
    config::{Env, keys},
    contracts::services,
};

use catga_tests::{Passwords, SentinelGroup, binary, free_port, program};

use crate::{
    APPS, LOADGEN, LOADGEN_DURATION, LOADGEN_URL, manifest_env,
    model::{self, find, objects},
    parse_settings, secret_value,
};

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok() && TcpListener::bind(("0.0.0.0", port)).is_ok()
}

/// Child processes killed on drop, and a scratch directory removed on drop.
struct Scratch {
    dir: PathBuf,
    children: Vec<(String, Child)>,
}

impl Scratch {
    fn new() -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        let dir =
            std::env::temp_dir().join(format!("catga-manifests-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self {
            dir,
            children: Vec::new(),
        }
    }

    fn spawn(&mut self, name: &str, command: &mut Command) -> usize {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("log file");
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {name}: {err}"));
        self.children.push((name.to_owned(), child));
        self.children.len() - 1
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn wait_for_status(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut last = String::from("no answer");
    while Instant::now() < deadline {
        match client.get(url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) => last = format!("{} {}", r.status(), r.text().await.unwrap_or_default()),
            Err(err) => last = err.to_string(),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Err(format!("{url}: not 2xx within {timeout:?}; last: {last}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_become_ready_with_the_manifest_environment() {
    // Missing servers fail the test (tests/run.sh installs them).
    let nats_server = program("nats-server");
    let all = objects();
    let binaries: Vec<PathBuf> = APPS.iter().map(|a| binary(a.service)).collect();
    let loadgen = binary(LOADGEN);
    let mut scratch = Scratch::new();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("client");

    // NATS: as many local nodes as the StatefulSet has pods, clustered like it.
    let nats = find(&all, "StatefulSet", "nats");
    let nodes =
        usize::try_from(nats.spec()["replicas"].as_u64().expect("replicas")).expect("count");
    let headless = nats.spec()["serviceName"]
        .as_str()
        .expect("serviceName")
        .to_owned();
    let client_port =
        model::resolve_port(model::main_container(nats), &"client".into()).expect("client port");
    let ports: Vec<(u16, u16, u16)> = (0..nodes)
        .map(|_| (free_port(), free_port(), free_port()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|(_, r, _)| format!("nats-route://127.0.0.1:{r}"))
        .collect();
    // The users and permissions of the ConfigMap nats-auth, their passwords
    // from the Secret, as the StatefulSet's environment gives them.
    let auth = find(&all, "ConfigMap", "nats-auth").value["data"]["auth.conf"]
        .as_str()
        .expect("nats-auth holds auth.conf")
        .to_owned();
    std::fs::write(scratch.dir.join("auth.conf"), auth).expect("auth.conf");
    let nats_env: BTreeMap<String, String> = model::env_of(model::main_container(nats))
        .secrets
        .into_iter()
        .map(|(name, (_, key))| (name, secret_value(&key)))
        .collect();
    let mut host_map: Vec<(String, String)> = Vec::new();
    for (i, (client, route, monitor)) in ports.iter().enumerate() {
        let config = format!(
            "server_name: nats-{i}\nlisten: 127.0.0.1:{client}\nhttp: 127.0.0.1:{monitor}\n\
             include \"auth.conf\"\n\
             jetstream {{\n  store_dir: \"{}\"\n}}\n\
             cluster {{\n  name: catga-test\n  listen: 127.0.0.1:{route}\n  routes: [{}]\n}}\n",
            scratch.dir.join(format!("nats-{i}")).display(),
            routes.join(", ")
        );
        let path = scratch.dir.join(format!("nats-{i}.conf"));
        std::fs::write(&path, config).expect("nats config");
        scratch.spawn(
            &format!("nats-{i}"),
            Command::new(&nats_server)
                .arg("-c")
                .arg(&path)
                .env_clear()
                .envs(&nats_env),
        );
        host_map.push((
            format!("nats-{i}.{headless}:{client_port}"),
            format!("127.0.0.1:{client}"),
        ));
    }
    for (i, (_, _, monitor)) in ports.iter().enumerate() {
        if let Err(err) = wait_for_status(
            &client,
            &format!("http://127.0.0.1:{monitor}/healthz"),
            Duration::from_secs(60),
        )
        .await
        {
            panic!(
                "local NATS cluster did not form: {err}\n{}",
                scratch.log(&format!("nats-{i}"))
            );
        }
    }

    // Redis: as many nodes as the StatefulSet has pods (a master and its
    // replicas) and as many Sentinels, with the passwords the Secret would
    // hold. The Sentinels' pod names map to the local Sentinels (before the
    // Services below, whose names they contain).
    let nodes = find(&all, "StatefulSet", "redis").spec()["replicas"]
        .as_u64()
        .expect("replicas");
    let sentinel_pods = crate::sentinel_endpoints(&all);
    let group = SentinelGroup::start_protected(
        usize::try_from(nodes - 1).expect("replicas"),
        Some(Passwords {
            data: secret_value("redis-password"),
            sentinel: secret_value(crate::SENTINEL_PASSWORD_KEY),
        }),
    )
    .await;
    assert_eq!(
        group.sentinels.len(),
        sentinel_pods.len(),
        "as many local Sentinels as the manifests run"
    );
    for ((host, port), local) in sentinel_pods.iter().zip(&group.sentinels) {
        host_map.push((
            format!("{host}:{port}"),
            format!("127.0.0.1:{}", local.port),
        ));
    }
    // Jaeger is not here: its Service names point at a closed port (the services
    // must not depend on the trace collector to be ready).
    let closed = free_port();
    for service in all.iter().filter(|o| o.kind() == "Service") {
        for p in service.spec()["ports"].as_array().into_iter().flatten() {
            let port = p["port"].as_u64().expect("port");
            host_map.push((
                format!("{}:{port}", service.name()),
                format!("127.0.0.1:{closed}"),
            ));
        }
    }

    let map_hosts = |env: &mut BTreeMap<String, String>| {
        for value in env.values_mut() {
            for (from, to) in &host_map {
                if value.contains(from.as_str()) {
                    *value = value.replace(from.as_str(), to);
                }
            }
            assert!(
                !value.contains(".svc.cluster.local")
                    && !value.contains(&format!(".{headless}:"))
                    && !value.contains(".redis-sentinel:"),
                "unmapped cluster host in {value}"
            );
        }
    };

    // The operator step, as order-service's init container runs it: the
    // streams, created as the NATS operator (the services only verify them).
    let step = crate::nats_auth::operator_step(&all);
    let step_spec = model::env_of(step);
    let mut step_env = step_spec.values;
    for (name, (_, key)) in step_spec.secrets {
        step_env.insert(name, secret_value(&key));
    }
    map_hosts(&mut step_env);
    assert_eq!(
        step["args"],
        serde_json::json!([catga_core::service::ENSURE_TOPOLOGY]),
        "the init container runs the operator step and nothing else"
    );
    catga_tests::run_ensure_topology(step_env).await;

    // Start the three services.
    struct Running {
        service: &'static str,
        index: usize,
        port: u16,
        /// Where the probes and /metrics answer (order-api's ops port).
        health_port: u16,
        ready: String,
        live: String,
        metrics: String,
        grace: Duration,
    }
    let mut running = Vec::new();
    for (app, bin) in APPS.iter().zip(&binaries) {
        let deployment = find(&all, "Deployment", app.service);
        let container = model::main_container(deployment);
        let mut env: BTreeMap<String, String> = manifest_env(&all, app);
        // Secrets: the Redis password must be the one the local Redis expects
        // (optional ones stay unset, as without the key in the Secret).
        let spec = model::env_of(container);
        for (name, (_, key)) in spec.secrets {
            if !spec.optional.contains(&name) {
                env.insert(name, secret_value(&key));
            }
        }
        map_hosts(&mut env);
        let parsed = parse_settings(app.service, &Env::from_pairs(env.clone()));
        let free_or_other = |port: u16| {
            if port_is_free(port) {
                port
            } else {
                free_port()
            }
        };
        let port = free_or_other(parsed.http_port);
        env.insert(keys::HTTP_PORT.to_owned(), port.to_string());
        let (declared, health_port) = match parsed.ops_port {
            Some(ops_port) => {
                let health_port = free_or_other(ops_port);
                env.insert(keys::HTTP_OPS_PORT.to_owned(), health_port.to_string());
                (ops_port, health_port)
            }
            None => (parsed.http_port, port),
        };
        let grace = parse_settings(app.service, &Env::from_pairs(env.clone())).shutdown_grace;
        let probe_port = |probe: &str| {
            model::resolve_port(container, &container[probe]["httpGet"]["port"])
                .expect("probe port")
        };
        assert_eq!(
            probe_port("readinessProbe"),
            declared,
            "the readiness probe targets the port the service serves it on"
        );
        assert_eq!(probe_port("livenessProbe"), declared);
        let path = |probe: &str| {
            container[probe]["httpGet"]["path"]
                .as_str()
                .expect("path")
                .to_owned()
        };
        let metrics = deployment.pod()["metadata"]["annotations"]["prometheus.io/path"]
            .as_str()
            .expect("metrics path")
            .to_owned();
        eprintln!(
            "starting {} on port {port} with {} manifest variables",
            app.service,
            env.len()
        );
        let index = scratch.spawn(app.service, Command::new(bin).env_clear().envs(&env));
        running.push(Running {
            service: app.service,
            index,
            port,
            health_port,
            ready: path("readinessProbe"),
            live: path("livenessProbe"),
            metrics,
            grace,
        });
    }

    for r in &running {
        let url = format!("http://127.0.0.1:{}{}", r.health_port, r.ready);
        if let Err(err) = wait_for_status(&client, &url, Duration::from_secs(90)).await {
            panic!(
                "{} never became ready on its manifest's readiness probe: {err}\n--- log ---\n{}",
                r.service,
                scratch.log(r.service)
            );
        }
        for path in [&r.live, &r.metrics] {
            let url = format!("http://127.0.0.1:{}{path}", r.health_port);
            let response = client
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|err| panic!("{url}: {err}"));
            assert!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
        }
        let body = client
            .get(format!("http://127.0.0.1:{}{}", r.health_port, r.metrics))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("body");
        assert!(
            body.contains("catga_"),
            "{}: /metrics exports no catga_ series",
            r.service
        );
        if r.health_port != r.port {
            let url = format!("http://127.0.0.1:{}{}", r.port, r.metrics);
            let response = client.get(&url).send().await.expect("public port");
            assert_eq!(
                response.status(),
                404,
                "{url}: /metrics is off the public port"
            );
        }
        eprintln!(
            "{}: ready on {}, live on {}, metrics on {}",
            r.service, r.ready, r.live, r.metrics
        );
    }

    // The load generator Job, as Kubernetes would run it but pointed at the
    // local order-api and for 2 s.
    let tools = model::tool_objects();
    let job = find(&tools, "Job", LOADGEN);
    let container = model::main_container(job);
    let job_env = model::env_of(container);
    let mut env = job_env.values;
    // Secrets as the services got them (the same test value per key).
    for (name, (_secret, key)) in job_env.secrets {
        env.insert(name, secret_value(&key));
    }
    let api_port = running
        .iter()
        .find(|r| r.service == services::ORDER_API)
        .expect("order-api runs")
        .port;
    let mut url = url::Url::parse(&env[LOADGEN_URL]).expect("LOADGEN_URL");
    url.set_host(Some("127.0.0.1")).expect("host");
    url.set_port(Some(api_port)).expect("port");
    env.insert(LOADGEN_URL.to_owned(), url.to_string());
    env.insert(LOADGEN_DURATION.to_owned(), "2s".to_owned());
    let args: Vec<&str> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().expect("arg"))
        .collect();
    eprintln!("running loadgen {} against {url}", args.join(" "));
    let run = tokio::process::Command::new(&loadgen)
        .env_clear()
        .envs(&env)
        .args(&args)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("loadgen finishes within a minute")
        .expect("loadgen starts");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "loadgen with the Job's settings exited with {}:\n{stdout}\n{}\n--- order-api ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        scratch.log(services::ORDER_API)
    );
    eprintln!("{stdout}");
    // The orders went to the master the Sentinels name, and reached a replica
    // before they were acknowledged (Redis__WaitReplicas' default behind Sentinel).
    let master = group
        .master_port()
        .await
        .expect("the Sentinels name a master");
    for node in &group.nodes {
        let url = format!(
            "redis://:{}@127.0.0.1:{}",
            secret_value("redis-password"),
            node.port
        );
        let mut conn = redis::Client::open(url)
            .expect("url")
            .get_multiplexed_async_connection()
            .await
            .expect("connect");
        let orders: u64 = redis::cmd("ZCARD")
            .arg(catga_core::contracts::redis_keys::ORDER_INDEX)
            .query_async(&mut conn)
            .await
            .expect("ZCARD");
        let role = if node.port == master {
            "master"
        } else {
            "replica"
        };
        assert!(orders > 0, "the {role} on {} holds no order", node.port);
    }

    // SIGTERM: each stops within its drain time (the manifests' grace period is longer).
    for r in &running {
        let pid = scratch.children[r.index].1.id();
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    }
    for r in &running {
        let deadline = Instant::now() + r.grace + Duration::from_secs(5);
        let child = &mut scratch.children[r.index].1;
        let status = loop {
            if let Some(status) = child.try_wait().expect("wait") {
                break status;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not stop within {:?} of SIGTERM",
                r.service,
                r.grace
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(
            status.success(),
            "{} exited with {status}\n{}",
            r.service,
            scratch.log(r.service)
        );
    }
}
