//! Who may do what, against the whole system: order-api started with the
//! keys of a stand-in identity provider (OIDC discovery, RS256) or with the
//! HS256 secret, customers and an admin with real tokens.

use std::{collections::HashMap, time::Duration};

use catga_core::config::keys;
use catga_tests::{IdentityProvider, Reply, SigningKey, System, binary, eventually, order_body};
use serde_json::json;

#[tokio::test]
async fn customers_see_only_their_own_orders_with_an_identity_providers_keys() {
    let key = SigningKey::rsa("e2e-rsa");
    let provider = IdentityProvider::start(&[&key]).await;
    let system = System::start_with_identity_provider(&provider, &key).await;
    access_rules(&system).await;
}

#[tokio::test]
async fn customers_see_only_their_own_orders_with_the_hs256_secret() {
    let system = System::start().await;
    access_rules(&system).await;
}

fn order_ids(page: &Reply) -> Vec<String> {
    page.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("a page: {:?}", page.body))
        .iter()
        .map(|o| o["orderId"].as_str().expect("id").to_owned())
        .collect()
}

async fn access_rules(system: &System) {
    let admin = system.client();
    let alice = admin.as_customer("alice");
    let bob = admin.as_customer("bob");
    let line = [("PROD-001", 1)];

    // The customer is the token's: the body may leave it out.
    let placed = alice
        .post_json(
            "/api/orders",
            &json!({"items": [{"productId": "PROD-001", "quantity": 1}]}),
            &[],
        )
        .await;
    assert_eq!(
        placed.status,
        202,
        "{:?}\n{}",
        placed.body,
        system.all_logs()
    );
    assert_eq!(placed.body["customerId"], "alice");
    let alices = placed.body["orderId"].as_str().expect("id").to_owned();
    let bobs = bob.place("bob", &line).await;
    assert_eq!(bobs.status, 202, "{:?}", bobs.body);
    let bobs = bobs.body["orderId"].as_str().expect("id").to_owned();

    // Naming another customer is forbidden.
    let foreign = alice
        .post_json("/api/orders", &order_body("bob", &line), &[])
        .await;
    assert_eq!(foreign.status, 403, "{:?}", foreign.body);
    assert_eq!(foreign.content_type(), "application/problem+json");

    // Another customer's order is answered exactly as a missing one.
    let path = format!("/api/orders/{alices}");
    assert_eq!(alice.get(&path).await.status, 200);
    let hidden = bob.get(&path).await;
    let missing = bob
        .get("/api/orders/01a22681-80fb-74d7-90dc-d3c415b0c7a8")
        .await;
    assert_eq!(hidden.status, 404, "{:?}", hidden.body);
    assert_eq!(
        (&hidden.body["type"], &hidden.body["title"]),
        (&missing.body["type"], &missing.body["title"])
    );
    let cancel = bob
        .post_json(&format!("{path}/cancel"), &json!({}), &[])
        .await;
    assert_eq!(cancel.status, 404, "{:?}", cancel.body);
    assert_eq!(
        admin.final_state(&alices).await["status"],
        "Confirmed",
        "bob's cancel changed nothing"
    );

    // Each lists only their own; the admin lists both.
    assert_eq!(
        order_ids(&alice.get("/api/orders").await),
        [alices.as_str()]
    );
    assert_eq!(order_ids(&bob.get("/api/orders").await), [bobs.as_str()]);
    let everyone = order_ids(&admin.get("/api/orders?limit=100").await);
    assert!(
        everyone.contains(&alices) && everyone.contains(&bobs),
        "{everyone:?}"
    );

    // The same Idempotency-Key from two customers: two independent orders,
    // each replayed to its own customer only.
    let key = [("idempotency-key", "the-same-key")];
    let body = |customer| order_body(customer, &[("PROD-002", 1)]);
    let first = alice.post_json("/api/orders", &body("alice"), &key).await;
    let second = bob.post_json("/api/orders", &body("bob"), &key).await;
    assert_eq!(
        (first.status, second.status),
        (202, 202),
        "{first:?} {second:?}"
    );
    assert_ne!(first.body["orderId"], second.body["orderId"]);
    assert_eq!(second.body["customerId"], "bob");
    let replay = bob.post_json("/api/orders", &body("bob"), &key).await;
    assert_eq!(replay.body["orderId"], second.body["orderId"]);
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(order_ids(&bob.get("/api/orders").await).len(), 2);

    // The admin reads and cancels anyone's order.
    assert_eq!(admin.get(&path).await.status, 200);
    let cancelled = admin
        .post_json(&format!("{path}/cancel"), &json!({}), &[])
        .await;
    assert_eq!(cancelled.status, 202, "{:?}", cancelled.body);

    // No token: 401 with the bare challenge; a bad one: the invalid_token challenge.
    let anonymous = admin.without_token();
    for path in ["/api/orders", &path] {
        let refused = anonymous.get(path).await;
        assert_eq!(refused.status, 401, "{path}");
        assert_eq!(refused.header("www-authenticate"), Some("Bearer"), "{path}");
        assert_eq!(refused.content_type(), "application/problem+json");
    }
    let refused = anonymous
        .send(
            reqwest::Method::GET,
            "/api/orders",
            &[("authorization", "Bearer not.a.token")],
            None,
        )
        .await;
    assert_eq!(refused.status, 401);
    assert!(
        refused
            .header("www-authenticate")
            .is_some_and(|c| c.starts_with("Bearer error=\"invalid_token\"")),
        "{:?}",
        refused.headers
    );
    // The catalog and the API's description need none.
    assert_eq!(anonymous.get("/api/products").await.status, 200);
    assert_eq!(anonymous.get("/api/openapi.json").await.status, 200);
}

