//! The order-api binary; the service itself is the `order_api` library.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    if std::env::args().nth(1).as_deref() == Some("token") {
        let env = catga_core::config::Env::from_process();
        return order_api::auth::token::command(std::env::args_os().skip(1), &env);
    }
    catga_core::service::main(
        "order-api",
        order_api::Settings::from_env,
        |settings| &settings.common,
        order_api::run,
    )
    .await
}
