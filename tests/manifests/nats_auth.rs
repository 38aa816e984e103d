//! docker/nats/auth.conf, the one source of the NATS users and permissions,
//! held against catga_core::contracts: each service's user may publish and
//! subscribe to exactly what the code of that service uses, and the
//! Kubernetes copy is the file itself.

use std::collections::{BTreeMap, BTreeSet};

use catga_core::{
    config::keys,
    contracts::{consumers, services, streams, subjects},
};
use serde_json::Value;

use crate::model::{self, find, root};

/// The parts of the NATS configuration format auth.conf uses: maps (`{}`),
/// arrays (`[]`), `key: value` / `key = value` / `key value`, quoted and bare
/// strings, `#` and `//` comments. A bare `$NAME` stays the string `$NAME`.
pub fn parse_nats_conf(text: &str) -> Value {
    let tokens = tokenize(text);
    let mut position = 0;
    let map = parse_map_body(&tokens, &mut position, None);
    assert_eq!(
        position,
        tokens.len(),
        "trailing input in NATS configuration"
    );
    map
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Open(char),
    Close(char),
    Word(String),
}

fn tokenize(text: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        match c {
            '#' => while chars.next_if(|c| *c != '\n').is_some() {},
            '/' => {
                chars.next();
                assert_eq!(chars.next(), Some('/'), "a lone '/' in NATS configuration");
                while chars.next_if(|c| *c != '\n').is_some() {}
            }
            '{' | '[' => {
                chars.next();
                tokens.push(Token::Open(c));
            }
            '}' | ']' => {
                chars.next();
                tokens.push(Token::Close(c));
            }
            ':' | '=' | ',' => {
                chars.next();
            }
            c if c.is_whitespace() => {
                chars.next();
            }
            '"' | '\'' => {
                chars.next();
                let mut word = String::new();
                for next in chars.by_ref() {
                    if next == c {
                        break;
                    }
                    word.push(next);
                }
                tokens.push(Token::Word(word));
            }
            _ => {
                let mut word = String::new();
                while let Some(next) = chars.next_if(|c| {
                    !c.is_whitespace() && !matches!(c, ':' | '=' | ',' | '{' | '}' | '[' | ']')
                }) {
                    word.push(next);
                }
                tokens.push(Token::Word(word));
            }
        }
    }
    tokens
}

fn parse_value(tokens: &[Token], position: &mut usize) -> Value {
    let token = tokens
        .get(*position)
        .cloned()
        .expect("a value in NATS configuration");
    *position += 1;
    match token {
        Token::Word(word) => Value::String(word),
        Token::Open('{') => parse_map_body(tokens, position, Some('}')),
        Token::Open(_) => {
            let mut items = Vec::new();
            while tokens.get(*position) != Some(&Token::Close(']')) {
                items.push(parse_value(tokens, position));
            }
            *position += 1;
            Value::Array(items)
        }
        Token::Close(c) => panic!("unexpected {c:?} in NATS configuration"),
    }
}

fn parse_map_body(tokens: &[Token], position: &mut usize, close: Option<char>) -> Value {
    let mut map = serde_json::Map::new();
    loop {
        match tokens.get(*position) {
            None => {
                assert!(close.is_none(), "unclosed map in NATS configuration");
                break;
            }
            Some(Token::Close(c)) if Some(*c) == close => {
                *position += 1;
                break;
            }
            Some(Token::Word(key)) => {
                *position += 1;
                let value = parse_value(tokens, position);
                map.insert(key.clone(), value);
            }
            Some(other) => panic!("unexpected {other:?} in NATS configuration"),
        }
    }
    Value::Object(map)
}

/// The init container of order-service that runs the operator step
/// (`ensure-topology` as the NATS operator) before the service starts.
pub fn operator_step(all: &[model::Object]) -> &Value {
    find(all, "Deployment", services::ORDER_SERVICE).pod()["spec"]["initContainers"]
        .as_array()
        .expect("init containers")
        .iter()
        .find(|c| c["args"][0] == catga_core::service::ENSURE_TOPOLOGY)
        .expect("order-service runs the operator step first")
}

