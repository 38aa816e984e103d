//! Graceful shutdown: one token, cancelled on SIGTERM or Ctrl-C, that every
//! part of a service watches, and the background tasks that must end with it.

use std::{any::Any, future::Future, panic::AssertUnwindSafe, time::Duration};

use futures::FutureExt;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

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
    E: std::error::Error + 'static,
{
    loop {
        let outcome = tokio::select! {
            () = shutdown.cancelled() => return None,
            outcome = step() => outcome,
        };
        match outcome {
            Ok(value) => return Some(value),
            Err(err) => {
                tracing::warn!(error = %crate::error::chain(&err), "cannot {what} yet; retrying");
                tokio::select! {
                    () = shutdown.cancelled() => return None,
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Runs `work` to its end, cancelling `shutdown` when the process receives
/// SIGTERM or SIGINT (Ctrl-C) so that it winds down. The signal is awaited
/// here, beside `work`, not by a task of its own.
pub async fn until_signalled<T>(shutdown: &CancellationToken, work: impl Future<Output = T>) -> T {
    let mut work = std::pin::pin!(work);
    tokio::select! {
        output = &mut work => output,
        () = wait_for_signal() => {
            tracing::info!("shutdown signal received");
            shutdown.cancel();
            work.await
        }
    }
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

/// The tasks a service runs beside its main work (creating streams, refreshing
/// gauges, the ops server, forwarding exhausted messages). Every one is
/// tracked: a panic is logged with the task's name instead of vanishing with a
/// dropped `JoinHandle`, and [`BackgroundTasks::wait_until`] lets them finish within
/// the shutdown grace before the runtime drops them.
#[derive(Debug, Clone, Default)]
pub struct BackgroundTasks {
    tracker: TaskTracker,
}

impl BackgroundTasks {
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `task` in the background; a panic is logged as an error naming `name`.
    pub fn spawn(&self, name: &'static str, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(async move {
            if let Err(panic) = AssertUnwindSafe(task).catch_unwind().await {
                tracing::error!(
                    task = name,
                    panic = panic_message(&*panic),
                    "background task panicked"
                );
            }
        });
    }

    /// Runs `task` in the background and hands back its handle, for a task
    /// whose outcome the caller awaits (and whose panic it reports).
    pub fn spawn_joinable<T: Send + 'static>(
        &self,
        task: impl Future<Output = T> + Send + 'static,
    ) -> tokio::task::JoinHandle<T> {
        self.tracker.spawn(task)
    }

    /// Takes no more tasks and waits until every one has finished, at the
    /// latest until `grace_ends`; logs how many were still running then.
    pub async fn wait_until(&self, grace_ends: tokio::time::Instant) {
        self.tracker.close();
        if tokio::time::timeout_at(grace_ends, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                still_running = self.tracker.len(),
                "background tasks did not finish within the shutdown grace"
            );
        }
    }
}

/// The message a panic was raised with, when it has one.
pub(crate) fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&'static str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_logged_and_the_others_are_awaited() {
        // The test runtime has one thread: the tasks log here too.
        let (logs, _logging) = crate::telemetry::Lines::capture();
        let tasks = BackgroundTasks::new();
        let finished = CancellationToken::new();
        tasks.spawn("panics", async { panic!("boom") });
        tasks.spawn("finishes", {
            let finished = finished.clone();
            async move {
                tokio::task::yield_now().await;
                finished.cancel();
            }
        });
        tasks
            .wait_until(tokio::time::Instant::now() + Duration::from_secs(5))
            .await;
        assert!(
            finished.is_cancelled(),
            "wait returns after every task ended"
        );
        assert!(tasks.tracker.is_empty());
        let logged = logs.text();
        assert!(logged.contains("background task panicked"), "{logged}");
        assert!(logged.contains("task=\"panics\""), "{logged}");
        assert!(logged.contains("boom"), "{logged}");
    }

    #[tokio::test(start_paused = true)]
    async fn wait_gives_up_when_the_grace_ends() {
        let tasks = BackgroundTasks::new();
        tasks.spawn("never ends", std::future::pending());
        let started = tokio::time::Instant::now();
        tasks.wait_until(started + Duration::from_secs(3)).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(tasks.tracker.len(), 1);
    }

    #[test]
    fn panic_messages_are_read_from_both_payload_kinds() {
        assert_eq!(panic_message(&"static"), "static");
        assert_eq!(panic_message(&String::from("formatted")), "formatted");
        assert_eq!(panic_message(&7_u8), "(no message)");
    }
}
