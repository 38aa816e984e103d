//! The Redis connection through Sentinel follows a failover, and a write is
//! acknowledged only once a replica holds it (`WAIT`): every pending order
//! the store acknowledged before the master was killed is on the new master.

use std::time::{Duration, Instant};

use catga_core::{
    config::{Env, RedisSettings, keys},
    domain::OrderId,
    store::{OrderIntake, OrderQueries, RedisStore, StoreError, connect_redis},
};
use catga_tests::{Redis, SentinelGroup, role};
use tokio_util::sync::CancellationToken;

use crate::store::draft;

fn store_on(pairs: &[(&str, &str)]) -> (RedisStore, catga_core::store::RedisConnection) {
    let settings =
        RedisSettings::from_env(&Env::from_pairs(pairs.iter().copied())).expect("Redis settings");
    let conn = connect_redis(&settings).expect("connect");
    (RedisStore::new(conn.clone()), conn)
}

#[tokio::test]
async fn a_write_no_replica_holds_is_a_transient_failure() {
    let redis = Redis::start().await;
    let configuration = redis.configuration();
    let (store, _) = store_on(&[
        (keys::REDIS_CONFIGURATION, configuration.as_str()),
        (keys::REDIS_WAIT_REPLICAS, "1"),
        (keys::REDIS_WAIT_TIMEOUT_MS, "50"),
    ]);
    let err = store
        .create_pending(&draft(OrderId::new(), "wait"))
        .await
        .expect_err("no replica can acknowledge");
    assert!(err.is_transient(), "{err:?}");

    // The default on one address waits for nobody.
    let (store, _) = store_on(&[(keys::REDIS_CONFIGURATION, configuration.as_str())]);
    store
        .create_pending(&draft(OrderId::new(), "wait"))
        .await
        .expect("no wait on a standalone Redis");
}

