//! The benchmark's report: one Markdown section, headed by the commit and the
//! machine, so runs can be compared across commits.

use std::{fmt::Write, process::Command};

use loadgen::report::{LatencySummary, Summary};

use crate::{
    profile::ServiceProfile,
    sample::MACHINE,
    system::{DEPENDENCIES, HALF, Results, SERVICES},
    traffic::PerOrder,
};

/// Issue 16's targets (reported, never asserted).
const E2E_SHARE_OF_ECHO: f64 = 0.10;
const P99_RATIO_TO_ECHO: f64 = 3.0;
const RSS_LOADED_MIB: f64 = 30.0;
const RSS_IDLE_MIB: f64 = 15.0;
const STARTUP_MS: f64 = 250.0;

fn output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn proc_field(file: &str, key: &str) -> Option<String> {
    std::fs::read_to_string(file)
        .ok()?
        .lines()
        .find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == key).then(|| v.trim().to_owned())
        })
}

fn machine() -> String {
    let cpu = proc_field("/proc/cpuinfo", "model name").unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let memory = proc_field("/proc/meminfo", "MemTotal")
        .and_then(|kb| kb.trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or_else(
            || "? GiB".to_owned(),
            |kb| format!("{:.0} GiB", kb / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "?".to_owned(), |k| k.trim().to_owned());
    format!("{cpu}, {cores} cores, {memory}, Linux {kernel}")
}

fn commit() -> String {
    let hash = output("git", &["rev-parse", "--short=12", "HEAD"]);
    let changes = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .map(|o| !o.stdout.is_empty())
        .unwrap_or(false);
    if changes {
        format!("{hash} + uncommitted changes")
    } else {
        hash
    }
}

fn ms(value: f64) -> String {
    if value >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    }
}

fn latencies(l: &LatencySummary) -> String {
    format!(
        "{} / {} / {} / {}",
        ms(l.p50_ms),
        ms(l.p99_ms),
        ms(l.p999_ms),
        ms(l.max_ms)
    )
}

fn unfinished(summary: &Summary) -> u64 {
    summary
        .errors
        .iter()
        .filter(|(kind, _)| kind.starts_with("not final"))
        .map(|(_, n)| n)
        .sum()
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

pub fn markdown(r: &Results) -> String {
    let mut out = String::new();
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let _ = writeln!(out, "### Run of {date} at {}", commit());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "Machine: {}. {}; {}.",
        machine(),
        output("nats-server", &["--version"]),
        output("redis-server", &["--version"])
            .split(" sha=")
            .next()
            .unwrap_or("redis-server")
    );
    let _ = writeln!(
        out,
        "Each phase {:.0} s; baselines with {} operations (or echo clients) in flight, on servers of their own; the services with `Redis__WaitReplicas={}`. Latencies p50 / p99 / p99.9 / max in ms.",
        r.duration.as_secs_f64(),
        r.concurrency,
        r.wait_replicas
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| baseline | per second | latency |");
    let _ = writeln!(out, "| --- | ---: | --- |");
    let _ = writeln!(
        out,
        "| axum echo, loadgen closed loop (HTTP ceiling) | {:.0} | {} |",
        r.echo_max.accepted_per_s,
        latencies(&r.echo_max.acceptance)
    );
    for baseline in [&r.jetstream, &r.redis] {
        let _ = writeln!(
            out,
            "| {} | {:.0} | {} |",
            baseline.name,
            baseline.ops_per_s,
            latencies(&baseline.latency)
        );
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| system load | accepted/s | completed/s | errors | unfinished | POST → 202 | POST → final | GETs per order |"
    );
    let _ = writeln!(
        out,
        "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |"
    );
    for phase in &r.phases {
        let s = &phase.summary;
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.0} | {} | {} | {} | {} | {:.1} |",
            phase.label,
            s.accepted_per_s,
            s.completed_per_s,
            s.error_count(),
            unfinished(s),
            latencies(&s.acceptance),
            s.end_to_end
                .as_ref()
                .map_or_else(|| "–".to_owned(), latencies),
            s.follow_requests as f64 / s.accepted.max(1) as f64
        );
    }
    let _ = writeln!(
        out,
        "| axum echo at the 50% rate | {:.0} | – | {} | – | {} | – | – |",
        r.echo_at_half.accepted_per_s,
        r.echo_at_half.error_count(),
        latencies(&r.echo_at_half.acceptance)
    );
    let _ = writeln!(out);
    let phases: Vec<(&str, &PerOrder)> = r
        .phases
        .iter()
        .map(|p| (p.label.as_str(), &p.traffic))
        .collect();
    traffic_tables(&mut out, "system load", &phases);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "| service | start → ready | RSS idle | CPU idle | RSS max under load | CPU at maximum |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: | ---: | ---: | ---: |");
    let loaded_rss = |service: &str| {
        r.phases
            .iter()
            .filter_map(|p| p.usage.get(service))
            .map(|u| u.rss_max_mib)
            .fold(0.0, f64::max)
    };
    for &service in SERVICES.iter().chain(&DEPENDENCIES) {
        let start = r
            .startup_ms
            .iter()
            .find(|(name, _)| name == service)
            .map_or_else(|| "–".to_owned(), |(_, ms)| format!("{ms:.0} ms"));
        let idle = r.idle.get(service).copied().unwrap_or_default();
        let at_max = r
            .phases
            .first()
            .and_then(|p| p.usage.get(service))
            .copied()
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {service} | {start} | {:.1} MiB | {:.1}% | {:.1} MiB | {:.0}% |",
            idle.rss_end_mib,
            idle.cpu_percent,
            loaded_rss(service),
            at_max.cpu_percent
        );
    }
    let machine_at_max = r
        .phases
        .first()
        .and_then(|p| p.usage.get(MACHINE))
        .map_or(0.0, |u| u.cpu_percent);
    let _ = writeln!(
        out,
        "| whole machine (load generator included) | | | {:.0}% | | {machine_at_max:.0}% |",
        r.idle.get(MACHINE).map_or(0.0, |u| u.cpu_percent)
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "CPU is % of one core per process, % of all cores for the whole machine."
    );
    let _ = writeln!(out);

    // The targets.
    let max = r.phases.first().map(|p| &p.summary);
    let max_completed = max.map_or(0.0, |s| s.completed_per_s);
    let echo = r.echo_max.accepted_per_s;
    let half = r
        .phases
        .iter()
        .find(|p| p.fraction == Some(HALF))
        .map(|p| &p.summary);
    let half_p99 = half.map_or(f64::INFINITY, |s| s.acceptance.p99_ms);
    let echo_p99 = r.echo_at_half.acceptance.p99_ms;
    let clean = r.phases.iter().all(|p| p.summary.error_count() == 0);
    let worst_loaded = SERVICES.iter().map(|s| loaded_rss(s)).fold(0.0, f64::max);
    let worst_idle = SERVICES
        .iter()
        .filter_map(|s| r.idle.get(*s))
        .map(|u| u.rss_end_mib)
        .fold(0.0, f64::max);
    let slowest_start = r.startup_ms.iter().map(|(_, ms)| *ms).fold(0.0, f64::max);
    let _ = writeln!(out, "| target | goal | measured | |");
    let _ = writeln!(out, "| --- | --- | --- | --- |");
    let _ = writeln!(
        out,
        "| sustained end-to-end orders/s | ≥ 0.10 of echo = {:.0}/s | {max_completed:.0}/s ({:.0}% of echo) | {} |",
        echo * E2E_SHARE_OF_ECHO,
        max_completed / echo.max(f64::EPSILON) * 100.0,
        verdict(max_completed >= echo * E2E_SHARE_OF_ECHO)
    );
    let _ = writeln!(
        out,
        "| zero errors, zero lost orders | 0 | {} errors, {} unfinished | {} |",
        r.phases
            .iter()
            .map(|p| p.summary.error_count())
            .sum::<u64>(),
        r.phases.iter().map(|p| unfinished(&p.summary)).sum::<u64>(),
        verdict(clean)
    );
    let _ = writeln!(
        out,
        "| POST → 202 p99 at 50% | ≤ 3 × echo p99 at that rate = {} ms | {} ms | {} |",
        ms(echo_p99 * P99_RATIO_TO_ECHO),
        ms(half_p99),
        verdict(half_p99 <= echo_p99 * P99_RATIO_TO_ECHO)
    );
    let _ = writeln!(
        out,
        "| RSS per service under load | < {RSS_LOADED_MIB:.0} MiB | {worst_loaded:.1} MiB (largest) | {} |",
        verdict(worst_loaded < RSS_LOADED_MIB)
    );
    let _ = writeln!(
        out,
        "| RSS per service idle | < {RSS_IDLE_MIB:.0} MiB | {worst_idle:.1} MiB (largest) | {} |",
        verdict(worst_idle < RSS_IDLE_MIB)
    );
    let _ = writeln!(
        out,
        "| start-up to ready | < {STARTUP_MS:.0} ms | {slowest_start:.0} ms (slowest) | {} |",
        verdict(slowest_start < STARTUP_MS)
    );
    out
}

