//! Idempotency records: "do this at most once per key", with a lease so a
//! crashed worker's claim can be taken over.
//!
//! One primitive serves two places: HTTP `Idempotency-Key` handling in
//! order-api (IETF httpapi idempotency-key draft semantics) and per-event
//! delivery in notification-service.
//!
//! A record is claimed (in flight, with a lease), then completed (with the
//! response to replay) or abandoned (lease ends now, the resource id is kept,
//! so a retry reuses it and downstream deduplication on that id still holds).

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use redis::{Script, aio::ConnectionManager};
use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    pub body: String,
}

/// The result of claiming a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller owns the key now; it must use `resource_id` (the one it
    /// proposed, or the one a crashed earlier claimant chose).
    Acquired { resource_id: String },
    /// Another claimant holds a live lease.
    InFlight,
    /// The key was used with a different request.
    Mismatch,
    /// Done before: replay this.
    Completed(StoredResponse),
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request identified by `fingerprint`.
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        resource_id: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Claim, StoreError>;

    /// Marks `key` done with `response`, kept for `ttl`.
    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// Ends the lease now so a retry can take over immediately.
    async fn abandon(&self, key: &str) -> Result<(), StoreError>;
}

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: record   ARGV: fingerprint, resourceId, leaseMs, ttlSeconds
-- Redis' clock, not the callers', decides whether a lease has run out.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = redis.call('HMGET', KEYS[1], 'fp', 'state', 'lease', 'resource', 'response')
if not rec[1] then
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'inflight', 'lease', now + tonumber(ARGV[3]), 'resource', ARGV[2])
  redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
  return {'acquired', ARGV[2]}
end
if rec[1] ~= ARGV[1] then return {'mismatch', ''} end
if rec[2] == 'done' then return {'completed', rec[5]} end
if tonumber(rec[3]) > now then return {'inflight', ''} end
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[3]))
return {'acquired', rec[4]}",
    )
});

static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: record   ARGV: response, ttlSeconds
redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1",
    )
});

/// Records in Redis, under a key prefix.
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    conn: ConnectionManager,
    prefix: &'static str,
}

impl RedisIdempotencyStore {
    pub fn new(conn: ConnectionManager, prefix: &'static str) -> Self {
        Self { conn, prefix }
    }

    fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait]
impl IdempotencyStore for RedisIdempotencyStore {
    #[tracing::instrument(skip_all, fields(otel.name = "redis idempotency claim", otel.kind = "client", db.system.name = "redis"))]
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        resource_id: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let (kind, value): (String, String) = CLAIM
            .key(self.key(key))
            .arg(fingerprint)
            .arg(resource_id)
            .arg(u64::try_from(lease.as_millis()).unwrap_or(u64::MAX))
            .arg(ttl.as_secs().max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        match kind.as_str() {
            "acquired" => Ok(Claim::Acquired { resource_id: value }),
            "inflight" => Ok(Claim::InFlight),
            "mismatch" => Ok(Claim::Mismatch),
            "completed" => serde_json::from_str(&value)
                .map(Claim::Completed)
                .map_err(|err| StoreError::Corrupt(format!("idempotency record {key}: {err}"))),
            other => Err(StoreError::Corrupt(format!("claim reply {other:?}"))),
        }
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis idempotency complete", otel.kind = "client", db.system.name = "redis"))]
    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let body =
            serde_json::to_string(response).map_err(|err| StoreError::Corrupt(err.to_string()))?;
        let _: i64 = COMPLETE
            .key(self.key(key))
            .arg(body)
            .arg(ttl.as_secs().max(1))
            .invoke_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis idempotency abandon", otel.kind = "client", db.system.name = "redis"))]
    async fn abandon(&self, key: &str) -> Result<(), StoreError> {
        let _: i64 = redis::cmd("HSET")
            .arg(self.key(key))
            .arg("lease")
            .arg(0)
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(())
    }
}

struct MemoryRecord {
    fingerprint: String,
    resource_id: String,
    lease_until: Instant,
    expires_at: Instant,
    response: Option<StoredResponse>,
}

#[derive(Default)]
struct MemoryRecords {
    records: HashMap<String, MemoryRecord>,
    swept_at: Option<Instant>,
}

/// How often the in-memory store drops expired records (lookups already
/// ignore them; the sweep only bounds memory).
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Records in process memory, for the embedded mode and tests.
#[derive(Clone, Default)]
pub struct MemoryIdempotencyStore {
    records: Arc<Mutex<MemoryRecords>>,
}

impl MemoryIdempotencyStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_records<T>(&self, f: impl FnOnce(&mut HashMap<String, MemoryRecord>) -> T) -> T {
        let mut guard = self
            .records
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let MemoryRecords { records, swept_at } = &mut *guard;
        let now = Instant::now();
        if swept_at.is_none_or(|at| now.duration_since(at) >= SWEEP_PERIOD) {
            records.retain(|_, record| record.expires_at > now);
            *swept_at = Some(now);
        }
        f(records)
    }
}

