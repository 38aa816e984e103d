//! NATS with the shipped users and permissions (docker/nats/auth.conf): who
//! may connect, publish and change streams; a service whose user may not
//! change streams waits for the operator step; `tls://` with a private CA;
//! a login with an nkey seed file (`NATS__CredsFile`).

use std::{collections::HashMap, path::Path, time::Duration};

use async_nats::jetstream::{self, message::PublishMessage as Publish};
use catga_core::{
    config::{NatsSettings, keys},
    contracts::{services, streams, subjects},
    messaging::{Broker, JetStreamBroker, OutgoingMessage, Publisher},
};
use catga_tests::{
    NATS_OPERATOR, Nats, Server, Service, eventually, free_port, nats_password,
    nats_password_variable, nats_server_args, nats_settings_as, run_topology_step, service_env,
};
use tokio::sync::mpsc;

/// How long a refused request may take to be noticed.
const REFUSAL: Duration = Duration::from_secs(5);

/// A client of `user`, replying on its service's inbox prefix, with the
/// server's error messages (permission violations) sent to the receiver.
async fn client_as(
    nats: &Nats,
    user: &str,
) -> (async_nats::Client, mpsc::UnboundedReceiver<String>) {
    let (errors, received) = mpsc::unbounded_channel();
    let client =
        async_nats::ConnectOptions::with_user_and_password(user.to_owned(), nats_password(user))
            .custom_inbox_prefix(subjects::inbox_prefix(user))
            .request_timeout(Some(REFUSAL))
            .event_callback(move |event| {
                let errors = errors.clone();
                async move {
                    if let async_nats::Event::ServerError(err) = event {
                        let _ = errors.send(err.to_string());
                    }
                }
            })
            .connect(nats.url())
            .await
            .unwrap_or_else(|err| panic!("{user} connects: {err}"));
    (client, received)
}

/// The next server error, within [`REFUSAL`].
async fn next_violation(errors: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(REFUSAL, errors.recv())
        .await
        .expect("the server reports a violation")
        .expect("errors")
        .to_lowercase()
}

#[tokio::test]
async fn clients_without_a_valid_user_are_refused() {
    let nats = Nats::start().await;
    let anonymous = async_nats::ConnectOptions::new()
        .connection_timeout(REFUSAL)
        .connect(nats.url())
        .await;
    let err = anonymous.expect_err("an unauthenticated client is refused");
    assert_eq!(
        err.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation,
        "{err}"
    );
    let wrong = async_nats::ConnectOptions::with_user_and_password(
        services::ORDER_API.to_owned(),
        nats_password(services::ORDER_SERVICE),
    )
    .connection_timeout(REFUSAL)
    .connect(nats.url())
    .await;
    assert!(wrong.is_err(), "another user's password is refused");
}

#[tokio::test]
async fn order_api_may_publish_commands_and_nothing_else() {
    let nats = Nats::start().await;
    let operator = nats.jetstream().await;
    broker_as(&nats, NATS_OPERATOR)
        .await
        .ensure_topology()
        .await
        .expect("the operator creates the streams");
    let (client, mut violations) = client_as(&nats, services::ORDER_API).await;
    let js = jetstream::new(client.clone());

    // A command: stored and acknowledged.
    js.send_publish(subjects::PLACE_ORDER, Publish::build().payload("{}".into()))
        .await
        .expect("publish a command")
        .await
        .expect("the command is stored");

    // An event and a dead letter: refused by the server, never stored.
    for subject in [
        subjects::ORDER_CONFIRMED.to_owned(),
        subjects::dead_letter_for(subjects::PLACE_ORDER),
    ] {
        client
            .publish(subject.clone(), "forged".into())
            .await
            .expect("sent");
        client.flush().await.expect("flushed");
        let violation = next_violation(&mut violations).await;
        assert!(
            violation.contains("permissions violation") && violation.contains(&subject),
            "{violation}"
        );
    }
    for stream in [streams::ORDER_EVENTS, streams::DEAD_LETTERS] {
        let mut stream = operator.get_stream(stream).await.expect("stream");
        assert_eq!(stream.info().await.expect("info").state.messages, 0);
    }

    // Streams: neither created, changed nor deleted by order-api.
    let created = js
        .create_stream(jetstream::stream::Config {
            name: "FORGED".into(),
            subjects: vec!["forged.>".into()],
            ..Default::default()
        })
        .await;
    assert!(created.is_err(), "order-api created a stream");
    assert!(
        next_violation(&mut violations)
            .await
            .contains("$js.api.stream.create.forged")
    );
    let deleted = js.delete_stream(streams::ORDER_COMMANDS).await;
    assert!(deleted.is_err(), "order-api deleted a stream");
    assert!(
        next_violation(&mut violations)
            .await
            .contains("$js.api.stream.delete.catga_order_commands")
    );
    assert!(operator.get_stream(streams::ORDER_COMMANDS).await.is_ok());

    // Another service's replies are not order-api's to read.
    let inbox = format!("{}.>", subjects::inbox_prefix(services::ORDER_SERVICE));
    let _subscription = client.subscribe(inbox.clone()).await.expect("sent");
    client.flush().await.expect("flushed");
    let violation = next_violation(&mut violations).await;
    assert!(
        violation.contains("subscription") && violation.contains(&inbox.to_lowercase()),
        "{violation}"
    );
}

