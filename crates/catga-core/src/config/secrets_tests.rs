//! Every configuration error path, given secrets: none may appear in what
//! the error shows (`Display` with its causes, `Debug`) nor in a warning.

use super::{CommonSettings, Env, NatsSettings, RedisSettings};

/// Pieces of secret the inputs carry; none may be shown.
const SECRETS: [&str; 4] = ["Xs3cret", "Yh1dden", "Zt0ken", "Wpa55"];

fn assert_hidden(input: &str, shown: &str) {
    for secret in SECRETS {
        assert!(
            !shown.contains(secret),
            "{secret} of {input:?} is shown: {shown}"
        );
    }
}

fn assert_refused_quietly<T: std::fmt::Debug>(
    setting: &str,
    input: &str,
    read: impl Fn(&Env) -> Result<T, super::ConfigError>,
) {
    let env = Env::from_pairs([(setting, input)]);
    let err = read(&env).expect_err(input);
    assert_eq!(err.setting, setting, "{input:?}");
    assert_hidden(input, &crate::error::chain(&err).to_string());
    assert_hidden(input, &format!("{err:?}"));
}

#[test]
fn nats_url_errors_never_show_credentials() {
    for input in [
        "http://app:Xs3cret@nats:4222",
        "nats://app:Xs3cret@:4222",
        "nats://Zt0ken@:4222",
        "nats://app:Xs3cret@[nats:4222",
        // A comma in the password: the first half looks like a server.
        "nats://app:Xs3cret,Yh1dden@nats:4222",
        "nats://app:Wpa55,Yh1dden@nats:4222,nats://x:Xs3cret@:1",
        "nats://ok:4222,ftp://u:Xs3cret@nats:4222",
    ] {
        assert_refused_quietly("NATS__Url", input, NatsSettings::from_env);
    }
}

#[test]
fn redis_configuration_errors_never_show_fragments_of_it() {
    for input in [
        // A password holding a comma: its second half looks like an option.
        "cache:6379,password=Xs3cret,Yh1dden",
        "cache:6379,password=Xs3cret,Yh1dden=Zt0ken",
        "cache:6379,password=Wpa55,ssl=Xs3cret",
        "cache:6379,password=Wpa55,defaultDatabase=Xs3cret",
        "cache:6379,password=Wpa55,connectTimeout=Xs3cret",
        // A password where the port goes.
        "cache:Xs3cret",
        "redis://:Xs3cret@/0",
        "redis://u:Xs3cret@cache:6379/Yh1dden",
        "rediss://u:Xs3cret@cache:port",
        "password=Xs3cret",
    ] {
        assert_refused_quietly("Redis__Configuration", input, RedisSettings::from_env);
    }
}

#[test]
fn trace_endpoint_errors_and_warnings_never_show_credentials() {
    assert_refused_quietly(
        "OpenTelemetry__JaegerEndpoint",
        "http://u:Xs3cret@",
        |env| CommonSettings::from_env(env, 1, "x"),
    );
    let input = "http://u:Xs3cret@jaeger:14268";
    let env = Env::from_pairs([("OpenTelemetry__JaegerEndpoint", input)]);
    let settings = CommonSettings::from_env(&env, 1, "x").expect("a warning, not an error");
    assert!(!settings.warnings.is_empty());
    assert_hidden(input, &settings.warnings.join("\n"));
    assert_hidden(input, &format!("{settings:?}"));
}

#[test]
fn valid_settings_never_show_credentials_in_debug() {
    let env = Env::from_pairs([
        (
            "NATS__Url",
            "nats://app:Xs3cret@nats:4222,nats://Zt0ken@n2:4222",
        ),
        ("Redis__Configuration", "cache:6379,password=Yh1dden"),
        ("REDIS_PASSWORD", "Wpa55"),
    ]);
    let nats = NatsSettings::from_env(&env).expect("valid");
    let redis = RedisSettings::from_env(&env).expect("valid");
    let shown = format!("{nats:?} {:?} {redis:?} {redis}", nats.redacted_servers());
    assert_hidden("valid settings", &shown);
}

/// A file holding `contents`, removed when the guard drops.
fn secret_file(contents: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::TempDir::new().expect("temp dir");
    let path = dir.path().join("secret");
    std::fs::write(&path, contents).expect("write");
    (dir, path.display().to_string())
}

fn assert_refused_quietly_with(pairs: &[(&str, &str)], setting: &str) {
    let env = Env::from_pairs(pairs.iter().copied());
    let err = NatsSettings::from_env(&env).expect_err(setting);
    assert_eq!(err.setting, setting, "{pairs:?}");
    let input = format!("{pairs:?}");
    assert_hidden(&input, &crate::error::chain(&err).to_string());
    assert_hidden(&input, &format!("{err:?}"));
}

#[test]
fn nats_credential_errors_never_show_secrets() {
    assert_refused_quietly_with(&[("NATS__Password", "Xs3cret")], "NATS__User");
    assert_refused_quietly_with(&[("NATS__User", "app")], "NATS__Password");
    let (_creds, creds) = secret_file("Xs3cret\nYh1dden Zt0ken\n");
    assert_refused_quietly_with(
        &[
            ("NATS__User", "app"),
            ("NATS__Password", "Wpa55"),
            ("NATS__CredsFile", &creds),
        ],
        "NATS__CredsFile",
    );
    // A file that is neither a .creds file nor a seed: named, never quoted.
    assert_refused_quietly_with(&[("NATS__CredsFile", &creds)], "NATS__CredsFile");
    assert_refused_quietly_with(
        &[("NATS__CredsFile", "/nonexistent/app.creds")],
        "NATS__CredsFile",
    );
    let (_ca, ca) = secret_file("Xs3cret, not a certificate");
    assert_refused_quietly_with(&[("NATS__TlsCaFile", &ca)], "NATS__TlsCaFile");
}

#[test]
fn nats_credentials_never_show_in_debug() {
    let env = Env::from_pairs([("NATS__User", "app"), ("NATS__Password", "Xs3cret")]);
    let nats = NatsSettings::from_env(&env).expect("valid");
    assert!(nats.is_authenticated());
    assert_hidden("a NATS password", &format!("{nats:?}"));
    let (_seed, seed) = secret_file("SUXs3cretYh1dden\n");
    let env = Env::from_pairs([("NATS__CredsFile", seed.as_str())]);
    let nats = NatsSettings::from_env(&env).expect("an nkey seed file");
    assert!(matches!(
        nats.credentials,
        super::NatsCredentials::NkeySeed { .. }
    ));
    assert_hidden("an nkey seed", &format!("{nats:?}"));
    assert!(
        !NatsSettings::from_env(&Env::default())
            .expect("valid")
            .is_authenticated()
    );
}