/// What each service's user must be allowed, from the contracts: (publish, subscribe).
fn expected_permissions(service: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let stream_info = [
        streams::ORDER_COMMANDS,
        streams::ORDER_EVENTS,
        streams::DEAD_LETTERS,
    ]
    .map(|stream| format!("$JS.API.STREAM.INFO.{stream}"));
    // A service's own durable consumer: create or update it, read its
    // state, pull, acknowledge, and read an exhausted message to dead-letter it.
    let durable = |stream: &str, durable: &str| {
        [
            format!("$JS.API.CONSUMER.CREATE.{stream}.{durable}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.{durable}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{durable}"),
            format!("$JS.ACK.{stream}.{durable}.>"),
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
        ]
    };
    let advisory = |stream: &str, durable: &str| {
        format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{durable}")
    };
    let inbox = format!("{}.>", subjects::inbox_prefix(service));
    let mut publish: BTreeSet<String> = stream_info.into_iter().collect();
    let mut subscribe = BTreeSet::from([inbox]);
    match service {
        services::ORDER_API => {
            publish.extend([subjects::PLACE_ORDER, subjects::CANCEL_ORDER].map(String::from));
        }
        services::ORDER_SERVICE => {
            publish.extend(
                catga_core::contracts::EventKind::ALL.map(|kind| kind.subject().to_owned()),
            );
            publish.insert(subjects::dead_letter_for(streams::ORDER_COMMANDS_SUBJECTS));
            publish.extend(durable(
                streams::ORDER_COMMANDS,
                consumers::ORDER_PROCESSING,
            ));
            // A work queue: the exhausted message is deleted once copied.
            publish.insert(format!(
                "$JS.API.STREAM.MSG.DELETE.{}",
                streams::ORDER_COMMANDS
            ));
            subscribe.insert(advisory(
                streams::ORDER_COMMANDS,
                consumers::ORDER_PROCESSING,
            ));
        }
        services::NOTIFICATION_SERVICE => {
            publish.insert(subjects::dead_letter_for(streams::ORDER_EVENTS_SUBJECTS));
            publish.extend(durable(streams::ORDER_EVENTS, consumers::NOTIFICATIONS));
            subscribe.insert(advisory(streams::ORDER_EVENTS, consumers::NOTIFICATIONS));
        }
        other => panic!("no permissions expected for {other}"),
    }
    (publish, subscribe)
}

fn strings(value: &Value) -> BTreeSet<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v.as_str().expect("a subject").to_owned())
        .collect()
}

/// The variable nats-server reads `user`'s password from.
fn password_variable(user: &str) -> String {
    format!("$NATS_{}_PASSWORD", user.to_uppercase().replace('-', "_"))
}

fn auth_conf_text() -> String {
    std::fs::read_to_string(root().join("docker/nats/auth.conf")).expect("docker/nats/auth.conf")
}