/// The production broker as `user`.
async fn broker_as(nats: &Nats, user: &str) -> JetStreamBroker {
    JetStreamBroker::connect(&nats_settings_as(vec![nats.url()], user), user)
        .await
        .expect("connect")
}

/// A forged command with the same product on two lines, published with
/// order-api's credentials (the one user that may publish commands): it is
/// dead-lettered, and the stock stays as it was.
#[tokio::test]
async fn a_forged_command_from_order_apis_user_is_dead_lettered() {
    let system = catga_tests::System::start().await;
    let api = system.client();
    let stock_before = api.product("PROD-002").await["stock"].clone();
    let order_id = catga_core::domain::OrderId::new();
    let line = serde_json::json!({"productId": "PROD-002", "productName": "Mouse", "quantity": 100, "unitPrice": 1.0});
    let command = serde_json::json!({
        "commandId": format!("place:{order_id}"),
        "orderId": order_id,
        "customerId": "c-forger",
        "items": [line, line],
        "totalAmount": "200.00",
        "createdAt": "2026-01-01T00:00:00Z",
    });
    let broker = broker_as(&system.nats, services::ORDER_API).await;
    broker
        .send(OutgoingMessage::new(
            subjects::PLACE_ORDER,
            format!("forged:{order_id}"),
            serde_json::to_vec(&command).expect("json").into(),
        ))
        .await
        .expect("order-api's user may publish a command");

    let operator = system.nats.jetstream().await;
    let mut dead = operator
        .get_stream(streams::DEAD_LETTERS)
        .await
        .expect("dead-letter stream");
    eventually("the dead letter", Duration::from_secs(15), || {
        let mut dead = dead.clone();
        async move { (dead.info().await.ok()?.state.messages == 1).then_some(()) }
    })
    .await;
    let letter = dead
        .info()
        .await
        .map(|info| info.state.last_sequence)
        .expect("info");
    let letter = dead.get_raw_message(letter).await.expect("dead letter");
    let reason = letter
        .headers
        .get(catga_core::contracts::headers::DEAD_LETTER_REASON)
        .map(ToString::to_string)
        .unwrap_or_default();
    assert!(reason.contains("appears more than once"), "{reason}");
    assert_eq!(api.product("PROD-002").await["stock"], stock_before);
    let reply = api.get(&format!("/api/orders/{order_id}")).await;
    assert_eq!(reply.status, 404);
}

/// With restricted users the services never create streams: without the
/// operator step each waits, not ready, saying which stream is missing and
/// what to run; once the step has run, they become ready.
#[tokio::test]
async fn services_wait_for_the_operator_step() {
    let (nats, redis) = tokio::join!(Nats::start(), catga_tests::Redis::start());
    let logs = tempfile::TempDir::new().expect("logs");
    let env = service_env(&nats.url(), &redis.configuration(), "http://127.0.0.1:1");
    let service = Service::spawn(services::ORDER_SERVICE, &env, logs.path());
    eventually(
        "the missing stream reported",
        Duration::from_secs(30),
        || {
            let logs = service.process.logs();
            async move {
                (logs.contains("stream CATGA_ORDER_COMMANDS: missing on the server")
                    && logs.contains("ensure-topology"))
                .then_some(())
            }
        },
    )
    .await;
    assert_eq!(service.ready_status().await, Some(503));
    let operator = nats.jetstream().await;
    assert!(
        operator.get_stream(streams::ORDER_COMMANDS).await.is_err(),
        "the service created a stream"
    );

    run_topology_step(&env).await;
    service.wait_ready(Duration::from_secs(30)).await;
}

