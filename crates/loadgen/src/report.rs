//! What a run measured: HDR latency histograms, counts and failures by kind,
//! summed up for people (text) or programs (JSON).

use std::{collections::BTreeMap, fmt, time::Duration};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// Latencies are recorded in microseconds, from 1 µs to 10 minutes, with three
/// significant figures (0.1% error at any magnitude).
const HIGHEST_MICROS: u64 = 600_000_000;
const SIGNIFICANT_FIGURES: u8 = 3;

/// One latency distribution.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    pub fn new() -> Self {
        // The bounds are constants that hdrhistogram accepts; no input reaches this.
        let histogram = Histogram::new_with_bounds(1, HIGHEST_MICROS, SIGNIFICANT_FIGURES)
            .expect("constant histogram bounds are valid");
        Self(histogram)
    }

    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Adds another distribution's counts (same bounds, so nothing is lost).
    pub fn add(&mut self, other: &Latencies) {
        if self.0.add(&other.0).is_err() {
            // Unreachable with equal bounds; say so rather than skew silently.
            eprintln!("latency histograms could not be merged");
        }
    }

    pub fn len(&self) -> u64 {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.0.len(),
            mean_ms: self.0.mean() / 1000.0,
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Percentiles of one distribution, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl LatencySummary {
    const HEADER: &str = "           p50        p90        p99      p99.9        max";

    fn row(&self, label: &str) -> String {
        format!(
            "{label:<12}{:>8.2} ms{:>8.2} ms{:>8.2} ms{:>8.2} ms{:>8.2} ms",
            self.p50_ms, self.p90_ms, self.p99_ms, self.p999_ms, self.max_ms
        )
    }
}

/// How the load was applied.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum LoadShape {
    /// Open loop: requests start on schedule whatever the answers do.
    FixedRate { per_second: f64 },
    /// Closed loop: each client starts its next request when the last is done.
    Concurrency { clients: usize },
}

impl fmt::Display for LoadShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadShape::FixedRate { per_second } => write!(f, "fixed rate {per_second:.0}/s"),
            LoadShape::Concurrency { clients } => write!(f, "closed loop, {clients} clients"),
        }
    }
}

/// The result of an order-api run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub target: String,
    pub load: LoadShape,
    /// Seconds spent starting orders.
    pub duration_s: f64,
    /// Seconds after that until the last order followed was final.
    pub drain_s: f64,
    pub sent: u64,
    pub accepted: u64,
    /// Orders seen in a final state (Confirmed, Rejected or Cancelled).
    pub completed: u64,
    pub final_states: BTreeMap<String, u64>,
    /// Failed requests and unfinished orders, by kind.
    pub errors: BTreeMap<String, u64>,
    pub accepted_per_s: f64,
    /// Final orders per second, over the whole run including the drain.
    pub completed_per_s: f64,
    /// The GETs spent following orders.
    pub follow_requests: u64,
    /// POST → 202, from the moment the request was due (so a stalled
    /// server's queueing counts against it).
    pub acceptance: LatencySummary,
    /// POST → the order's final state, `None` when orders were not followed.
    pub end_to_end: Option<LatencySummary>,
}

impl Summary {
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} against {}: {:.1} s (+{:.1} s to finish)",
            self.load, self.target, self.duration_s, self.drain_s
        )?;
        writeln!(
            f,
            "  sent {}   accepted {} ({:.1}/s)   completed {} ({:.1}/s)",
            self.sent, self.accepted, self.accepted_per_s, self.completed, self.completed_per_s
        )?;
        if !self.final_states.is_empty() {
            writeln!(f, "  final states: {}", counts(&self.final_states))?;
        }
        let errors = if self.errors.is_empty() {
            "none".to_owned()
        } else {
            counts(&self.errors)
        };
        writeln!(f, "  errors: {errors}")?;
        writeln!(f, "{}", LatencySummary::HEADER)?;
        writeln!(f, "{}", self.acceptance.row("acceptance"))?;
        if let Some(end_to_end) = &self.end_to_end {
            writeln!(f, "{}", end_to_end.row("end to end"))?;
            let per_order = self.follow_requests as f64 / self.accepted.max(1) as f64;
            writeln!(
                f,
                "  follow-up GETs: {} ({per_order:.1} per order)",
                self.follow_requests
            )?;
        }
        Ok(())
    }
}

/// The result of a baseline: one primitive operation as fast as it goes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BaselineSummary {
    pub name: String,
    pub concurrency: usize,
    pub duration_s: f64,
    pub operations: u64,
    pub errors: BTreeMap<String, u64>,
    pub ops_per_s: f64,
    pub latency: LatencySummary,
}

impl fmt::Display for BaselineSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{}: {} operations in {:.1} s with {} in flight: {:.1}/s",
            self.name, self.operations, self.duration_s, self.concurrency, self.ops_per_s
        )?;
        if !self.errors.is_empty() {
            writeln!(f, "  errors: {}", counts(&self.errors))?;
        }
        writeln!(f, "{}", LatencySummary::HEADER)?;
        writeln!(f, "{}", self.latency.row("latency"))
    }
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    map.iter()
        .map(|(kind, n)| format!("{kind}: {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_recorded_values() {
        let mut latencies = Latencies::new();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn an_absurd_latency_saturates_instead_of_failing() {
        let mut latencies = Latencies::new();
        latencies.record(Duration::from_secs(3600));
        assert_eq!(latencies.len(), 1);
        assert!(latencies.summary().max_ms >= 599_000.0);
    }
}
