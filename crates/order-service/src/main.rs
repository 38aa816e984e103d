//! The order-service binary; the service itself is the `order_service` library.

/// mimalloc: allocation was a quarter of every order's instructions with
/// glibc's malloc (BENCHMARKS.md, "Issue 16", with its resident memory).
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