#[test]
fn nats_users_may_use_exactly_the_subjects_of_their_service() {
    let conf = parse_nats_conf(&auth_conf_text());
    let users: BTreeMap<String, &Value> = conf["authorization"]["users"]
        .as_array()
        .expect("authorization.users")
        .iter()
        .map(|user| (user["user"].as_str().expect("user").to_owned(), user))
        .collect();
    assert_eq!(
        users.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        BTreeSet::from([
            "operator",
            services::ORDER_API,
            services::ORDER_SERVICE,
            services::NOTIFICATION_SERVICE
        ]),
        "one user per service, and the operator"
    );
    for (name, user) in &users {
        assert_eq!(
            user["password"].as_str(),
            Some(password_variable(name).as_str()),
            "{name}'s password comes from the environment"
        );
    }
    assert!(
        users["operator"].get("permissions").is_none(),
        "the operator may do anything"
    );
    for service in [
        services::ORDER_API,
        services::ORDER_SERVICE,
        services::NOTIFICATION_SERVICE,
    ] {
        let permissions = &users[service]["permissions"];
        let (publish, subscribe) = expected_permissions(service);
        assert_eq!(
            strings(&permissions["publish"]["allow"]),
            publish,
            "{service} may publish"
        );
        assert_eq!(
            strings(&permissions["subscribe"]["allow"]),
            subscribe,
            "{service} may subscribe"
        );
        // Allow lists only: a deny list or a response permission would widen
        // or blur them.
        let keys = |v: &Value| {
            v.as_object()
                .map(|m| m.keys().cloned().collect::<BTreeSet<_>>())
                .unwrap_or_default()
        };
        assert_eq!(
            keys(permissions),
            BTreeSet::from(["publish".to_owned(), "subscribe".to_owned()])
        );
        assert_eq!(
            keys(&permissions["publish"]),
            BTreeSet::from(["allow".to_owned()])
        );
    }
    // No service but order-api publishes commands; none but order-service events.
    for (service, wanted) in [
        (services::ORDER_API, subjects::ORDER_CONFIRMED),
        (services::NOTIFICATION_SERVICE, subjects::PLACE_ORDER),
        (services::NOTIFICATION_SERVICE, subjects::ORDER_CONFIRMED),
        (services::ORDER_SERVICE, subjects::PLACE_ORDER),
    ] {
        assert!(
            !expected_permissions(service).0.contains(wanted),
            "{service} must not publish {wanted}"
        );
    }
}

#[test]
fn kubernetes_runs_nats_with_the_shipped_users() {
    let all = model::objects();
    // Each service logs in as its own user; the operator step as the operator.
    for service in [
        services::ORDER_API,
        services::ORDER_SERVICE,
        services::NOTIFICATION_SERVICE,
    ] {
        let env = model::env_of(model::main_container(find(&all, "Deployment", service)));
        assert_eq!(env.values[keys::NATS_USER], service);
        assert_eq!(
            env.secrets[keys::NATS_PASSWORD],
            (
                "catga-secrets".to_owned(),
                format!("nats-{service}-password")
            )
        );
    }
    let order_service = find(&all, "Deployment", services::ORDER_SERVICE);
    let step_env = model::env_of(operator_step(&all));
    assert_eq!(step_env.values[keys::NATS_USER], "operator");
    let service_env = model::env_of(model::main_container(order_service));
    for key in [keys::NATS_URL, keys::NATS_STREAM_REPLICAS] {
        assert_eq!(
            step_env.values.get(key),
            service_env.values.get(key),
            "the operator step creates the streams the services verify: {key}"
        );
    }
    let auth = find(&all, "ConfigMap", "nats-auth");
    assert_eq!(
        auth.value["data"]["auth.conf"].as_str(),
        Some(auth_conf_text().as_str()),
        "ConfigMap nats-auth differs from docker/nats/auth.conf: run k8s/tools/sync.sh"
    );
    let config = find(&all, "ConfigMap", "nats-config");
    let nats_conf = config.value["data"]["nats.conf"]
        .as_str()
        .expect("nats.conf");
    assert!(
        nats_conf.contains("include \"../nats-auth/auth.conf\""),
        "nats.conf includes the users"
    );
    let nats = find(&all, "StatefulSet", "nats");
    let container = model::main_container(nats);
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    let auth_mount = mounts
        .iter()
        .find(|m| m["mountPath"] == "/etc/nats-auth")
        .expect("nats-auth is mounted beside /etc/nats");
    let volume = nats.pod()["spec"]["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == auth_mount["name"])
        .expect("the mounted volume");
    assert_eq!(volume["configMap"]["name"], "nats-auth");
    let env = model::env_of(container);
    let conf = parse_nats_conf(&auth_conf_text());
    for user in conf["authorization"]["users"].as_array().expect("users") {
        let name = user["user"].as_str().expect("user");
        let variable = password_variable(name);
        let variable = variable.trim_start_matches('$');
        assert!(
            env.secrets.contains_key(variable),
            "nats-server gets {variable} from the Secret"
        );
    }
}
