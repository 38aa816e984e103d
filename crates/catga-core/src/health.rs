//! Health endpoints every service serves (docs/reliability.md, "Probes"):
//! `/health/live` (liveness: the process answers), `/health` (always 200,
//! with the state of every dependency) and `/health/ready` (readiness: 503
//! while draining; by default also while a dependency is unusable, but not for
//! a service that answers its clients itself during an outage, see
//! [`Health::ready_regardless_of_dependencies`]).

use std::{
    collections::BTreeMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::{contracts::metrics as names, error::chain, messaging::Broker, store::Ping};

/// Why a dependency is not usable; its whole chain of causes goes into the report.
pub type Unready = Box<dyn std::error::Error + Send + Sync>;

/// Longest a readiness check may take; a dependency slower than this is not usable.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// One dependency a service needs to do its work.
#[async_trait]
pub trait ReadinessCheck: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    async fn check(&self) -> Result<(), Unready>;
}

/// NATS: connected, and the streams exist.
pub struct BrokerCheck {
    pub broker: Arc<dyn Broker>,
    pub topology_ready: Arc<AtomicBool>,
}

#[async_trait]
impl ReadinessCheck for BrokerCheck {
    fn name(&self) -> &'static str {
        "nats"
    }

    async fn check(&self) -> Result<(), Unready> {
        if !self.broker.is_connected() {
            return Err("not connected".into());
        }
        if !self.topology_ready.load(Ordering::Acquire) {
            return Err("streams not set up yet".into());
        }
        Ok(())
    }
}

/// Redis: answers a PING.
pub struct StoreCheck {
    pub store: Arc<dyn Ping>,
}

#[async_trait]
impl ReadinessCheck for StoreCheck {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn check(&self) -> Result<(), Unready> {
        Ok(self.store.ping().await?)
    }
}

/// The readiness state of a service.
#[derive(Clone)]
pub struct Health {
    service: &'static str,
    checks: Arc<Vec<Box<dyn ReadinessCheck>>>,
    /// The shutdown token readiness follows, once [`Health::drain_on`] named it.
    shutdown: Arc<OnceLock<CancellationToken>>,
    /// Readiness ignores the dependency checks (they are still reported).
    process_only: Arc<AtomicBool>,
}

#[derive(Serialize)]
struct Report {
    status: &'static str,
    service: &'static str,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    checks: BTreeMap<&'static str, String>,
}

impl Health {
    pub fn new(service: &'static str, checks: Vec<Box<dyn ReadinessCheck>>) -> Self {
        Self {
            service,
            checks: Arc::new(checks),
            shutdown: Arc::new(OnceLock::new()),
            process_only: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Makes readiness (for every clone) mean "started and not draining": a
    /// dependency outage then does not take every replica out of the load
    /// balancer at once; the service answers what it cannot serve with 503 +
    /// `Retry-After` itself. Dependencies stay visible in `/health` and
    /// `catga_dependency_up`.
    pub fn ready_regardless_of_dependencies(&self) {
        self.process_only.store(true, Ordering::Release);
    }

    /// Makes readiness answer 503 from the instant `shutdown` fires, with no
    /// task in between: `shutdown` is then the token on which the service
    /// stops taking work, after load balancers were told to stop sending it.
    /// Only the first token given is followed.
    pub fn drain_on(&self, shutdown: &CancellationToken) {
        let _ = self.shutdown.set(shutdown.clone());
    }

    /// Whether the service is shutting down (readiness answers 503).
    pub fn is_draining(&self) -> bool {
        self.shutdown
            .get()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Runs every check, sets the gauges; whether the service is ready, and
    /// each check's outcome.
    pub async fn readiness(&self) -> (bool, BTreeMap<&'static str, String>) {
        let (ready, all_up, results) = self.run_checks().await;
        let ready = ready && (all_up || self.process_only.load(Ordering::Acquire));
        metrics::gauge!(names::READY, "service" => self.service).set(if ready { 1.0 } else { 0.0 });
        (ready, results)
    }

    /// Not draining; every dependency up; the outcomes.
    async fn run_checks(&self) -> (bool, bool, BTreeMap<&'static str, String>) {
        let draining = self.is_draining();
        let mut all_up = true;
        let mut results = BTreeMap::new();
        if draining {
            results.insert("shutdown", "draining".to_owned());
        }
        let outcomes = futures::future::join_all(self.checks.iter().map(|check| async move {
            let outcome = match tokio::time::timeout(CHECK_TIMEOUT, check.check()).await {
                Ok(outcome) => outcome.map_err(|err| chain(&*err).to_string()),
                Err(_) => Err(format!("no answer within {CHECK_TIMEOUT:?}")),
            };
            (check.name(), outcome)
        }))
        .await;
        for (name, outcome) in outcomes {
            let up = outcome.is_ok();
            metrics::gauge!(names::DEPENDENCY_UP, "service" => self.service, "dependency" => name)
                .set(if up { 1.0 } else { 0.0 });
            all_up &= up;
            results.insert(name, outcome.map_or_else(|err| err, |()| "ok".to_owned()));
        }
        (!draining, all_up, results)
    }
}

/// `/health`, `/health/live` and `/health/ready`.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/health", get(dependencies))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(health)
}

async fn live(State(health): State<Health>) -> impl IntoResponse {
    Json(Report {
        status: "ok",
        service: health.service,
        checks: BTreeMap::new(),
    })
}

/// Always 200 while the process answers: `ok`, or `degraded` with the
/// dependencies that are down.
async fn dependencies(State(health): State<Health>) -> impl IntoResponse {
    let (_, all_up, checks) = health.run_checks().await;
    Json(Report {
        status: if all_up { "ok" } else { "degraded" },
        service: health.service,
        checks,
    })
}

async fn ready(State(health): State<Health>) -> impl IntoResponse {
    let (ready, checks) = health.readiness().await;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Report {
            status: if ready { "ready" } else { "not_ready" },
            service: health.service,
            checks,
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readiness_turns_503_the_instant_shutdown_fires() {
        let health = Health::new("svc", Vec::new());
        let shutdown = CancellationToken::new();
        health.drain_on(&shutdown);
        assert!(health.readiness().await.0);
        shutdown.cancel();
        let (ready, checks) = health.clone().readiness().await;
        assert!(!ready);
        assert_eq!(checks["shutdown"], "draining");
    }

    struct Down;

    #[async_trait]
    impl ReadinessCheck for Down {
        fn name(&self) -> &'static str {
            "redis"
        }
        async fn check(&self) -> Result<(), Unready> {
            Err("connection refused".into())
        }
    }

    #[tokio::test]
    async fn a_process_only_service_stays_ready_through_an_outage_but_shows_it() {
        let health = Health::new("svc", vec![Box::new(Down)]);
        assert!(
            !health.readiness().await.0,
            "by default a dependency gates readiness"
        );
        health.clone().ready_regardless_of_dependencies();
        let (ready, checks) = health.readiness().await;
        assert!(ready, "started and not draining");
        assert_eq!(checks["redis"], "connection refused");
        let (_, all_up, _) = health.run_checks().await;
        assert!(!all_up, "/health reports the outage");

        let shutdown = CancellationToken::new();
        health.drain_on(&shutdown);
        shutdown.cancel();
        assert!(
            !health.readiness().await.0,
            "draining still turns it unready"
        );
    }
}
