//! The HTTP edge (issue 14): deadlines for headers and bodies, idle
//! connections closed, a bounded number of connections, slow clients never
//! starving fast ones. order-api runs embedded (no NATS, no Redis): the edge
//! is the same in both modes.

use std::{collections::HashMap, time::Duration};

use catga_core::config::keys;
use catga_tests::{Api, JWT_SECRET, RawClient, Reply, Service, customer_token};

/// Deadlines short enough for a test, with generous margins in the checks.
const HEADER_TIMEOUT_SECONDS: u64 = 2;
const BODY_TIMEOUT_SECONDS: u64 = 2;
/// What a busy 2-core machine may add to a deadline before we call it missed.
const MARGIN: Duration = Duration::from_secs(8);

async fn start_api(extra: &[(&str, &str)], logs: &tempfile::TempDir) -> Service {
    let env: HashMap<String, String> = extra
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    Service::start("order-api", &env, logs.path()).await
}

#[tokio::test]
async fn slow_headers_and_slow_bodies_are_cut_off_while_others_are_served() {
    let logs = tempfile::TempDir::new().expect("dir");
    let header_timeout = HEADER_TIMEOUT_SECONDS.to_string();
    let body_timeout = BODY_TIMEOUT_SECONDS.to_string();
    // Two permits only: were a slow body to hold one, the four below would
    // leave the normal client nothing but 503s.
    let api = start_api(
        &[
            (keys::HTTP_HEADER_TIMEOUT_SECONDS, &header_timeout),
            (keys::HTTP_BODY_TIMEOUT_SECONDS, &body_timeout),
            (keys::HTTP_MAX_CONCURRENT_REQUESTS, "2"),
        ],
        &logs,
    )
    .await;
    let port = api.port;

    let mut slow_header = RawClient::connect(port).await;
    assert!(
        slow_header
            .send(b"GET /api/products HTTP/1.1\r\nHost: test\r\n")
            .await
    );
    let slow_header = tokio::spawn(async move { slow_header.closed_within(MARGIN * 2).await });

    let slow_bodies: Vec<_> = (0..4)
        .map(|_| {
            tokio::spawn(async move {
                let mut client = RawClient::connect(port).await;
                let head = "POST /api/orders HTTP/1.1\r\nHost: test\r\n\
                            Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
                assert!(client.send(head.as_bytes()).await);
                // A byte every half second: never idle long, never done.
                let trickle = async {
                    while client.send(b" ").await {
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                };
                let answer = async {
                    // The answer comes while the trickle goes on.
                    tokio::time::sleep(Duration::from_secs(BODY_TIMEOUT_SECONDS) + MARGIN).await;
                };
                tokio::select! {
                    () = trickle => {}
                    () = answer => {}
                }
                client
            })
        })
        .collect();

    // Meanwhile a normal client keeps being answered.
    let normal = Api::new(api.url(""));
    let started = std::time::Instant::now();
    let mut answered = 0;
    while started.elapsed() < Duration::from_secs(BODY_TIMEOUT_SECONDS + 1) {
        let reply = normal.get("/api/products").await;
        assert_eq!(reply.status, 200, "{:?}", reply.body);
        answered += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered > 0);

    let closed_after = slow_header
        .await
        .expect("slow header task")
        .expect("the slow-header connection was never closed");
    assert!(
        closed_after < Duration::from_secs(HEADER_TIMEOUT_SECONDS) + MARGIN,
        "closed after {closed_after:?}"
    );
    for slow_body in slow_bodies {
        let client = slow_body.await.expect("slow body task");
        drop(client);
    }
    let log = api.process.logs();
    assert!(
        !log.contains("panicked"),
        "order-api panicked on a slow client:\n{log}"
    );
}

#[tokio::test]
async fn a_slow_body_is_answered_408_within_its_deadline() {
    let logs = tempfile::TempDir::new().expect("dir");
    let body_timeout = BODY_TIMEOUT_SECONDS.to_string();
    let api = start_api(&[(keys::HTTP_BODY_TIMEOUT_SECONDS, &body_timeout)], &logs).await;
    let mut client = RawClient::connect(api.port).await;
    let head = "POST /api/orders HTTP/1.1\r\nHost: test\r\n\
                Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n{";
    assert!(client.send(head.as_bytes()).await);
    let started = std::time::Instant::now();
    let answer = client
        .read_head(Duration::from_secs(BODY_TIMEOUT_SECONDS) + MARGIN)
        .await
        .expect("an answer to the slow body");
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("content-type: application/problem+json"),
        "{answer}"
    );
    assert!(started.elapsed() < Duration::from_secs(BODY_TIMEOUT_SECONDS) + MARGIN);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let logs = tempfile::TempDir::new().expect("dir");
    let header_timeout = HEADER_TIMEOUT_SECONDS.to_string();
    let api = start_api(
        &[(keys::HTTP_HEADER_TIMEOUT_SECONDS, &header_timeout)],
        &logs,
    )
    .await;
    let mut client = RawClient::connect(api.port).await;
    let head = client.get("/api/products").await.expect("an answer");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let closed_after = client
        .closed_within(Duration::from_secs(HEADER_TIMEOUT_SECONDS) + MARGIN)
        .await
        .expect("the idle connection was never closed");
    assert!(closed_after < Duration::from_secs(HEADER_TIMEOUT_SECONDS) + MARGIN);
}

