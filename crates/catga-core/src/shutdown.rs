//! Graceful shutdown: one token, cancelled on SIGTERM or Ctrl-C, that every
//! part of a service watches.

use std::{future::Future, time::Duration};

use tokio_util::sync::CancellationToken;

/// Retries `step` every second until it succeeds (its value) or `shutdown`
/// fires (`None`, also while a step is under way). Work that needs a
/// dependency (creating streams, seeding the catalog, binding a consumer)
/// runs this way, so a service starts while NATS or Redis is still away.
pub async fn retry_until_ok<T, E, F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    mut step: F,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::fmt::Display,
{
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return None,
            outcome = step() => outcome,
        };
        match outcome {
            Ok(value) => return Some(value),
            Err(err) => {
                tracing::warn!(error = %err, "cannot {what} yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// A token cancelled when the process receives SIGTERM or SIGINT (Ctrl-C).
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        cancel.cancel();
    });
    token
}

/// Waits for SIGTERM (what Kubernetes sends) or SIGINT.
pub async fn wait_for_signal() {
    let ctrl_c = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(error = %err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
