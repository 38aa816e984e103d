//! What an order costs the servers in work items: Redis commands (from
//! `INFO commandstats`) and NATS messages (from nats-server's monitoring
//! endpoint `/varz`), read before and after a phase.

use std::collections::BTreeMap;

use anyhow::Context;

/// The servers' counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Calls per Redis command, as `INFO commandstats` names them (`evalsha`, `wait`, …).
    pub redis: BTreeMap<String, u64>,
    /// Messages nats-server received from clients (publishes, pull requests, acks).
    pub nats_in: u64,
    /// Messages nats-server delivered to clients (deliveries, replies, acks' answers).
    pub nats_out: u64,
}

/// Where to read the counters.
#[derive(Debug, Clone)]
pub struct Sources {
    pub redis_port: u16,
    pub nats_monitor_port: u16,
}

impl Sources {
    pub async fn read(&self) -> anyhow::Result<Counters> {
        let redis = redis_commandstats(self.redis_port).await?;
        let varz: serde_json::Value =
            reqwest::get(format!("http://127.0.0.1:{}/varz", self.nats_monitor_port))
                .await
                .context("nats-server /varz")?
                .json()
                .await
                .context("nats-server /varz JSON")?;
        let field = |name: &str| varz[name].as_u64().unwrap_or(0);
        Ok(Counters {
            redis,
            nats_in: field("in_msgs"),
            nats_out: field("out_msgs"),
        })
    }
}

/// `INFO commandstats` of the Redis server on `port`: calls per command.
async fn redis_commandstats(port: u16) -> anyhow::Result<BTreeMap<String, u64>> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .context("connect to Redis for INFO")?;
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(&mut conn)
        .await
        .context("INFO commandstats")?;
    Ok(parse_commandstats(&info))
}

/// `cmdstat_evalsha:calls=12,usec=…` lines → `evalsha` → 12.
fn parse_commandstats(info: &str) -> BTreeMap<String, u64> {
    info.lines()
        .filter_map(|line| {
            let (name, stats) = line.strip_prefix("cmdstat_")?.split_once(':')?;
            let calls = stats
                .split(',')
                .find_map(|field| field.strip_prefix("calls="))?
                .parse()
                .ok()?;
            Some((name.to_owned(), calls))
        })
        .collect()
}

/// Work per order between two readings, net of `background` (the same
/// readings over a window without orders, scaled to this one's length).
#[derive(Debug, Clone, Default)]
pub struct PerOrder {
    /// Redis commands per order, by command, largest first.
    pub redis: Vec<(String, f64)>,
    pub nats_in: f64,
    pub nats_out: f64,
}

impl PerOrder {
    pub fn redis_total(&self) -> f64 {
        self.redis.iter().map(|(_, n)| n).sum()
    }

    pub fn nats_total(&self) -> f64 {
        self.nats_in + self.nats_out
    }
}

/// `after − before`, counter by counter.
pub fn delta(before: &Counters, after: &Counters) -> Counters {
    Counters {
        redis: after
            .redis
            .iter()
            .map(|(name, calls)| {
                let was = before.redis.get(name).copied().unwrap_or(0);
                (name.clone(), calls.saturating_sub(was))
            })
            .filter(|(_, calls)| *calls > 0)
            .collect(),
        nats_in: after.nats_in.saturating_sub(before.nats_in),
        nats_out: after.nats_out.saturating_sub(before.nats_out),
    }
}

/// `work` spread over `orders`, less `background` (what the same window
/// costs with no orders: timers, health checks, expired pulls).
pub fn per_order(work: &Counters, background: Option<&Counters>, orders: u64) -> PerOrder {
    let orders = orders.max(1) as f64;
    let less = |total: u64, idle: u64| total.saturating_sub(idle) as f64 / orders;
    let idle_redis = |name: &str| background.and_then(|b| b.redis.get(name).copied());
    let mut redis: Vec<(String, f64)> = work
        .redis
        .iter()
        .map(|(name, calls)| (name.clone(), less(*calls, idle_redis(name).unwrap_or(0))))
        .filter(|(_, n)| *n >= 0.005)
        .collect();
    redis.sort_by(|a, b| b.1.total_cmp(&a.1));
    PerOrder {
        redis,
        nats_in: less(work.nats_in, background.map_or(0, |b| b.nats_in)),
        nats_out: less(work.nats_out, background.map_or(0, |b| b.nats_out)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commandstats_are_read_per_command() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=340,usec_per_call=28.33,rejected_calls=0,failed_calls=0\r\ncmdstat_wait:calls=3,usec=1\r\n";
        let stats = parse_commandstats(info);
        assert_eq!(stats.get("evalsha"), Some(&12));
        assert_eq!(stats.get("wait"), Some(&3));
        let before = Counters::default();
        let after = Counters {
            redis: stats,
            nats_in: 10,
            nats_out: 4,
        };
        let per = per_order(&delta(&before, &after), None, 2);
        assert_eq!(per.redis_total(), 7.5);
        assert_eq!(per.nats_total(), 7.0);
    }
}
