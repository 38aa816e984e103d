//! The order-service binary; the service itself is the `order_service` library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    catga_core::service::main(
        "order-service",
        order_service::Settings::from_env,
        |settings| &settings.common,
        order_service::run,
    )
    .await
}
