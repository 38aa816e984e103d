//! Secrets stay secret (issue 14): every configuration error path of the
//! binaries, given secrets, stops start-up with one line naming the setting
//! and showing none of them.

use catga_core::config::keys;
use catga_tests::binary;

/// Pieces of secret the inputs carry; none may be printed.
const SECRETS: [&str; 4] = ["Xs3cret", "Yh1dden", "Zt0ken", "Wpa55"];

/// A NATS URL with credentials, so every case also runs with one set.
const NATS_WITH_PASSWORD: &str = "nats://app:Wpa55@127.0.0.1:1";

#[test]
fn configuration_errors_print_no_secret() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "order-service",
            keys::NATS_URL,
            "http://app:Xs3cret@nats:4222",
        ),
        ("order-service", keys::NATS_URL, "nats://app:Xs3cret@:4222"),
        ("order-service", keys::NATS_URL, "nats://Zt0ken@[nats:4222"),
        (
            "order-service",
            keys::NATS_URL,
            "nats://app:Xs3cret,Yh1dden@nats:4222",
        ),
        (
            "order-api",
            keys::NATS_URL,
            "nats://app:Xs3cret,Yh1dden@:4222",
        ),
        (
            "order-api",
            keys::REDIS_CONFIGURATION,
            "cache:6379,password=Xs3cret,Yh1dden",
        ),
        (
            "order-api",
            keys::REDIS_CONFIGURATION,
            "cache:6379,password=Xs3cret,Yh1dden=1",
        ),
        ("order-service", keys::REDIS_CONFIGURATION, "cache:Xs3cret"),
        (
            "order-service",
            keys::REDIS_CONFIGURATION,
            "cache:6379,password=Wpa55,ssl=Xs3cret",
        ),
        (
            "notification-service",
            keys::REDIS_CONFIGURATION,
            "redis://u:Xs3cret@cache:6379/Yh1dden",
        ),
        (
            "notification-service",
            keys::REDIS_CONFIGURATION,
            "rediss://u:Xs3cret@cache:port",
        ),
        (
            "notification-service",
            keys::WEBHOOK_URL,
            "ftp://u:Xs3cret@hooks",
        ),
        (
            "notification-service",
            keys::WEBHOOK_URL,
            "http://u:Xs3cret@[hooks",
        ),
        ("order-api", keys::JWT_SECRET, "Xs3cret"),
        (
            "order-service",
            keys::OTEL_JAEGER_ENDPOINT,
            "http://u:Xs3cret@",
        ),
        // Another setting at fault while secrets are set.
        ("order-api", keys::HTTP_PORT, "eighty"),
        ("order-api", keys::HTTP_OPS_PORT, "0"),
        ("order-service", keys::HTTP_HEADER_TIMEOUT_SECONDS, "0"),
        ("order-api", keys::HTTP_RATE_LIMIT_PER_SECOND, "-1"),
    ];
    for &(service, key, value) in cases {
        // `timeout`: a setting accepted by mistake fails the test instead of
        // running the service forever.
        let mut command = std::process::Command::new("timeout");
        command
            .arg("20")
            .arg(binary(service))
            .env_clear()
            .env(keys::REDIS_PASSWORD, "Wpa55")
            .env(
                keys::JWT_SECRET,
                "Zt0ken-Zt0ken-Zt0ken-Zt0ken-Zt0ken-Zt0ken",
            );
        if key != keys::NATS_URL {
            command.env(keys::NATS_URL, NATS_WITH_PASSWORD);
        }
        let output = command.env(key, value).output().expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert_eq!(
            output.status.code(),
            Some(2),
            "{service} {key}={value}: {stderr}"
        );
        assert_eq!(stderr.lines().count(), 1, "{service} {key}: {stderr}");
        assert!(stderr.contains(key), "{service} {key}: {stderr}");
        for secret in SECRETS {
            assert!(
                !stderr.contains(secret) && !stdout.contains(secret),
                "{service} {key}={value} prints {secret}: {stderr}{stdout}"
            );
        }
    }
}
