//! The order-api binary: reads the settings, composes the backends they name,
//! and serves the `order_api` library on them. Without `NATS__Url` the
//! backends are the whole system running in this process (`catga-embedded`);
//! with it, JetStream and Redis, and never the embedded ones.

use std::sync::Arc;

use catga_core::{
    CancellationToken,
    config::{ConfigError, Env},
    shutdown::BackgroundTasks,
};
use order_api::{Backends, Distributed};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("token") {
        let env = catga_core::config::Env::from_process();
        return order_api::auth::token::command(std::env::args_os().skip(1), &env);
    }
    catga_core::service::main(
        "order-api",
        Settings::from_env,
        |settings| &settings.api.common,
        run,
    )
    .await
}

struct Settings {
    api: order_api::Settings,
    backends: BackendSettings,
}

enum BackendSettings {
    Distributed(Distributed),
    Embedded(catga_embedded::Settings),
}

impl Settings {
    /// A distributed order-api authenticates its callers unless told
    /// explicitly not to; the embedded mode is open for local development.
    fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let api = order_api::Settings::from_env(env)?;
        let backends = match Distributed::from_env(env)? {
            Some(distributed) => {
                api.auth.require_for_distributed()?;
                BackendSettings::Distributed(distributed)
            }
            None => BackendSettings::Embedded(catga_embedded::Settings::from_env(env)?),
        };
        Ok(Self { api, backends })
    }
}

#[derive(Debug, thiserror::Error)]
enum Error {
    #[error(transparent)]
    Api(#[from] order_api::Error),
    #[error(transparent)]
    Embedded(#[from] catga_embedded::Error),
}

async fn run(
    Settings { api, backends }: Settings,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    match backends {
        BackendSettings::Distributed(distributed) => {
            let backends = Backends::connect(&distributed, &shutdown).await?;
            order_api::run(api, backends, listener, shutdown).await?;
        }
        BackendSettings::Embedded(settings) => {
            let system =
                catga_embedded::System::start(&settings, api.common.shutdown_grace).await?;
            let backends = Backends {
                store: Arc::new(system.store.clone()),
                publisher: Arc::new(system.broker.clone()),
                idempotency: Arc::new(system.http_idempotency.clone()),
                health: system.health.clone(),
                // The system's tasks stop after the API, in `System::stop`.
                tasks: BackgroundTasks::new(),
            };
            // The services stop after the API: commands it accepted while
            // draining are still applied.
            let served = order_api::run(api, backends, listener, shutdown).await;
            system.stop().await;
            served?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use catga_core::config::keys;

    use super::*;

    #[test]
    fn embedded_without_nats_and_never_otherwise() {
        let settings = Settings::from_env(&Env::default()).expect("valid");
        assert!(matches!(
            settings.backends,
            BackendSettings::Embedded { .. }
        ));
        assert_eq!(settings.api.common.http_port, 8080);
        assert_eq!(settings.api.common.service_name, "OrderApi");

        let env = Env::from_pairs([
            ("NATS__Url", "nats://127.0.0.1:4222"),
            (keys::AUTH_ALLOW_ANONYMOUS, "true"),
        ]);
        let settings = Settings::from_env(&env).expect("valid");
        assert!(matches!(
            settings.backends,
            BackendSettings::Distributed { .. }
        ));
    }

    #[test]
    fn a_distributed_api_refuses_to_start_without_an_auth_setting() {
        let err = Settings::from_env(&Env::from_pairs([("NATS__Url", "nats://127.0.0.1:4222")]))
            .err()
            .expect("refused");
        assert_eq!(err.setting, keys::AUTH_AUTHORITY);
        assert!(
            err.to_string().contains(keys::AUTH_ALLOW_ANONYMOUS),
            "{err}"
        );
        for (key, value) in [
            (keys::JWT_SECRET, "0123456789abcdef0123456789abcdef"),
            (keys::AUTH_AUTHORITY, "https://id.example/realms/catga"),
            (keys::AUTH_JWKS_URL, "https://id.example/jwks"),
        ] {
            let env = Env::from_pairs([("NATS__Url", "nats://127.0.0.1:4222"), (key, value)]);
            assert!(Settings::from_env(&env).is_ok(), "{key}");
        }
        // Embedded, nothing set: open.
        let settings = Settings::from_env(&Env::default()).expect("valid");
        assert!(!settings.api.auth.validates_tokens());
    }
}
