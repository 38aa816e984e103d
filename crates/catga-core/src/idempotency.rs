//! Idempotency records: "do this at most once per key", with a lease so a
//! crashed worker's claim can be taken over.
//!
//! One primitive serves two places: HTTP `Idempotency-Key` handling in
//! order-api (IETF httpapi idempotency-key draft semantics) and per-event
//! delivery in notification-service. What a completed record keeps is an
//! opaque outcome: order-api keeps the response it replays, notification-service
//! keeps nothing. Neither shape is this module's concern.
//!
//! A record is claimed (in flight, with a lease), then completed (with its
//! outcome) or abandoned (lease ends now, the resource id is kept, so a retry
//! reuses it and downstream deduplication on that id still holds).
//!
//! [`RedisIdempotencyStore`] is the production store, [`MemoryIdempotencyStore`]
//! its in-process twin; `tests/contracts/idempotency.rs` holds both to one
//! contract.

use std::{
    collections::HashMap,
    sync::{Arc, LazyLock, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use redis::Script;
use tokio::time::Instant;

use crate::{error::BoxError, store::RedisConnection};

/// An idempotency record could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum IdempotencyError {
    /// Redis could not be reached, did not answer in time, or refused the
    /// command; [`IdempotencyError::is_transient`] says which.
    #[error("idempotency store: Redis {}", .0.category())]
    Redis(#[source] redis::RedisError),
    #[error("idempotency record {key:?} cannot be read")]
    Corrupt {
        key: String,
        #[source]
        source: BoxError,
    },
    #[error("idempotency record {key:?}: unknown claim reply {reply:?}")]
    UnknownReply { key: String, reply: String },
}

impl IdempotencyError {
    /// Worth retrying: the store may answer later (the order store's rule for
    /// Redis errors). A record that cannot be read will not read better next
    /// time.
    pub fn is_transient(&self) -> bool {
        match self {
            IdempotencyError::Redis(err) => crate::store::redis_error_is_transient(err),
            IdempotencyError::Corrupt { .. } | IdempotencyError::UnknownReply { .. } => false,
        }
    }

    /// Redis refused the write for memory (`maxmemory` reached, `noeviction`).
    pub fn is_out_of_memory(&self) -> bool {
        matches!(self, IdempotencyError::Redis(err) if crate::store::redis_error_is_out_of_memory(err))
    }

    fn from_redis(key: &str, err: redis::RedisError) -> Self {
        if matches!(
            err.kind(),
            redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
        ) {
            IdempotencyError::Corrupt {
                key: key.to_owned(),
                source: err.into(),
            }
        } else {
            IdempotencyError::Redis(err)
        }
    }
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
    /// Done before: the outcome the claimant that completed it saved.
    Completed { outcome: Vec<u8> },
}

/// How long a claim holds and how long the record is remembered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    /// How long the claimant may work before another may take the key over.
    pub lease: Duration,
    /// How long the record lives from the claim (and again from completion).
    pub ttl: Duration,
}

#[async_trait]
pub trait IdempotencyStore: Send + Sync + 'static {
    /// Claims `key` for a request identified by `fingerprint`, proposing
    /// `resource_id` for what the request creates.
    async fn claim(
        &self,
        key: &str,
        fingerprint: &str,
        resource_id: &str,
        terms: Terms,
    ) -> Result<Claim, IdempotencyError>;

    /// Marks a live record `key` done with `outcome`, kept for `ttl`. A record
    /// that has expired meanwhile is not recreated.
    async fn complete(
        &self,
        key: &str,
        outcome: &[u8],
        ttl: Duration,
    ) -> Result<(), IdempotencyError>;

    /// Ends the lease now so a retry can take over immediately.
    async fn abandon(&self, key: &str) -> Result<(), IdempotencyError>;
}

fn millis(duration: Duration) -> u64 {
    // Rounded up: a positive TTL below a millisecond must not mean "expired".
    u64::try_from(duration.as_micros().div_ceil(1000)).unwrap_or(u64::MAX)
}

// The hash fields: fp (fingerprint), state (inflight|done), lease (ms, Redis
// clock), resource (resource id), response (the outcome; the name predates
// outcomes that are not HTTP responses and is kept for stored records).

static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: record   ARGV: fingerprint, resourceId, leaseMs, ttlMs
-- Redis' clock, not the callers', decides whether a lease has run out.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local rec = redis.call('HMGET', KEYS[1], 'fp', 'state', 'lease', 'resource', 'response')
if not rec[1] then
  redis.call('DEL', KEYS[1])
  redis.call('HSET', KEYS[1], 'fp', ARGV[1], 'state', 'inflight', 'lease', now + tonumber(ARGV[3]), 'resource', ARGV[2])
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]))
  return {'acquired', ARGV[2]}
end
if rec[1] ~= ARGV[1] then return {'mismatch', ''} end
if rec[2] == 'done' then return {'completed', rec[5] or ''} end
if tonumber(rec[3]) > now then return {'inflight', ''} end
redis.call('HSET', KEYS[1], 'lease', now + tonumber(ARGV[3]))
return {'acquired', rec[4]}",
    )
});