/// Redis commands and NATS messages per order, one row per `rows` entry,
/// then the commands by name for the first row.
fn traffic_tables(out: &mut String, what: &str, rows: &[(&str, &PerOrder)]) {
    let _ = writeln!(
        out,
        "| {what} | Redis commands per order | NATS messages per order (in + out) |"
    );
    let _ = writeln!(out, "| --- | ---: | ---: |");
    for (label, traffic) in rows {
        let _ = writeln!(
            out,
            "| {label} | {:.2} | {:.2} ({:.2} + {:.2}) |",
            traffic.redis_total(),
            traffic.nats_total(),
            traffic.nats_in,
            traffic.nats_out
        );
    }
    if let Some((label, traffic)) = rows.first() {
        let by_command: Vec<String> = traffic
            .redis
            .iter()
            .map(|(name, n)| format!("{name} {n:.2}"))
            .collect();
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "Redis commands per order by name ({label}): {}.",
            by_command.join(", ")
        );
    }
}

/// The profile's table.
pub fn profile_markdown(profiles: &[ServiceProfile]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "### Instructions per order at {}", commit());
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "callgrind, one run with no orders and one with {} (net of start-up and shutdown).",
        profiles.first().map_or(0, |p| p.orders)
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| service | instructions per order |");
    let _ = writeln!(out, "| --- | ---: |");
    for profile in profiles {
        let _ = writeln!(out, "| {} | {:.0} |", profile.service, profile.per_order());
    }
    let total: f64 = profiles.iter().map(ServiceProfile::per_order).sum();
    let _ = writeln!(out, "| all three | {total:.0} |");
    let _ = writeln!(out);
    // Last first: its run has order-api outside callgrind, the closest to a
    // real run (follow-up GETs per order depend on how fast orders finish).
    let rows: Vec<(String, &PerOrder)> = profiles
        .iter()
        .rev()
        .map(|p| {
            (
                format!("run with {} under callgrind", p.service),
                &p.traffic,
            )
        })
        .collect();
    let rows: Vec<(&str, &PerOrder)> = rows.iter().map(|(l, t)| (l.as_str(), *t)).collect();
    traffic_tables(&mut out, "run", &rows);
    out
}
