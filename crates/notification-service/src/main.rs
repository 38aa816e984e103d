//! The notification-service binary; the service itself is the `notification_service` library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    catga_core::service::main(
        "notification-service",
        notification_service::Settings::from_env,
        |settings| &settings.common,
        notification_service::run,
    )
    .await
}
