//! The order-service binary; the service itself is the `order_service` library.

/// mimalloc: a fraction of glibc's instructions per allocation, at no
/// cost in resident memory (BENCHMARKS.md, "What profiling found").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
