//! Outages of any length lose nothing: Redis frozen (SIGSTOP) for several
//! ack deadlines with a backlog of commands queued behind the replicas'
//! handler slots. Messages the replicas are working on retry in place and
//! keep their deadline alive; the rest must wait in the stream, not in a
//! client buffer where their deliveries run out. After SIGCONT the checker
//! compares order by order, as for a failover.

use std::time::Duration;

use catga_core::{
    config::keys,
    contracts::{consumers, streams},
    service::MAX_IN_FLIGHT,
};
use catga_tests::{Service, System};
use nix::{sys::signal::Signal, unistd::Pid};

use crate::redis_failover::{KeyedLoad, check};

/// The ack deadline of the run, short so the freeze spans many of them.
const ACK_WAIT_SECONDS: u64 = 2;
/// Deliveries allowed: the freeze lasts longer than all of them together.
const MAX_DELIVER: u64 = 3;
const FREEZE: Duration = Duration::from_secs(ACK_WAIT_SECONDS * MAX_DELIVER * 2);

/// Sends `signal` to a running process.
fn signal(process: &catga_tests::Process, signal: Signal) {
    let pid = process.pid().expect("running");
    let pid = Pid::from_raw(i32::try_from(pid).expect("pid fits"));
    nix::sys::signal::kill(pid, signal).expect("signal sent");
}

fn signal_all(services: &[Service], to: Signal) {
    for service in services {
        signal(&service.process, to);
    }
}

#[tokio::test]
#[ignore = "slow fault-injection suite: run with tests/run.sh faults"]
async fn a_redis_frozen_for_many_ack_deadlines_with_a_backlog_loses_nothing() {
    let ack_wait = ACK_WAIT_SECONDS.to_string();
    let max_deliver = MAX_DELIVER.to_string();
    let system = System::start_with(&[
        (keys::NATS_ACK_WAIT_SECONDS, ack_wait.as_str()),
        (keys::MAX_RETRY_ATTEMPTS, max_deliver.as_str()),
        (keys::LOG_LEVEL, "info"),
        // The checker reads every order as one caller.
        (keys::HTTP_RATE_LIMIT_PER_SECOND, "0"),
    ])
    .await;
    let load = KeyedLoad::start(&system);
    tokio::time::sleep(Duration::from_secs(2)).await;

    // A backlog: the order-services pause while orders keep being accepted.
    signal_all(&system.order_services, Signal::SIGSTOP);
    let js = system.nats.jetstream().await;
    let commands = js
        .get_stream(streams::ORDER_COMMANDS)
        .await
        .expect("stream");
    let backlog_wanted =
        u64::try_from(MAX_IN_FLIGHT * system.order_services.len() * 3).expect("fits");
    let backlog = catga_tests::eventually(
        "a backlog beyond every handler slot",
        Duration::from_secs(60),
        || {
            let commands = commands.clone();
            async move {
                let pending = commands
                    .consumer_info(consumers::ORDER_PROCESSING)
                    .await
                    .ok()?
                    .num_pending;
                (pending >= backlog_wanted).then_some(pending)
            }
        },
    )
    .await;

    // Redis freezes; the order-services resume into it and fill their slots.
    signal(&system.redis.0.process, Signal::SIGSTOP);
    signal_all(&system.order_services, Signal::SIGCONT);
    tokio::time::sleep(FREEZE).await;
    let during = commands
        .consumer_info(consumers::ORDER_PROCESSING)
        .await
        .expect("consumer info");
    signal(&system.redis.0.process, Signal::SIGCONT);

    tokio::time::sleep(Duration::from_secs(5)).await;
    let (placed, _) = load.stop().await;
    let checked = check(&system, &placed).await;
    catga_tests::eventually(
        "the command backlog worked off",
        Duration::from_secs(60),
        || {
            let commands = commands.clone();
            async move {
                let info = commands
                    .consumer_info(consumers::ORDER_PROCESSING)
                    .await
                    .ok()?;
                (info.num_pending == 0 && info.num_ack_pending == 0).then_some(())
            }
        },
    )
    .await;
    let redelivered =
        catga_tests::metric_total(&system.order_services, "catga_redeliveries_total{").await;

    println!("\n===== Redis freeze tally =====");
    println!("  orders accepted: {}", placed.len());
    println!("  backlog when Redis froze: {backlog} commands");
    println!(
        "  during the {FREEZE:?} freeze: {} waiting in the stream, {} being worked on (ack deadline {ACK_WAIT_SECONDS} s, max deliveries {MAX_DELIVER})",
        during.num_pending, during.num_ack_pending
    );
    println!("  redeliveries: {redelivered}");
    println!("  {checked}");
    assert!(
        during.num_ack_pending <= MAX_IN_FLIGHT * system.order_services.len(),
        "pulled beyond the handler slots: {}",
        during.num_ack_pending
    );
    checked.assert_clean("a frozen Redis");
}
