use std::process::ExitCode;

use anyhow::Context;
use catga_core::{config::Env, service, shutdown, telemetry};
use order_service::Settings;
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    let settings = match Settings::from_env(&Env::from_process()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("order-service: {err}");
            return Ok(ExitCode::from(2));
        }
    };
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        return Ok(service::healthcheck(settings.common.http_port).await);
    }
    let _telemetry = telemetry::init(&settings.common);
    let _failpoints = catga_core::failpoints();
    let listener = TcpListener::bind(("0.0.0.0", settings.common.http_port))
        .await
        .with_context(|| format!("cannot listen on port {}", settings.common.http_port))?;
    order_service::run(settings, listener, shutdown::on_signals()).await?;
    Ok(ExitCode::SUCCESS)
}
