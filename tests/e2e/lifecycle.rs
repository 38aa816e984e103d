//! Start-up, readiness, dependency outages, graceful shutdown, bad
//! configuration and the embedded mode.

use std::{collections::HashMap, time::Duration};

use catga_core::config::keys;
use catga_tests::{Api, Service, System, binary, eventually, free_port};

/// order-api's readiness does not wait for its dependencies: `/health` does.
async fn wait_dependencies_up(ops: &Api) {
    eventually(
        "order-api to report its dependencies up",
        Duration::from_secs(30),
        || async { (ops.get("/health").await.body["status"] == "ok").then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn redis_outage_is_survived_without_a_restart() {
    let system = System::start().await;
    let api = system.client();
    let ops = system.api.ops();
    system.redis.0.process.kill();

    // Readiness follows the process, not its dependencies (issue 12): the
    // outage shows in /health while order-api stays in the load balancer.
    let degraded = eventually(
        "order-api to report Redis down",
        Duration::from_secs(10),
        || async {
            let reply = ops.get("/health").await;
            (reply.body["status"] == "degraded").then_some(reply)
        },
    )
    .await;
    assert!(
        degraded.body["checks"]["redis"]
            .as_str()
            .is_some_and(|r| r != "ok"),
        "{:?}",
        degraded.body
    );
    assert_eq!(ops.get("/health/ready").await.status, 200);
    assert_eq!(ops.get("/health/live").await.status, 200);

    let refused = api.place("c-outage", &[("PROD-001", 1)]).await;
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert_eq!(refused.content_type(), "application/problem+json");
    assert!(refused.header("retry-after").is_some());

    system.redis.0.restart().await;
    for service in std::iter::once(&system.api)
        .chain(&system.order_services)
        .chain(std::iter::once(&system.notifications))
    {
        service.wait_ready(Duration::from_secs(20)).await;
    }
    wait_dependencies_up(&ops).await;
    let reply = api.place("c-after", &[("PROD-001", 1)]).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
    assert_eq!(api.final_state(&order_id).await["status"], "Confirmed");
}

#[tokio::test]
async fn nats_restart_is_survived_without_a_restart() {
    let system = System::start().await;
    let api = system.client();
    let placed = api.place("c-before-nats-down", &[("PROD-001", 1)]).await;
    assert_eq!(placed.status, 202, "{:?}", placed.body);
    let placed_id = placed.body["orderId"].as_str().expect("id").to_owned();
    api.final_state(&placed_id).await;
    let ops = system.api.ops();
    system.nats.0.process.kill();
    eventually(
        "order-api to report NATS down",
        Duration::from_secs(10),
        || async { (ops.get("/health").await.body["checks"]["nats"] != "ok").then_some(()) },
    )
    .await;
    // Still ready, and reads that need only Redis still work (issue 12).
    assert_eq!(ops.get("/health/ready").await.status, 200);
    assert_eq!(
        api.get(&format!("/api/orders/{placed_id}")).await.status,
        200
    );
    let asked = std::time::Instant::now();
    let refused = api.place("c-nats-down", &[("PROD-001", 1)]).await;
    let answered_within = asked.elapsed();
    assert_eq!(refused.status, 503, "{:?}", refused.body);
    assert!(refused.header("retry-after").is_some());
    // The publish timeout bounds the wait (docs/reliability.md), with room
    // for a loaded machine.
    assert!(
        answered_within < order_api::http::PUBLISH_TIMEOUT + Duration::from_secs(2),
        "503 after {answered_within:?}"
    );

    system.nats.0.restart().await;
    for service in std::iter::once(&system.api).chain(&system.order_services) {
        service.wait_ready(Duration::from_secs(30)).await;
    }
    wait_dependencies_up(&ops).await;
    let reply = api.place("c-nats-back", &[("PROD-001", 1)]).await;
    assert_eq!(reply.status, 202, "{:?}", reply.body);
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
    assert_eq!(
        api.final_state(&order_id).await["status"],
        "Confirmed",
        "{}",
        system.all_logs()
    );
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let mut system = System::start().await;
    let api = system.client();
    let reply = api.place("c-term", &[("PROD-001", 1)]).await;
    assert_eq!(reply.status, 202);
    for service in system.order_services.iter_mut() {
        let status = service.process.terminate(Duration::from_secs(15)).await;
        assert!(status.success(), "order-service exit: {status}");
    }
    let status = system
        .notifications
        .process
        .terminate(Duration::from_secs(15))
        .await;
    assert!(status.success(), "notification-service exit: {status}");
    let status = system.api.process.terminate(Duration::from_secs(15)).await;
    assert!(status.success(), "order-api exit: {status}");

    // The accepted order is still processed by a replica started afterwards.
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
    let api_again = Service::start("order-api", &system.env, system.logs.path()).await;
    let _replica = Service::start("order-service", &system.env, system.logs.path()).await;
    let state = system.client_of(&api_again).final_state(&order_id).await;
    assert_eq!(state["status"], "Confirmed");
}

#[tokio::test]
async fn bad_configuration_stops_start_up_with_one_line() {
    for (service, key, value) in [
        ("order-api", "Http__Port", "eighty"),
        (
            "order-api",
            "Redis__Configuration",
            "cache:6379,password=hunter2,bogus=1",
        ),
        ("order-service", "NATS__Url", "http://nats:4222"),
        ("order-service", "Catga__EnableIdempotency", "false"),
        (
            "notification-service",
            "Notification__WebhookUrl",
            "not a url",
        ),
        ("notification-service", "Catga__MaxRetryAttempts", "0"),
    ] {
        let output = std::process::Command::new(binary(service))
            .env_clear()
            .env("NATS__Url", "nats://127.0.0.1:1")
            .env(key, value)
            .output()
            .expect("runs");
        assert_eq!(output.status.code(), Some(2), "{service} {key}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "{service} {key}: {stderr}");
        assert!(stderr.contains(key), "{service}: {stderr}");
        assert!(
            !stderr.contains("hunter2"),
            "secrets are never printed: {stderr}"
        );
    }
}

#[tokio::test]
async fn embedded_mode_runs_the_whole_flow_in_one_process() {
    let logs = tempfile::TempDir::new().expect("dir");
    let port = free_port();
    let env: HashMap<String, String> = [
        (keys::HTTP_PORT.to_owned(), port.to_string()),
        (keys::HTTP_OPS_PORT.to_owned(), free_port().to_string()),
    ]
    .into();
    let process = catga_tests::Process::spawn(
        "embedded",
        binary("order-api"),
        Vec::new(),
        env,
        logs.path(),
    );
    catga_tests::wait_for_port(port, Duration::from_secs(10)).await;
    let api = Api::new(format!("http://127.0.0.1:{port}"));
    let reply = api.place("c-embedded", &[("PROD-002", 2)]).await;
    assert_eq!(reply.status, 202);
    let order_id = reply.body["orderId"].as_str().expect("id").to_owned();
    assert_eq!(api.final_state(&order_id).await["status"], "Confirmed");
    let logs = eventually(
        "the notification log line",
        Duration::from_secs(5),
        || async {
            let logs = process.logs();
            logs.contains(&format!("{order_id}:Confirmed"))
                .then_some(logs)
        },
    )
    .await;
    assert!(logs.contains("EMBEDDED MODE"), "{logs}");
    assert!(
        logs.contains("AUTHENTICATION IS OFF"),
        "the open embedded mode says so: {logs}"
    );
}