#[tokio::test]
async fn a_replica_serves_a_bounded_number_of_connections() {
    let logs = tempfile::TempDir::new().expect("dir");
    // Connections held open by the test outlive any pause of a busy machine.
    let api = start_api(
        &[
            (keys::HTTP_MAX_CONNECTIONS, "4"),
            (keys::HTTP_HEADER_TIMEOUT_SECONDS, "60"),
        ],
        &logs,
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut client = RawClient::connect(api.port).await;
        let head = client.get("/api/products").await.expect("an answer");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        held.push(client);
    }
    let mut fifth = RawClient::connect(api.port).await;
    assert!(
        fifth
            .send(b"GET /api/products HTTP/1.1\r\nHost: test\r\n\r\n")
            .await
    );
    assert_eq!(
        fifth.read_head(Duration::from_secs(1)).await,
        None,
        "a fifth connection was served beside four"
    );
    drop(held.pop());
    let head = fifth
        .read_head(Duration::from_secs(20))
        .await
        .expect("the fifth connection served once one closed");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

/// Sends `count` requests as `headers`; the statuses and the last 429.
async fn flood(api: &Api, headers: &[(&str, &str)], count: usize) -> (Vec<u16>, Option<Reply>) {
    let mut statuses = Vec::new();
    let mut refused = None;
    for _ in 0..count {
        let reply = api
            .send(reqwest::Method::GET, "/api/products", headers, None)
            .await;
        statuses.push(reply.status);
        if reply.status == 429 {
            refused = Some(reply);
        }
    }
    (statuses, refused)
}

#[tokio::test]
async fn a_flood_from_one_caller_gets_429_and_others_are_unaffected() {
    let logs = tempfile::TempDir::new().expect("dir");
    // One request a second with a burst of five: thirty requests in a row
    // are over it however slow the machine.
    let api = start_api(
        &[
            (keys::HTTP_RATE_LIMIT_PER_SECOND, "1"),
            (keys::HTTP_RATE_LIMIT_BURST, "5"),
            (keys::HTTP_TRUST_FORWARDED_FOR, "true"),
            // Tokens are checked: only a valid one names a caller.
            (keys::JWT_SECRET, JWT_SECRET),
        ],
        &logs,
    )
    .await;
    let client = Api::new(api.url(""));
    let bearer = |subject: &str| format!("Bearer {}", customer_token(JWT_SECRET, subject));
    let (flooder, other) = (bearer("c-flood"), bearer("c-other"));

    let (statuses, refused) = flood(&client, &[("authorization", &flooder)], 30).await;
    assert!(statuses[..5].iter().all(|s| *s == 200), "{statuses:?}");
    let refused = refused.unwrap_or_else(|| panic!("no 429 in {statuses:?}"));
    assert_eq!(refused.content_type(), "application/problem+json");
    assert_eq!(refused.body["status"], 429);
    let retry_after: u64 = refused
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");

    // Another token's caller, and callers known by address, are unaffected.
    let (statuses, _) = flood(&client, &[("authorization", &other)], 5).await;
    assert_eq!(statuses, [200; 5]);
    let (statuses, _) = flood(&client, &[("x-forwarded-for", "203.0.113.7")], 5).await;
    assert_eq!(statuses, [200; 5]);
    // An address flood is refused like a token's, and a forged first entry
    // does not make a new caller: the proxy's (last) entry counts.
    let (statuses, _) = flood(&client, &[("x-forwarded-for", "198.51.100.9")], 30).await;
    assert!(statuses.contains(&429), "{statuses:?}");
    let (statuses, _) = flood(
        &client,
        &[("x-forwarded-for", "192.0.2.1, 198.51.100.9")],
        3,
    )
    .await;
    assert!(statuses.contains(&429), "{statuses:?}");
    // Tokens signed with another key, naming a victim or a new subject each
    // time, count against the sender's address and never against the victim.
    let victim = bearer("c-victim");
    let forged = |subject: &str| {
        format!(
            "Bearer {}",
            customer_token("not-the-signing-secret-0123456789", subject)
        )
    };
    for n in 0..30 {
        let subject = if n % 2 == 0 {
            "c-victim".to_owned()
        } else {
            format!("c-invented-{n}")
        };
        let reply = client
            .send(
                reqwest::Method::GET,
                "/api/orders",
                &[
                    ("authorization", &forged(&subject)),
                    ("x-forwarded-for", "192.0.2.66"),
                ],
                None,
            )
            .await;
        assert!(
            [401, 429].contains(&reply.status),
            "forged token: {}",
            reply.status
        );
    }
    let (statuses, _) = flood(
        &client,
        &[
            ("authorization", &forged("c-new")),
            ("x-forwarded-for", "192.0.2.66"),
        ],
        1,
    )
    .await;
    assert_eq!(statuses, [429], "the forger's address is over its quota");
    let (statuses, _) = flood(&client, &[("authorization", &victim)], 5).await;
    assert_eq!(statuses, [200; 5], "the victim's own quota is untouched");
    // Probes are not rate limited.
    assert_eq!(api.ops().get("/health/live").await.status, 200);
}

/// The series of a `/metrics` text: every sample line without its value.
fn series(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .filter_map(|line| line.rsplit_once(' ').map(|(series, _)| series.to_owned()))
        .collect()
}

#[tokio::test]
async fn invented_methods_and_paths_do_not_grow_metrics() {
    let logs = tempfile::TempDir::new().expect("dir");
    let api = start_api(&[], &logs).await;
    let client = Api::new(api.url(""));
    let hostile = |i: usize| {
        let method = reqwest::Method::from_bytes(format!("BREW{i}").as_bytes()).expect("method");
        let path = match i % 3 {
            0 => format!("/invented/{i}/path"),
            1 => format!("/api/orders/{i}"),
            _ => "/api/orders".to_owned(),
        };
        (method, path)
    };
    let send = |i: usize| {
        let client = client.clone();
        async move {
            let (method, path) = hostile(i);
            let reply = client.send(method, &path, &[], None).await;
            assert!([404, 405].contains(&reply.status), "{reply:?}");
            let reply = client.get(&format!("/unknown-{i}")).await;
            assert_eq!(reply.status, 404);
        }
    };
    // Every kind of hostile request once, and a scrape, so their series exist.
    for i in 0..3 {
        send(i).await;
    }
    api.metrics_text().await;
    let before = api.metrics_text().await;
    for i in 3..1003 {
        send(i).await;
    }
    let after = api.metrics_text().await;
    let (before_series, after_series) = (series(&before), series(&after));
    let added: Vec<_> = after_series.difference(&before_series).collect();
    assert!(added.is_empty(), "new series: {added:#?}");
    assert_eq!(before.lines().count(), after.lines().count());
    assert!(
        after.contains(r#"operation="OTHER unmatched""#),
        "invented methods are counted as OTHER:\n{after}"
    );
}

#[tokio::test]
async fn health_and_metrics_are_off_the_public_port() {
    let logs = tempfile::TempDir::new().expect("dir");
    let api = start_api(&[], &logs).await;
    let public = Api::new(api.url(""));
    for path in ["/metrics", "/health", "/health/live", "/health/ready"] {
        assert_eq!(
            public.get(path).await.status,
            404,
            "{path} on the public port"
        );
        assert_eq!(
            api.ops().get(path).await.status,
            200,
            "{path} on the ops port"
        );
    }
}
