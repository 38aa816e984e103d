//! The notification-service binary; the service itself is the `notification_service` library.

/// mimalloc: a fraction of glibc's instructions per allocation, at no
/// cost in resident memory (BENCHMARKS.md, "What profiling found").
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
