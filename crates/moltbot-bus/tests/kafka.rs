//! The Kafka bus against a real Kafka-protocol broker (tansu, started by
//! `scripts/services.sh start tansu`; `scripts/test.sh` does that and sets
//! `MOLTBOT_TEST_KAFKA`). Replicas here are engines in one process sharing one store (the
//! shared database of a real deployment) with a bus each; the model is the OpenAI provider
//! against a loopback server speaking the OpenAI wire format that echoes the question.
//!
//! Each test uses topics and a consumer group of its own, so runs never see each other.

use moltbot_bus::KafkaBus;
use moltbot_core::config::{BusConfig, BusKind, OpenAiConfig};
use moltbot_core::{Secret, Supervisor};
use moltbot_engine::{
    Engine, EngineOptions, ModelSlot, Overrides, TurnEvent, TurnOutcome, TurnRequest,
};
use moltbot_fakes::FakeOpenAi;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_store::Store;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn brokers() -> Option<String> {
    let b = std::env::var("MOLTBOT_TEST_KAFKA")
        .ok()
        .filter(|b| !b.is_empty());
    if b.is_none() {
        eprintln!("skipping: set MOLTBOT_TEST_KAFKA (scripts/services.sh start tansu) to run it");
    }
    b
}

struct Replica {
    engine: Engine,
    bus: KafkaBus,
    stop: CancellationToken,
}

fn bus_config(brokers: &str, prefix: &str, replica: &str, partitions: u32) -> BusConfig {
    BusConfig {
        kind: BusKind::Kafka,
        brokers: brokers.to_string(),
        topic_prefix: prefix.to_string(),
        group_id: format!("{prefix}-group"),
        replica_id: Some(replica.to_string()),
        partitions,
        turn_timeout_secs: 240,
        max_in_flight: 64,
        session_timeout_ms: 6_000,
        fetch_wait_ms: 10,
    }
}

async fn replica(store: &Store, fake: &FakeOpenAi, cfg: &BusConfig) -> Replica {
    let model = OpenAiProvider::new(&OpenAiConfig {
        base_url: fake.base_url(),
        api_key: Some(Secret::new("sk-test")),
        model: "gpt-test".into(),
        timeout_secs: 30,
        max_retries: 0,
    })
    .expect("provider");
    let engine = Engine::new(
        store.clone(),
        ModelSlot::ready(Arc::new(model)),
        EngineOptions::default(),
    );
    let stop = CancellationToken::new();
    let bus = KafkaBus::start(cfg, engine.clone(), &Supervisor::new(), stop.clone())
        .await
        .expect("the bus starts");
    engine.set_bus(Arc::new(bus.clone()));
    Replica { engine, bus, stop }
}

fn turn(session: &str, message: &str) -> TurnRequest {
    TurnRequest {
        session_id: session.to_string(),
        turn_id: None,
        run_id: None,
        user: None,
        message: message.to_string(),
        channel: "http",
        origin: None,
        overrides: Overrides::default(),
    }
}

/// Run a turn through `engine` (so through its bus), collecting the streamed text.
async fn ask(engine: &Engine, session: &str, message: &str) -> (TurnOutcome, String) {
    let (tx, mut rx) = mpsc::channel(64);
    let collect = tokio::spawn(async move {
        let mut text = String::new();
        while let Some(ev) = rx.recv().await {
            if let TurnEvent::Delta(d) = ev {
                text.push_str(&d);
            }
        }
        text
    });
    let out = engine
        .turn(turn(session, message), Some(tx), CancellationToken::new())
        .await
        .unwrap_or_else(|e| panic!("turn {session}/{message}: {e}"));
    (out, collect.await.unwrap())
}