/// The record under `key` unless it has expired. Every lookup goes through
/// here, so an expired record acts as absent whether or not the periodic
/// sweep has removed it yet (as in Redis, where the key is gone).
fn live<'a>(
    records: &'a mut HashMap<String, MemoryRecord>,
    key: &str,
    now: Instant,
) -> Option<&'a mut MemoryRecord> {
    records
        .get_mut(key)
        .filter(|record| record.expires_at > now)
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotencyStore {
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        resource_id: &str,
        lease: Duration,
        ttl: Duration,
    ) -> Result<Claim, StoreError> {
        let now = Instant::now();
        Ok(self.with_records(|records| match live(records, key, now) {
            None => {
                records.insert(
                    key.to_owned(),
                    MemoryRecord {
                        fingerprint: fingerprint.to_owned(),
                        resource_id: resource_id.to_owned(),
                        lease_until: now + lease,
                        expires_at: now + ttl,
                        response: None,
                    },
                );
                Claim::Acquired {
                    resource_id: resource_id.to_owned(),
                }
            }
            Some(record) if record.fingerprint != fingerprint => Claim::Mismatch,
            Some(MemoryRecord {
                response: Some(response),
                ..
            }) => Claim::Completed(response.clone()),
            Some(record) if record.lease_until > now => Claim::InFlight,
            Some(record) => {
                record.lease_until = now + lease;
                Claim::Acquired {
                    resource_id: record.resource_id.clone(),
                }
            }
        }))
    }

    async fn complete(
        &self,
        key: &str,
        response: &StoredResponse,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        self.with_records(|records| {
            if let Some(record) = live(records, key, now) {
                record.response = Some(response.clone());
                record.expires_at = now + ttl;
            }
        });
        Ok(())
    }

    async fn abandon(&self, key: &str) -> Result<(), StoreError> {
        let now = Instant::now();
        self.with_records(|records| {
            if let Some(record) = live(records, key, now) {
                record.lease_until = now;
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_secs(30);
    const TTL: Duration = Duration::from_secs(60);

    #[tokio::test]
    async fn an_expired_record_is_gone() {
        let store = MemoryIdempotencyStore::new();
        let short = Duration::from_millis(20);
        store
            .claim("k", "fp", "r1", LEASE, short)
            .await
            .expect("ok");
        tokio::time::sleep(Duration::from_millis(40)).await;
        // Within the sweep period, yet expired: a new claim starts afresh.
        assert_eq!(
            store
                .claim("k", "other", "r2", LEASE, TTL)
                .await
                .expect("ok"),
            Claim::Acquired {
                resource_id: "r2".into()
            }
        );
    }

    #[tokio::test]
    async fn claim_complete_replay_and_takeover() {
        let store = MemoryIdempotencyStore::new();
        assert_eq!(
            store.claim("k", "fp", "r1", LEASE, TTL).await.expect("ok"),
            Claim::Acquired {
                resource_id: "r1".into()
            }
        );
        assert_eq!(
            store.claim("k", "fp", "r2", LEASE, TTL).await.expect("ok"),
            Claim::InFlight
        );
        assert_eq!(
            store
                .claim("k", "other", "r2", LEASE, TTL)
                .await
                .expect("ok"),
            Claim::Mismatch
        );
        // A crashed claimant: the retry takes over with the first resource id.
        store.abandon("k").await.expect("ok");
        assert_eq!(
            store.claim("k", "fp", "r3", LEASE, TTL).await.expect("ok"),
            Claim::Acquired {
                resource_id: "r1".into()
            }
        );
        let response = StoredResponse {
            status: 202,
            location: Some("/x".into()),
            body: "{}".into(),
        };
        store.complete("k", &response, TTL).await.expect("ok");
        assert_eq!(
            store.claim("k", "fp", "r4", LEASE, TTL).await.expect("ok"),
            Claim::Completed(response)
        );
    }
}
