//! The order-api binary; the service itself is the `order_api` library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    catga_core::service::main(
        "order-api",
        order_api::Settings::from_env,
        |settings| &settings.common,
        order_api::run,
    )
    .await
}