/// Writes pending orders until `stop` holds and writes succeed; returns the
/// ids it got an answer for and how long writes failed (all of them
/// transiently) in a row at most.
async fn write_until(store: &RedisStore, stop: impl Fn() -> bool) -> (Vec<OrderId>, Duration) {
    let mut acknowledged = Vec::new();
    let mut failing_since: Option<Instant> = None;
    let mut longest_outage = Duration::ZERO;
    while failing_since.is_some() || !stop() {
        assert!(
            failing_since.is_none_or(|since| since.elapsed() < Duration::from_secs(60)),
            "writes did not come back within 60 s"
        );
        let id = OrderId::new();
        match store.create_pending(&draft(id, "failover")).await {
            Ok(()) => {
                if let Some(since) = failing_since.take() {
                    longest_outage = longest_outage.max(since.elapsed());
                }
                acknowledged.push(id);
            }
            Err(err) => {
                assert!(
                    err.is_transient(),
                    "a failover error must be transient: {err:?}"
                );
                failing_since.get_or_insert_with(Instant::now);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    (acknowledged, longest_outage)
}

async fn kill_master_under_writes(
    group: &SentinelGroup,
    store: &RedisStore,
) -> (Vec<OrderId>, u16) {
    let old = group.master_port().await.expect("a master");
    let (before, _) = write_until(store, {
        let started = Instant::now();
        move || started.elapsed() > Duration::from_millis(500)
    })
    .await;
    group.node(old).process.kill();
    let killed = Instant::now();
    let new_master = std::sync::Arc::new(std::sync::Mutex::new(None));
    let watcher = {
        let new_master = new_master.clone();
        let ports: Vec<u16> = group.sentinels.iter().map(|s| s.port).collect();
        tokio::spawn(async move {
            // Asks Sentinel directly, like an operator would.
            loop {
                for port in &ports {
                    if let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}"))
                        && let Ok(mut conn) = client.get_multiplexed_async_connection().await
                        && let Ok((_, p)) = redis::cmd("SENTINEL")
                            .arg("get-master-addr-by-name")
                            .arg(catga_tests::SENTINEL_SERVICE)
                            .query_async::<(String, String)>(&mut conn)
                            .await
                        && p.parse::<u16>().ok() != Some(old)
                    {
                        *new_master.lock().expect("lock") = p.parse::<u16>().ok();
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    // Writes go on across the failover until 2 s after a new master exists.
    let (during, outage) = write_until(store, {
        let new_master = new_master.clone();
        let promoted_at = std::sync::Mutex::new(None::<Instant>);
        move || {
            assert!(
                killed.elapsed() < Duration::from_secs(60),
                "no failover within 60 s"
            );
            if new_master.lock().expect("lock").is_none() {
                return false;
            }
            let mut at = promoted_at.lock().expect("lock");
            at.get_or_insert_with(Instant::now).elapsed() > Duration::from_secs(2)
        }
    })
    .await;
    watcher.await.expect("watcher");
    // A Sentinel may name the replica it is promoting a moment before that
    // node has switched (or one whose promotion is then aborted for
    // another): the new master is the node Sentinel names once it says so itself.
    let new = catga_tests::eventually(
        "the node Sentinel names to act as master",
        Duration::from_secs(30),
        || async {
            let named = group.master_port().await?;
            (named != old && role(named).await.as_deref() == Some("master")).then_some(named)
        },
    )
    .await;
    println!(
        "failover of :{old} to :{new}: writes failed (503) for {:.1} s",
        outage.as_secs_f64()
    );
    assert!(!during.is_empty(), "writes resumed on the new master");
    (before.into_iter().chain(during).collect(), old)
}

async fn assert_all_held(store: &RedisStore, acknowledged: &[OrderId]) {
    for id in acknowledged {
        assert!(
            store.order(id).await.expect("read").is_some(),
            "acknowledged order {id} was lost in the failover"
        );
    }
}

#[tokio::test]
async fn the_store_follows_sentinel_failovers_and_keeps_what_it_acknowledged() {
    let group = SentinelGroup::start(2).await;
    let configuration = group.configuration();
    let (store, conn) = store_on(&[(keys::REDIS_CONFIGURATION, configuration.as_str())]);
    let shutdown = CancellationToken::new();
    let follower = tokio::spawn(conn.follow_failovers(shutdown.clone()));

    // 1. The master dies; a replica is promoted; the same store carries on.
    let (first, old) = kill_master_under_writes(&group, &store).await;
    assert_all_held(&store, &first).await;

    // 2. The old master comes back (as a replica, Sentinel decides), then the
    //    new master dies too.
    group.node(old).restart().await;
    catga_tests::eventually(
        "the old master rejoins as a replica",
        Duration::from_secs(30),
        || async { (role(old).await.as_deref() == Some("slave")).then_some(()) },
    )
    .await;
    let (second, _) = kill_master_under_writes(&group, &store).await;
    assert_all_held(&store, &first).await;
    assert_all_held(&store, &second).await;

    shutdown.cancel();
    follower.await.expect("follower");
}

/// The replies a failover or an overloaded Redis gives, from real servers,
/// as `is_transient` sees them; and the refusals that would come back the same.
#[tokio::test]
async fn redis_replies_are_classified_from_real_servers() {
    async fn raw(port: u16) -> redis::aio::MultiplexedConnection {
        redis::Client::open(format!("redis://127.0.0.1:{port}"))
            .expect("client")
            .get_multiplexed_async_connection()
            .await
            .expect("connect")
    }
    async fn reply(conn: &mut redis::aio::MultiplexedConnection, cmd: &redis::Cmd) -> StoreError {
        StoreError::Redis(
            cmd.query_async::<redis::Value>(conn)
                .await
                .expect_err("a refusal"),
        )
    }
    let group = SentinelGroup::start(1).await;
    let master = group.master_port().await.expect("master");
    let replica = group
        .nodes
        .iter()
        .find(|n| n.port != master)
        .expect("replica")
        .port;
    let mut on_master = raw(master).await;
    let mut on_replica = raw(replica).await;

    // READONLY: a write that reaches a replica (a demoted master).
    let err = reply(&mut on_replica, redis::cmd("SET").arg("k").arg("v")).await;
    assert_eq!(err_code(&err), Some("READONLY"));
    assert!(err.is_transient(), "{err:?}");

    // Script error and WRONGTYPE: would come back the same.
    let err = reply(
        &mut on_master,
        redis::cmd("EVAL").arg("return redis.call('NOPE')").arg(0),
    )
    .await;
    assert!(!err.is_transient(), "{err:?}");
    let _: () = redis::cmd("SET")
        .arg("str")
        .arg("x")
        .query_async(&mut on_master)
        .await
        .expect("set");
    let err = reply(&mut on_master, redis::cmd("HGET").arg("str").arg("f")).await;
    assert_eq!(err_code(&err), Some("WRONGTYPE"));
    assert!(!err.is_transient(), "{err:?}");

    // OOM: no room until keys expire or memory is raised.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(1)
        .query_async(&mut on_master)
        .await
        .expect("config");
    let err = reply(&mut on_master, redis::cmd("SET").arg("k").arg("v")).await;
    assert_eq!(err_code(&err), Some("OOM"));
    assert!(err.is_transient(), "{err:?}");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg(0)
        .query_async(&mut on_master)
        .await
        .expect("config");

    // BUSY: a script still running.
    let mut busy = raw(master).await;
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("busy-reply-threshold")
        .arg(100)
        .query_async(&mut on_master)
        .await
        .expect("config");
    let spin = tokio::spawn(async move {
        let _ = redis::cmd("EVAL")
            .arg("local t = tonumber(redis.call('TIME')[1]) + 2 while tonumber(redis.call('TIME')[1]) < t do end return 1")
            .arg(0)
            .query_async::<redis::Value>(&mut busy)
            .await;
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut other = raw(master).await;
    let err = reply(&mut other, &redis::cmd("PING")).await;
    assert_eq!(err_code(&err), Some("BUSY"));
    assert!(err.is_transient(), "{err:?}");
    spin.await.expect("script ends");

    // MASTERDOWN: a replica that must not serve stale data, its master gone.
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("replica-serve-stale-data")
        .arg("no")
        .query_async(&mut on_replica)
        .await
        .expect("config");
    // The Sentinels stop watching, so nobody promotes the replica.
    for sentinel in &group.sentinels {
        let _: () = redis::cmd("SENTINEL")
            .arg("REMOVE")
            .arg(catga_tests::SENTINEL_SERVICE)
            .query_async(&mut raw(sentinel.port).await)
            .await
            .expect("sentinel remove");
    }
    group.node(master).process.kill();
    let err = catga_tests::eventually(
        "the replica notices its master is gone",
        Duration::from_secs(30),
        || {
            let mut on_replica = on_replica.clone();
            async move {
                match redis::cmd("GET")
                    .arg("k")
                    .query_async::<redis::Value>(&mut on_replica)
                    .await
                {
                    Err(err) if err.code() == Some("MASTERDOWN") => Some(StoreError::Redis(err)),
                    _ => None,
                }
            }
        },
    )
    .await;
    assert!(err.is_transient(), "{err:?}");
}

fn err_code(err: &StoreError) -> Option<&str> {
    match err {
        StoreError::Redis(err) => err.code(),
        _ => None,
    }
}

/// Cuts the replicas off the master (frozen, their links killed), writes
/// `count` pending orders through a store with `wait_replicas`, kills the
/// master, thaws the replicas and waits for one to be promoted. Returns what
/// the store acknowledged, what it refused, and the store.
async fn write_while_replicas_are_cut_off(
    wait_replicas: &str,
    count: usize,
) -> (Vec<OrderId>, Vec<StoreError>, RedisStore, SentinelGroup) {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;
    let signal = |server: &catga_tests::Server, signal: Signal| {
        let pid = server.process.pid().expect("running");
        kill(Pid::from_raw(i32::try_from(pid).expect("pid")), signal).expect("signal");
    };
    let group = SentinelGroup::start(2).await;
    let configuration = group.configuration();
    let (store, _) = store_on(&[
        (keys::REDIS_CONFIGURATION, configuration.as_str()),
        (keys::REDIS_WAIT_REPLICAS, wait_replicas),
        (keys::REDIS_WAIT_TIMEOUT_MS, "100"),
    ]);
    store
        .create_pending(&draft(OrderId::new(), "warm-up"))
        .await
        .expect("the store works before the cut");
    let master = group.master_port().await.expect("master");
    let replicas: Vec<&catga_tests::Server> =
        group.nodes.iter().filter(|n| n.port != master).collect();
    for replica in &replicas {
        signal(replica, Signal::SIGSTOP);
    }
    let mut raw = redis::Client::open(format!("redis://127.0.0.1:{master}"))
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let _: redis::Value = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut raw)
        .await
        .expect("cut the replication links");
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for _ in 0..count {
        let id = OrderId::new();
        match store.create_pending(&draft(id, "cut-off")).await {
            Ok(()) => acknowledged.push(id),
            Err(err) => refused.push(err),
        }
    }
    group.node(master).process.kill();
    for replica in &replicas {
        signal(replica, Signal::SIGCONT);
    }
    group
        .wait_for_new_master(master, Duration::from_secs(60))
        .await;
    (acknowledged, refused, store, group)
}

#[tokio::test]
async fn without_wait_a_failover_loses_acknowledged_writes_with_it_none() {
    // The control: no WAIT, the master acknowledges what no replica holds,
    // and the promoted replica does not have it.
    let (acknowledged, refused, store, _group) = write_while_replicas_are_cut_off("0", 5).await;
    assert!(refused.is_empty(), "{refused:?}");
    let mut lost = 0;
    for id in &acknowledged {
        let found = catga_tests::eventually(
            "a read on the new master",
            Duration::from_secs(30),
            || async { store.order(id).await.ok() },
        )
        .await;
        lost += usize::from(found.is_none());
    }
    assert_eq!(
        lost,
        acknowledged.len(),
        "without WAIT the acknowledged writes are lost"
    );

    // With WAIT, the same writes are refused (transient: 503 / retry), so
    // nothing acknowledged can be lost.
    let (acknowledged, refused, _, _group) = write_while_replicas_are_cut_off("1", 5).await;
    assert!(acknowledged.is_empty(), "{acknowledged:?}");
    assert_eq!(refused.len(), 5);
    assert!(refused.iter().all(StoreError::is_transient), "{refused:?}");
}