#[tokio::test]
async fn a_distributed_order_api_needs_an_auth_setting_or_says_it_runs_open() {
    let refused = std::process::Command::new(binary("order-api"))
        .env_clear()
        .env(keys::NATS_URL, "nats://127.0.0.1:1")
        .output()
        .expect("runs");
    assert_eq!(refused.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains(keys::AUTH_AUTHORITY), "{stderr}");
    assert!(stderr.contains(keys::AUTH_ALLOW_ANONYMOUS), "{stderr}");

    // Explicitly open: it starts (its backends may be away) and warns.
    let logs = tempfile::TempDir::new().expect("dir");
    let env: HashMap<String, String> = [
        (keys::NATS_URL, "nats://127.0.0.1:1"),
        (keys::REDIS_CONFIGURATION, "127.0.0.1:1"),
        (keys::AUTH_ALLOW_ANONYMOUS, "true"),
        (keys::HTTP_PORT, &catga_tests::free_port().to_string()),
        (keys::HTTP_OPS_PORT, &catga_tests::free_port().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let process =
        catga_tests::Process::spawn("open", binary("order-api"), Vec::new(), env, logs.path());
    eventually("the warning", Duration::from_secs(10), || async {
        process
            .logs()
            .contains("AUTHENTICATION IS OFF")
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn tokens_get_503_until_the_identity_providers_keys_arrive() {
    // The provider publishes no usable key yet: order-api starts anyway.
    let key = SigningKey::ec("late-key");
    let provider = IdentityProvider::start(&[]).await;
    let logs = tempfile::TempDir::new().expect("dir");
    let (port, ops_port) = (catga_tests::free_port(), catga_tests::free_port());
    let env: HashMap<String, String> = [
        (keys::HTTP_PORT, port.to_string()),
        (keys::HTTP_OPS_PORT, ops_port.to_string()),
        (keys::AUTH_AUTHORITY, provider.issuer.clone()),
        (keys::AUTH_AUDIENCE, catga_tests::TEST_AUDIENCE.to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let process = catga_tests::Process::spawn(
        "order-api",
        binary("order-api"),
        Vec::new(),
        env,
        logs.path(),
    );
    catga_tests::wait_for_port(port, Duration::from_secs(20)).await;
    let customer = catga_tests::Api::with_tokens(
        format!("http://127.0.0.1:{port}"),
        catga_tests::Tokens::Provider {
            provider: provider.clone(),
            key: Box::new(key.clone()),
        },
    )
    .as_customer("c-late");

    let early = customer.get("/api/orders").await;
    assert_eq!(early.status, 503, "{:?}\n{}", early.body, process.logs());
    assert!(early.header("retry-after").is_some());
    let ops = catga_tests::Api::new(format!("http://127.0.0.1:{ops_port}"));
    assert_eq!(ops.get("/health/live").await.status, 200);

    provider.publish(&[&key]);
    eventually(
        "the keys to arrive (one refresh per cooldown)",
        Duration::from_secs(20),
        || async { (customer.get("/api/orders").await.status == 200).then_some(()) },
    )
    .await;
}
