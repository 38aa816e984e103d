//! The load generator against the real system and the real servers its
//! baselines measure: what it reports must be what happened.

use std::{process::Output, time::Duration};

use catga_tests::{Nats, Process, Redis, System, binary, free_port, wait_for_port};
use loadgen::report::{BaselineSummary, Summary};
use serde::de::DeserializeOwned;

async fn loadgen(args: &[&str]) -> Output {
    tokio::process::Command::new(binary("loadgen"))
        .args(args)
        .args(["--json", "--quiet"])
        // A token per customer, as an authenticating order-api needs.
        .env(loadgen::cli::JWT_SECRET_ENV, catga_tests::JWT_SECRET)
        .output()
        .await
        .expect("run loadgen")
}

fn parse<T: DeserializeOwned>(output: &Output) -> T {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "loadgen's JSON ({err}): {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

#[tokio::test]
async fn a_fixed_rate_run_follows_every_order_to_its_final_state() {
    let system = System::start().await;
    let url = system.api.url("");
    let output = loadgen(&[
        "orders",
        "--url",
        &url,
        "--rate",
        "40",
        "--duration",
        "2s",
        "--idempotency-keys",
        "--lines",
        "2",
    ])
    .await;
    let summary: Summary = parse(&output);
    assert!(output.status.success(), "{summary:?}");
    assert_eq!(summary.sent, 80, "{summary:?}");
    assert_eq!(summary.accepted, 80, "{summary:?}");
    assert_eq!(summary.completed, 80, "{summary:?}");
    assert!(summary.errors.is_empty(), "{summary:?}");
    assert_eq!(summary.final_states.values().sum::<u64>(), 80);
    assert_eq!(summary.acceptance.count, 80);
    let end_to_end = summary.end_to_end.expect("followed");
    assert_eq!(end_to_end.count, 80);
    assert!(
        summary.follow_requests >= 80,
        "every order is read at least once"
    );

    // The orders are really there, in the state the generator saw.
    let listed = system.client().get("/api/orders?limit=100").await;
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(80));
    let seen_confirmed = summary.final_states.get("Confirmed").copied().unwrap_or(0);
    let stored_confirmed = listed.body["items"]
        .as_array()
        .map(|items| items.iter().filter(|o| o["status"] == "Confirmed").count() as u64);
    assert_eq!(stored_confirmed, Some(seen_confirmed));
}

#[tokio::test]
async fn a_closed_loop_run_waits_for_each_order_and_refusals_are_counted_by_kind() {
    let system = System::start().await;
    let url = system.api.url("");
    let output = loadgen(&[
        "orders",
        "--url",
        &url,
        "--concurrency",
        "4",
        "--duration",
        "1s",
    ])
    .await;
    let summary: Summary = parse(&output);
    assert!(output.status.success(), "{summary:?}");
    assert!(summary.accepted > 0);
    assert_eq!(summary.completed, summary.accepted, "{summary:?}");
    assert!(
        summary.drain_s < 1.0,
        "closed-loop clients leave nothing behind"
    );

    let refused = loadgen(&[
        "orders",
        "--url",
        &url,
        "--rate",
        "20",
        "--duration",
        "1s",
        "--products",
        "NO-SUCH-PRODUCT",
    ])
    .await;
    assert_eq!(
        refused.status.code(),
        Some(1),
        "failed requests fail the run"
    );
    let summary: Summary = parse(&refused);
    assert_eq!(summary.accepted, 0);
    assert_eq!(summary.errors.get("HTTP 422"), Some(&20), "{summary:?}");
}

#[tokio::test]
async fn the_baselines_measure_real_servers() {
    let (nats, redis) = tokio::join!(Nats::start(), Redis::start());
    let jetstream = loadgen(&[
        "jetstream",
        "--nats",
        &nats.operator_url(),
        "--concurrency",
        "4",
        "--duration",
        "500ms",
    ])
    .await;
    let jetstream: BaselineSummary = parse(&jetstream);
    assert!(
        jetstream.operations > 0 && jetstream.errors.is_empty(),
        "{jetstream:?}"
    );
    // The run's stream is gone afterwards.
    let js = nats.jetstream().await;
    let mut names = js.stream_names();
    while let Some(name) = futures::StreamExt::next(&mut names).await {
        let name = name.expect("stream name");
        assert!(
            !name.starts_with(loadgen::baseline::BASELINE_STREAM_PREFIX),
            "{name} left behind"
        );
    }

    let set_nx = loadgen(&[
        "redis",
        "--redis",
        &redis.configuration(),
        "--concurrency",
        "4",
        "--duration",
        "500ms",
    ])
    .await;
    let set_nx: BaselineSummary = parse(&set_nx);
    assert!(
        set_nx.operations > 0 && set_nx.errors.is_empty(),
        "{set_nx:?}"
    );

    let port = free_port();
    let dir = tempfile::TempDir::new().expect("dir");
    let _echo = Process::spawn(
        "echo",
        binary("loadgen"),
        vec![
            "echo-server".into(),
            "--listen".into(),
            format!("127.0.0.1:{port}"),
        ],
        Default::default(),
        dir.path(),
    );
    wait_for_port(port, Duration::from_secs(10)).await;
    let echo = loadgen(&[
        "orders",
        "--url",
        &format!("http://127.0.0.1:{port}"),
        "--concurrency",
        "2",
        "--duration",
        "500ms",
        "--no-follow",
    ])
    .await;
    let echo: Summary = parse(&echo);
    assert!(echo.accepted > 0 && echo.errors.is_empty(), "{echo:?}");
    assert!(echo.end_to_end.is_none());
}
