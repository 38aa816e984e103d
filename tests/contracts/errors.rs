//! `is_transient()` against real servers: a refusal or unreadable data is
//! not worth retrying, a server that went away is.

use std::time::Duration;

use bytes::Bytes;
use catga_core::{
    contracts::redis_keys,
    domain::OrderId,
    idempotency::{IdempotencyError, IdempotencyStore, RedisIdempotencyStore, Terms},
    messaging::{Broker, OutgoingMessage, Publisher},
    store::{Catalog, OrderQueries, Ping, StoreError},
};
use catga_tests::{Nats, Redis};

/// Long enough for a client to notice its server went away.
const NOTICE: Duration = Duration::from_secs(30);

#[tokio::test]
async fn redis_refusals_and_unreadable_data_are_permanent_an_absent_server_is_not() {
    let redis = Redis::start().await;
    let store = crate::redis_store(&redis);
    let mut raw = redis.connection().await;

    // WRONGTYPE: the product's key holds a string, not a hash.
    let _: () = redis::cmd("SET")
        .arg(format!("{}CT-STRING", redis_keys::PRODUCT_PREFIX))
        .arg("not a hash")
        .query_async(&mut raw)
        .await
        .expect("set");
    let err = store
        .products_by_id(&["CT-STRING"])
        .await
        .expect_err("WRONGTYPE");
    assert!(matches!(err, StoreError::Redis(_)), "{err:?}");
    assert!(!err.is_transient(), "{err:?}");

    // An order document that is not JSON.
    let order_id = OrderId::new();
    let _: () = redis::cmd("HSET")
        .arg(format!("{}{order_id}", redis_keys::ORDER_PREFIX))
        .arg(&["doc", "{not json", "status", "Pending"])
        .query_async(&mut raw)
        .await
        .expect("hset");
    let err = store.order(&order_id).await.expect_err("unreadable");
    assert!(matches!(err, StoreError::Decode { .. }), "{err:?}");
    assert!(!err.is_transient());
    assert!(
        std::error::Error::source(&err).is_some(),
        "the JSON error is kept"
    );

    // The idempotency records judge Redis' errors by the same rule.
    let records = RedisIdempotencyStore::new(
        crate::redis_connection(&redis),
        redis_keys::HTTP_IDEMPOTENCY_PREFIX,
    );
    let terms = Terms {
        lease: Duration::from_secs(30),
        ttl: Duration::from_secs(60),
    };
    let _: () = redis::cmd("SET")
        .arg(format!("{}ct-string", redis_keys::HTTP_IDEMPOTENCY_PREFIX))
        .arg("not a hash")
        .query_async(&mut raw)
        .await
        .expect("set");
    let err = records
        .claim("ct-string", "fingerprint", "resource", terms)
        .await
        .expect_err("WRONGTYPE");
    assert!(matches!(err, IdempotencyError::Redis(_)), "{err:?}");
    assert!(!err.is_transient(), "{err:?}");

    redis.0.process.kill();
    let err = once_noticed(|| store.ping()).await;
    assert!(err.is_transient(), "{err:?}");
    let err = once_noticed(|| records.claim("any", "fingerprint", "resource", terms)).await;
    assert!(err.is_transient(), "{err:?}");
}

/// The first error `call` fails with, called until the client notices its
/// server went away.
async fn once_noticed<T, E, Fut>(mut call: impl FnMut() -> Fut) -> E
where
    Fut: std::future::Future<Output = Result<T, E>>,
{
    tokio::time::timeout(NOTICE, async {
        loop {
            if let Err(err) = call().await {
                return err;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("the stopped server is noticed")
}

#[tokio::test]
async fn a_publish_nats_refuses_is_permanent_one_without_an_answer_is_not() {
    let nats = Nats::start().await;
    let broker = crate::jetstream_broker(&nats).await;
    broker.ensure_topology().await.expect("streams");
    let subject = catga_core::contracts::subjects::PLACE_ORDER;

    // Larger than the server's max_payload (1 MiB by default).
    let too_large = Bytes::from(vec![b'x'; 2 * 1024 * 1024]);
    let err = broker
        .send(OutgoingMessage::new(subject, "too-large", too_large))
        .await
        .expect_err("refused");
    assert!(!err.is_transient(), "{err:?}");

    nats.0.process.kill();
    let err = tokio::time::timeout(
        NOTICE,
        broker.send(OutgoingMessage::new(subject, "nobody", Bytes::from("x"))),
    )
    .await
    .expect("an answer or a timeout from the client")
    .expect_err("the server is gone");
    assert!(err.is_transient(), "{err:?}");
}
