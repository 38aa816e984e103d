//! The idempotency store contract: what `RedisIdempotencyStore` (Lua, Redis'
//! clock) and `MemoryIdempotencyStore` (tokio's clock) both promise.
//!
//! Durations are short so the Redis run waits in real time for a few seconds;
//! the memory run waits in paused time, which costs nothing.

use std::time::Duration;

use catga_core::idempotency::{
    Claim, IdempotencyStore, MemoryIdempotencyStore, RedisIdempotencyStore, Terms,
};
use catga_tests::Redis;
use tokio::time::sleep;

const PREFIX: &str = "contract:idem:";
const LEASE: Duration = Duration::from_millis(500);
const TTL: Duration = Duration::from_secs(60);
const SHORT_TTL: Duration = Duration::from_millis(1500);
/// Past a deadline by this much, it has certainly passed.
const MARGIN: Duration = Duration::from_millis(150);
const TERMS: Terms = Terms {
    lease: LEASE,
    ttl: TTL,
};
const SHORT: Terms = Terms {
    lease: LEASE,
    ttl: SHORT_TTL,
};

#[tokio::test(start_paused = true)]
async fn memory_idempotency_store_keeps_the_contract() {
    idempotency_store_contract(&MemoryIdempotencyStore::new()).await;
}

#[tokio::test]
async fn redis_idempotency_store_keeps_the_contract() {
    let redis = Redis::start().await;
    let conn = crate::redis_connection(&redis);
    idempotency_store_contract(&RedisIdempotencyStore::new(conn.clone(), PREFIX)).await;

    // Beyond the contract, what only Redis can show: completing or abandoning
    // a key nobody holds leaves no key behind (it would never expire).
    let store = RedisIdempotencyStore::new(conn.clone(), PREFIX);
    store
        .complete("stray-complete", b"x", TTL)
        .await
        .expect("complete");
    store.abandon("stray-abandon").await.expect("abandon");
    for key in ["stray-complete", "stray-abandon"] {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("{PREFIX}{key}"))
            .query_async(&mut conn.clone())
            .await
            .expect("EXISTS");
        assert!(!exists, "{key} left a record behind");
    }
}

/// Runs every rule against `store`, which must be empty.
pub async fn idempotency_store_contract(store: &dyn IdempotencyStore) {
    a_claim_is_exclusive_while_its_lease_lives(store).await;
    an_abandoned_claim_is_taken_over_with_its_resource_id(store).await;
    a_lapsed_lease_is_taken_over_with_its_resource_id(store).await;
    a_completed_record_replays_its_outcome_to_the_same_request_only(store).await;
    a_record_lives_its_whole_ttl_then_is_gone(store).await;
    completing_renews_the_ttl(store).await;
    completing_or_abandoning_a_key_nobody_holds_creates_nothing(store).await;
}

async fn claim(
    store: &dyn IdempotencyStore,
    key: &str,
    fingerprint: &str,
    resource: &str,
) -> Claim {
    claim_on(store, key, fingerprint, resource, TERMS).await
}

async fn claim_on(
    store: &dyn IdempotencyStore,
    key: &str,
    fingerprint: &str,
    resource: &str,
    terms: Terms,
) -> Claim {
    store
        .claim(key, fingerprint, resource, terms)
        .await
        .unwrap_or_else(|err| panic!("claim {key}: {err}"))
}

fn acquired(resource_id: &str) -> Claim {
    Claim::Acquired {
        resource_id: resource_id.to_owned(),
    }
}

fn completed(outcome: &[u8]) -> Claim {
    Claim::Completed {
        outcome: outcome.to_vec(),
    }
}

async fn a_claim_is_exclusive_while_its_lease_lives(store: &dyn IdempotencyStore) {
    assert_eq!(claim(store, "exclusive", "fp", "r1").await, acquired("r1"));
    assert_eq!(claim(store, "exclusive", "fp", "r2").await, Claim::InFlight);
    assert_eq!(
        claim(store, "exclusive", "other", "r2").await,
        Claim::Mismatch
    );
}

async fn an_abandoned_claim_is_taken_over_with_its_resource_id(store: &dyn IdempotencyStore) {
    assert_eq!(claim(store, "abandoned", "fp", "r1").await, acquired("r1"));
    store.abandon("abandoned").await.expect("abandon");
    // A crashed claimant: the retry takes over with the first resource id.
    assert_eq!(claim(store, "abandoned", "fp", "r3").await, acquired("r1"));
    // Taking over starts a new lease.
    assert_eq!(claim(store, "abandoned", "fp", "r4").await, Claim::InFlight);
    assert_eq!(
        claim(store, "abandoned", "other", "r4").await,
        Claim::Mismatch
    );
}