static COMPLETE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: record   ARGV: outcome, ttlMs
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'state', 'done', 'response', ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1",
    )
});

static ABANDON: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
-- KEYS: record
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'lease', 0)
return 1",
    )
});

/// Records in Redis, under a key prefix.
#[derive(Clone)]
pub struct RedisIdempotencyStore {
    conn: RedisConnection,
    /// For the outcome: it is answered (or a notification counts as sent)
    /// only once replicas hold it.
    replicated: RedisConnection,
    prefix: &'static str,
}

impl RedisIdempotencyStore {
    pub fn new(conn: RedisConnection, prefix: &'static str) -> Self {
        Self {
            replicated: conn.replicated(),
            conn,
            prefix,
        }
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
        terms: Terms,
    ) -> Result<Claim, IdempotencyError> {
        let (kind, value): (String, Vec<u8>) = CLAIM
            .key(self.key(key))
            .arg(fingerprint)
            .arg(resource_id)
            .arg(millis(terms.lease))
            .arg(millis(terms.ttl))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|err| IdempotencyError::from_redis(key, err))?;
        match kind.as_str() {
            "acquired" => String::from_utf8(value)
                .map(|resource_id| Claim::Acquired { resource_id })
                .map_err(|err| IdempotencyError::Corrupt {
                    key: key.to_owned(),
                    source: err.into(),
                }),
            "inflight" => Ok(Claim::InFlight),
            "mismatch" => Ok(Claim::Mismatch),
            "completed" => Ok(Claim::Completed { outcome: value }),
            _ => Err(IdempotencyError::UnknownReply {
                key: key.to_owned(),
                reply: kind,
            }),
        }
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis idempotency complete", otel.kind = "client", db.system.name = "redis"))]
    async fn complete(
        &self,
        key: &str,
        outcome: &[u8],
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let _: i64 = COMPLETE
            .key(self.key(key))
            .arg(outcome)
            .arg(millis(ttl))
            .invoke_async(&mut self.replicated.clone())
            .await
            .map_err(|err| IdempotencyError::from_redis(key, err))?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(otel.name = "redis idempotency abandon", otel.kind = "client", db.system.name = "redis"))]
    async fn abandon(&self, key: &str) -> Result<(), IdempotencyError> {
        let _: i64 = ABANDON
            .key(self.key(key))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(|err| IdempotencyError::from_redis(key, err))?;
        Ok(())
    }
}

struct MemoryRecord {
    fingerprint: String,
    resource_id: String,
    lease_until: Instant,
    expires_at: Instant,
    outcome: Option<Vec<u8>>,
}

#[derive(Default)]
struct MemoryRecords {
    records: HashMap<String, MemoryRecord>,
    swept_at: Option<Instant>,
}

/// How often the in-memory store drops expired records (lookups already
/// ignore them; the sweep only bounds memory).
const SWEEP_PERIOD: Duration = Duration::from_secs(1);

/// Records in process memory, for the embedded mode and tests. Time is
/// tokio's, so tests can run it under paused time.
#[derive(Clone, Default)]
pub struct MemoryIdempotencyStore {
    records: Arc<Mutex<MemoryRecords>>,
}

impl MemoryIdempotencyStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn with_records<T>(&self, f: impl FnOnce(&mut HashMap<String, MemoryRecord>) -> T) -> T {
        let mut guard = crate::lock(&self.records);
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
        terms: Terms,
    ) -> Result<Claim, IdempotencyError> {
        let now = Instant::now();
        Ok(self.with_records(|records| match live(records, key, now) {
            None => {
                records.insert(
                    key.to_owned(),
                    MemoryRecord {
                        fingerprint: fingerprint.to_owned(),
                        resource_id: resource_id.to_owned(),
                        lease_until: now + terms.lease,
                        expires_at: now + terms.ttl,
                        outcome: None,
                    },
                );
                Claim::Acquired {
                    resource_id: resource_id.to_owned(),
                }
            }
            Some(record) if record.fingerprint != fingerprint => Claim::Mismatch,
            Some(MemoryRecord {
                outcome: Some(outcome),
                ..
            }) => Claim::Completed {
                outcome: outcome.clone(),
            },
            Some(record) if record.lease_until > now => Claim::InFlight,
            Some(record) => {
                record.lease_until = now + terms.lease;
                Claim::Acquired {
                    resource_id: record.resource_id.clone(),
                }
            }
        }))
    }

    async fn complete(
        &self,
        key: &str,
        outcome: &[u8],
        ttl: Duration,
    ) -> Result<(), IdempotencyError> {
        let now = Instant::now();
        self.with_records(|records| {
            if let Some(record) = live(records, key, now) {
                record.outcome = Some(outcome.to_vec());
                record.expires_at = now + ttl;
            }
        });
        Ok(())
    }

    async fn abandon(&self, key: &str) -> Result<(), IdempotencyError> {
        let now = Instant::now();
        self.with_records(|records| {
            if let Some(record) = live(records, key, now) {
                record.lease_until = now;
            }
        });
        Ok(())
    }
}
