//! The notification-service binary; the service itself is the `notification_service` library.

/// mimalloc: allocation was a quarter of every order's instructions with
/// glibc's malloc (BENCHMARKS.md, "Issue 16", with its resident memory).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