async fn a_lapsed_lease_is_taken_over_with_its_resource_id(store: &dyn IdempotencyStore) {
    assert_eq!(claim(store, "lapsed", "fp", "a").await, acquired("a"));
    sleep(LEASE + MARGIN).await;
    assert_eq!(claim(store, "lapsed", "fp", "b").await, acquired("a"));
    assert_eq!(claim(store, "lapsed", "fp", "c").await, Claim::InFlight);
}

async fn a_completed_record_replays_its_outcome_to_the_same_request_only(
    store: &dyn IdempotencyStore,
) {
    assert_eq!(claim(store, "done", "fp", "r1").await, acquired("r1"));
    store
        .complete("done", b"{\"status\":202}", TTL)
        .await
        .expect("complete");
    assert_eq!(
        claim(store, "done", "fp", "r2").await,
        completed(b"{\"status\":202}")
    );
    assert_eq!(claim(store, "done", "other", "r2").await, Claim::Mismatch);
    // Neither abandoning nor the lease running out reopens a completed record.
    store.abandon("done").await.expect("abandon");
    sleep(LEASE + MARGIN).await;
    assert_eq!(
        claim(store, "done", "fp", "r3").await,
        completed(b"{\"status\":202}")
    );
    // An empty outcome (notification-service's) is an outcome too.
    assert_eq!(claim(store, "done-empty", "fp", "r1").await, acquired("r1"));
    store
        .complete("done-empty", b"", TTL)
        .await
        .expect("complete");
    assert_eq!(claim(store, "done-empty", "fp", "r2").await, completed(b""));
}

async fn a_record_lives_its_whole_ttl_then_is_gone(store: &dyn IdempotencyStore) {
    assert_eq!(
        claim_on(store, "expiring", "fp", "r1", SHORT).await,
        acquired("r1")
    );
    // Most of the TTL (more than a whole second: no rounding to seconds).
    sleep(SHORT_TTL - Duration::from_millis(300)).await;
    assert_eq!(
        claim_on(store, "expiring", "other", "r2", SHORT).await,
        Claim::Mismatch
    );
    sleep(Duration::from_millis(300) + MARGIN).await;
    // Gone: a new claim starts afresh, whatever its request.
    assert_eq!(
        claim(store, "expiring", "other", "r2").await,
        acquired("r2")
    );

    assert_eq!(
        claim_on(store, "expiring-done", "fp", "r1", SHORT).await,
        acquired("r1")
    );
    store
        .complete("expiring-done", b"x", SHORT_TTL)
        .await
        .expect("complete");
    sleep(SHORT_TTL + MARGIN).await;
    assert_eq!(
        claim(store, "expiring-done", "fp", "r9").await,
        acquired("r9")
    );
}

async fn completing_renews_the_ttl(store: &dyn IdempotencyStore) {
    assert_eq!(
        claim_on(store, "renewed", "fp", "r1", SHORT).await,
        acquired("r1")
    );
    sleep(SHORT_TTL / 2).await;
    store
        .complete("renewed", b"x", TTL)
        .await
        .expect("complete");
    sleep(SHORT_TTL / 2 + MARGIN).await;
    assert_eq!(claim(store, "renewed", "fp", "r2").await, completed(b"x"));
}

async fn completing_or_abandoning_a_key_nobody_holds_creates_nothing(store: &dyn IdempotencyStore) {
    store.complete("never", b"x", TTL).await.expect("complete");
    assert_eq!(claim(store, "never", "fp", "r1").await, acquired("r1"));
    store.abandon("never-2").await.expect("abandon");
    assert_eq!(claim(store, "never-2", "fp", "r1").await, acquired("r1"));
    // A claim that outlived its record: completing it brings nothing back.
    assert_eq!(
        claim_on(store, "outlived", "fp", "r1", SHORT).await,
        acquired("r1")
    );
    sleep(SHORT_TTL + MARGIN).await;
    store
        .complete("outlived", b"x", TTL)
        .await
        .expect("complete");
    assert_eq!(claim(store, "outlived", "fp", "r2").await, acquired("r2"));
}