/// A CA, and a certificate for 127.0.0.1 it signed, made with the openssl CLI.
fn make_certificates(dir: &Path) {
    let run = |args: &[&str]| {
        let output = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            output.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=catga-test-ca",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1\n").expect("ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
}

#[tokio::test]
async fn tls_urls_work_with_a_private_ca() {
    let certificates = tempfile::TempDir::new().expect("dir");
    make_certificates(certificates.path());
    let file = |name: &str| certificates.path().join(name).display().to_string();
    let env: HashMap<String, String> = catga_tests::NATS_USERS
        .iter()
        .map(|user| (nats_password_variable(user), nats_password(user)))
        .collect();
    let (cert, key) = (file("server.pem"), file("server.key"));
    let server = Server::start_with_env("nats-server", free_port(), env, |port, dir| {
        let mut args = nats_server_args(port, dir);
        args.extend([
            "--tls".to_owned(),
            "--tlscert".to_owned(),
            cert,
            "--tlskey".to_owned(),
            key,
        ]);
        args
    })
    .await;
    let url = format!("tls://127.0.0.1:{}", server.port);
    let read = |ca: Option<&str>| {
        let mut pairs = vec![
            (keys::NATS_URL.to_owned(), url.clone()),
            (keys::NATS_USER.to_owned(), NATS_OPERATOR.to_owned()),
            (keys::NATS_PASSWORD.to_owned(), nats_password(NATS_OPERATOR)),
        ];
        pairs.extend(ca.map(|ca| (keys::NATS_TLS_CA_FILE.to_owned(), ca.to_owned())));
        NatsSettings::from_env(&catga_core::config::Env::from_pairs(pairs)).expect("settings")
    };

    let trusted = JetStreamBroker::connect(&read(Some(&file("ca.pem"))), "tls-test")
        .await
        .expect("connect");
    eventually("the TLS connection", Duration::from_secs(15), || async {
        trusted.is_connected().then_some(())
    })
    .await;
    trusted.ensure_topology().await.expect("streams over TLS");
    trusted
        .send(OutgoingMessage::new(
            subjects::PLACE_ORDER,
            "tls-1",
            "{}".into(),
        ))
        .await
        .expect("publish over TLS");

    // Without the CA the server's certificate is not trusted.
    let untrusted = JetStreamBroker::connect(&read(None), "tls-test")
        .await
        .expect("connects in the background");
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        !untrusted.is_connected(),
        "a certificate of an unknown CA was accepted"
    );
}

#[tokio::test]
async fn an_nkey_seed_file_logs_in_and_a_wrong_seed_is_refused() {
    let user = nkeys::KeyPair::new_user();
    let impostor = nkeys::KeyPair::new_user();
    let files = tempfile::TempDir::new().expect("dir");
    let config = files.path().join("nkey.conf");
    std::fs::write(
        &config,
        format!(
            "authorization {{ users = [ {{ nkey: \"{}\" }} ] }}\n",
            user.public_key()
        ),
    )
    .expect("config");
    let server = Server::start("nats-server", |port, _| {
        vec![
            "-c".to_owned(),
            config.display().to_string(),
            "-a".to_owned(),
            "127.0.0.1".to_owned(),
            "-p".to_owned(),
            port.to_string(),
        ]
    })
    .await;
    let connect = |key: &nkeys::KeyPair, name: &str| {
        let seed_file = files.path().join(name);
        std::fs::write(&seed_file, key.seed().expect("seed")).expect("seed file");
        let settings = NatsSettings::from_env(&catga_core::config::Env::from_pairs([
            (keys::NATS_URL, format!("nats://127.0.0.1:{}", server.port)),
            (keys::NATS_CREDS_FILE, seed_file.display().to_string()),
        ]))
        .expect("settings");
        async move { JetStreamBroker::connect(&settings, "nkey-test").await }
    };

    let allowed = connect(&user, "user.nk").await.expect("connect");
    eventually("the nkey login", Duration::from_secs(15), || async {
        allowed.is_connected().then_some(())
    })
    .await;

    let refused = connect(&impostor, "impostor.nk").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        refused.map_or(true, |broker| !broker.is_connected()),
        "a seed the server does not know logged in"
    );
}
