//! The Kafka broker stops answering mid-load and comes back: every turn is still answered,
//! exactly once and in order, and `/health` says the bus is down while it is gone.
//!
//! The broker is a tansu of this test's own (`MOLTBOT_TEST_TANSU_BIN`, printed by
//! `scripts/services.sh env`), so the outage disturbs no other test. It is frozen with
//! SIGSTOP and thawed with SIGCONT: to the replicas that is a broker that went away and
//! came back with its topics, offsets and groups intact, which is what a restart of a
//! broker with durable storage looks like. A real kill -9 and restart, on S3 storage, is
//! `broker_restart.rs`.

mod common;

use common::{ask, Pair};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSIONS: usize = 8;
const TURNS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_mid_load_loses_and_doubles_nothing() {
    let port = common::free_port();
    let addr = format!("127.0.0.1:{port}");
    let dir = tempfile::tempdir().unwrap();
    let Some(broker) = common::Broker::start(&addr, &dir.path().join("tansu.log")).await else {
        eprintln!("skipping: set MOLTBOT_TEST_TANSU_BIN (scripts/services.sh env)");
        return;
    };

    let pair = Pair::start(
        &addr,
        "outage",
        &["b0", "b1"],
        Duration::from_millis(20),
        // A turn lost with the broker is retried (same idempotency key) after this long.
        Duration::from_secs(20),
        dir.path(),
        None,
    )
    .await;
    let (replicas, ports, client) = (&pair.replicas, &pair.ports, &pair.client);

    let targets: Vec<_> = replicas.iter().map(|r| (r.port, r.alive.clone())).collect();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let (client, targets, answered) = (client.clone(), targets.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let session = format!("outage-{s}");
            for t in 0..TURNS {
                let (reply, _) = ask(&client, &targets, s + t, &session, t).await;
                assert_eq!(reply, format!("echo: turn {t} of {session}"));
                answered.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    let total = SESSIONS * TURNS;
    common::wait_count(&answered, total / 3, Duration::from_secs(120), dir.path()).await;
    broker.signal("STOP");
    let frozen_at = answered.load(Ordering::Relaxed);
    // While it is gone the replicas say so.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = common::health(client, ports[0]).await;
        if h.as_ref()
            .is_some_and(|h| h["components"]["bus"]["status"] == "down")
        {
            break;
        }
        assert!(Instant::now() < deadline, "bus never reported down: {h:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    broker.signal("CONT");
    for t in tasks {
        t.await.unwrap();
    }
    eprintln!("broker frozen after {frozen_at}/{total} turns; all answered");
    assert!(frozen_at < total, "the outage landed before the load ended");

    let store = pair.setup().store().await;
    common::assert_turns_stored_once(&store, "outage-", SESSIONS, TURNS, dir.path()).await;
    let h = common::health(client, ports[0]).await.unwrap();
    assert_eq!(h["components"]["bus"]["status"], "ok", "{h}");
}
