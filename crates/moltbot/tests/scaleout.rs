//! Three `moltbot gateway` processes on one Kafka-protocol broker (tansu, started by
//! `scripts/services.sh`; `MOLTBOT_TEST_KAFKA` names it) and one shared store — PostgreSQL
//! when `MOLTBOT_TEST_POSTGRES` names a server (each replica then has a data folder of its
//! own, as on separate machines), else one SQLite file — answering chats from many
//! sessions at once while one replica is killed with SIGKILL mid-load. Every turn must be
//! answered, and stored exactly once, in order: turns the dead replica was running are run
//! again by the others, and clients whose connection died retry on another replica with
//! the same `Idempotency-Key`. The dead replica then comes back under its old name and
//! serves again. Meanwhile a cron job added with `moltbot cron add` fires every 10 s on
//! whichever replica claims it: each due run happens exactly once across the three.

mod common;

use common::{ask, free_port, logs, settle, spawn, Replica, Setup};
use moltbot_fakes::FakeOpenAi;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SESSIONS: usize = 12;
const TURNS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_lose_and_double_nothing_when_one_is_killed() {
    let Some(brokers) = std::env::var("MOLTBOT_TEST_KAFKA")
        .ok()
        .filter(|b| !b.is_empty())
    else {
        eprintln!("skipping: set MOLTBOT_TEST_KAFKA (scripts/services.sh start tansu)");
        return;
    };
    let prefix = format!("so{}", uuid::Uuid::new_v4().simple());
    // Replies stream for a while, so the kill lands in the middle of turns.
    let fake = FakeOpenAi::builder()
        .chunk_delay(Duration::from_millis(40))
        .start()
        .await;
    let openai = fake.base_url();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("shared");
    let pg = common::pg_from_env();
    if pg.is_none() {
        eprintln!("MOLTBOT_TEST_POSTGRES unset: the replicas share one SQLite file");
    }
    let setup = Setup {
        brokers: &brokers,
        prefix: &prefix,
        data: &data,
        openai: &openai,
        pg,
        fetch_wait_ms: None,
    };
    let mut replicas = common::start_replicas(&setup, &["r0", "r1", "r2"], dir.path());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(200))
        .build()
        .unwrap();
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    settle(&client, &ports, "three replicas joining", dir.path()).await;

    // A job every 10 s, added from the command line straight into the shared store; the
    // replicas' schedulers pick it up within their poll interval.
    let added = setup
        .command(&dir.path().join("cli"))
        .args(["cron", "add", "--every", "10s", "--message", "tick"])
        .args(["--session", "cron-target", "--name", "tick"])
        .output()
        .unwrap();
    assert!(
        added.status.success(),
        "cron add: {}",
        String::from_utf8_lossy(&added.stderr)
    );
    let cron_started = Instant::now();

    let targets: Vec<(u16, Arc<AtomicBool>)> =
        replicas.iter().map(|r| (r.port, r.alive.clone())).collect();
    let answered = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for s in 0..SESSIONS {
        let (client, targets, answered) = (client.clone(), targets.clone(), answered.clone());
        tasks.push(tokio::spawn(async move {
            let session = format!("session-{s}");
            let mut retries = 0;
            for t in 0..TURNS {
                let (reply, attempts) = ask(&client, &targets, s + t, &session, t).await;
                assert_eq!(reply, format!("echo: turn {t} of {session}"));
                retries += attempts - 1;
                answered.fetch_add(1, Ordering::Relaxed);
            }
            retries
        }));
    }
    // Kill r2 with SIGKILL once a quarter of the turns are answered.
    let total = SESSIONS * TURNS;
    while answered.load(Ordering::Relaxed) < total / 4 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    replicas[2].alive.store(false, Ordering::Relaxed);
    let mut victim = replicas[2].child.take().unwrap();
    victim.kill().unwrap();
    victim.wait().unwrap();
    let killed_at = answered.load(Ordering::Relaxed);
    let mut retries = 0;
    for t in tasks {
        retries += t.await.unwrap();
    }
    assert!(killed_at < total, "the kill landed before the load ended");
    eprintln!("killed r2 after {killed_at}/{total} turns; {retries} client retries");

    // Each session holds each turn once, in order: no loss, no double.
    let store = setup.store().await;
    common::assert_turns_stored_once(&store, "session-", SESSIONS, TURNS, dir.path()).await;

    // r2 comes back under its name and takes a share of the work again.
    let port = free_port();
    replicas[2] = Replica {
        child: Some(spawn(&setup, "r2", port, &dir.path().join("r2-again"))),
        port,
        alive: Arc::new(AtomicBool::new(true)),
    };
    let ports: Vec<u16> = replicas.iter().map(|r| r.port).collect();
    settle(&client, &ports, "r2 rejoining", dir.path()).await;
    let targets: Vec<(u16, Arc<AtomicBool>)> =
        replicas.iter().map(|r| (r.port, r.alive.clone())).collect();
    let (reply, attempts) = ask(&client, &targets, 2, "after-restart", 0).await;
    assert_eq!(reply, "echo: turn 0 of after-restart");
    assert_eq!(attempts, 1, "the restarted replica answered at once");

    // The cron job: at least three runs by now (it has had 30 s), each due time once, and
    // one reminder in the target session per run.
    let jobs = store.cron_list().await.unwrap();
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    let job = &jobs[0];
    let wait = Duration::from_secs(35).saturating_sub(cron_started.elapsed());
    tokio::time::sleep(wait).await;
    let mut runs = Vec::new();
    for _ in 0..200 {
        runs = store.cron_runs(&job.id, 100).await.unwrap();
        if runs.len() >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(runs.len() >= 3, "cron runs: {runs:?}{}", logs(dir.path()));
    // Pause it and let a run already started finish, then count.
    store.cron_set_enabled(&job.id, false, None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let runs = store.cron_runs(&job.id, 100).await.unwrap();
    let due: std::collections::HashSet<i64> = runs.iter().map(|r| r.scheduled_ms).collect();
    assert_eq!(due.len(), runs.len(), "a due time ran twice: {runs:?}");
    let reminders = store.recent_messages("cron-target", 1000).await.unwrap();
    assert_eq!(
        reminders.len(),
        runs.len(),
        "one reminder per run: {reminders:?} {runs:?}"
    );
    eprintln!("cron: {} runs, each once", runs.len());
}