/// Wait until the replicas own all `partitions` between them, each at least one.
async fn settle(replicas: &[&Replica], partitions: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let owned: Vec<usize> = replicas.iter().map(|r| r.bus.assigned().len()).collect();
        if owned.iter().sum::<usize>() == partitions && owned.iter().all(|n| *n > 0) {
            // Stay a moment: a late join would move partitions again.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let again: Vec<usize> = replicas.iter().map(|r| r.bus.assigned().len()).collect();
            if again == owned {
                return;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the consumer group did not settle: {owned:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Two replicas named `names` sharing one store (in `dir`), their group settled over
/// `partitions` partitions of fresh topics.
async fn two_replicas(
    brokers: &str,
    fake: &FakeOpenAi,
    dir: &Path,
    partitions: u32,
    names: [&str; 2],
) -> (Store, Replica, Replica) {
    let prefix = format!("t{}", uuid::Uuid::new_v4().simple());
    let store = Store::open(&dir.join("shared.db")).unwrap();
    let a = replica(
        &store,
        fake,
        &bus_config(brokers, &prefix, names[0], partitions),
    )
    .await;
    let b = replica(
        &store,
        fake,
        &bus_config(brokers, &prefix, names[1], partitions),
    )
    .await;
    settle(&[&a, &b], partitions as usize).await;
    (store, a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_cross_replicas_in_session_order_and_are_answered_once() {
    let Some(brokers) = brokers() else { return };
    let fake = FakeOpenAi::builder()
        .chunk_delay(Duration::from_millis(2))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (store, a, b) = two_replicas(&brokers, &fake, dir.path(), 4, ["a", "b"]).await;

    // 16 sessions, 3 turns each, in order within a session, all sessions at once; each
    // session alternates the replica it talks to.
    let mut tasks = Vec::new();
    for s in 0..16 {
        let engines = [a.engine.clone(), b.engine.clone()];
        tasks.push(tokio::spawn(async move {
            let session = format!("s{s}");
            for t in 0..3 {
                let message = format!("question {t} of {session}");
                let (out, streamed) = ask(&engines[(s + t) % 2], &session, &message).await;
                assert_eq!(out.reply, format!("echo: {message}"));
                assert_eq!(streamed, out.reply, "the stream carries the whole reply");
                assert_eq!(out.session_id, session);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // Every session holds its 3 exchanges once, in order.
    for s in 0..16 {
        let session = format!("s{s}");
        let msgs = store.recent_messages(&session, 100).await.unwrap();
        let text: Vec<String> = msgs.iter().map(|m| m.content.clone()).collect();
        let want: Vec<String> = (0..3)
            .flat_map(|t| {
                let q = format!("question {t} of {session}");
                [q.clone(), format!("echo: {q}")]
            })
            .collect();
        assert_eq!(text, want, "session {session}");
    }
    let (a_sent, a_ran) = a.bus.counts();
    let (b_sent, b_ran) = b.bus.counts();
    assert_eq!(a_sent + b_sent, 48);
    assert_eq!(a_ran + b_ran, 48, "each turn ran once");
    assert!(
        a_ran > 0 && b_ran > 0,
        "both replicas ran turns: {a_ran}/{b_ran}"
    );
    assert!(
        a_sent > 0 && b_sent > 0 && a_sent != a_ran,
        "turns crossed replicas (a sent {a_sent}, ran {a_ran})"
    );
    let health = a.engine.bus().unwrap().health();
    assert!(health.ok, "{:?}", health.detail);
    assert_eq!(health.detail["pending"], 0);
    a.stop.cancel();
    b.stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_replica_stops_mid_turn_is_finished_by_another_once() {
    let Some(brokers) = brokers() else { return };
    // Slow answers: the replica running the turn is stopped while it waits for the model.
    let fake = FakeOpenAi::builder()
        .delay(Duration::from_secs(3))
        .start()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let (store, first, second) =
        two_replicas(&brokers, &fake, dir.path(), 2, ["first", "second"]).await;
    // A session whose partition the first replica owns, asked through the second.
    let owned = first.bus.assigned();
    let session = (0..1000)
        .map(|i| format!("session-{i}"))
        .find(|s| owned.contains(&murmur2_partition(s.as_bytes(), 2)))
        .unwrap();
    let asking = {
        let engine = second.engine.clone();
        let session = session.clone();
        tokio::spawn(async move { ask(&engine, &session, "are you still there?").await })
    };
    // The owner has stored the user message and is waiting for the model: stop it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let msgs = store.recent_messages(&session, 10).await.unwrap();
        if !msgs.is_empty() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the turn never started"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(first.bus.counts().1, 1, "the owner took the turn");
    first.stop.cancel();

    let (out, streamed) = tokio::time::timeout(Duration::from_secs(150), asking)
        .await
        .expect("the turn was finished by the other replica")
        .unwrap();
    assert_eq!(out.reply, "echo: are you still there?");
    assert_eq!(streamed, out.reply);
    assert_eq!(second.bus.counts().1, 1, "the survivor ran it again");
    let msgs = store.recent_messages(&session, 10).await.unwrap();
    let text: Vec<&str> = msgs.iter().map(|m| m.content.as_str()).collect();
    assert_eq!(
        text,
        ["are you still there?", "echo: are you still there?"],
        "one question, one answer"
    );
    second.stop.cancel();
}

/// Kafka's default partitioner (the Java client's, which the bus asks librdkafka to use):
/// murmur2 of the key, positive, modulo the partition count.
fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() >= 3 {
        h ^= (rest[2] as u32) << 16;
    }
    if rest.len() >= 2 {
        h ^= (rest[1] as u32) << 8;
    }
    if !rest.is_empty() {
        h ^= rest[0] as u32;
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h & 0x7fff_ffff) % partitions as u32) as i32
}
