//! Property tests of what the bus's guarantees rest on, each over many generated cases:
//!
//! - [`Offsets`]: the commit position never passes a turn still running, never moves back
//!   within an assignment, and reaches the end once every turn is finished, whatever order
//!   turns finish in.
//! - [`SessionQueues`]: a session's turns run one at a time and in the order they were read,
//!   whatever the interleaving of sessions and however long each turn takes.
//! - Redelivery: the engine, given a turn again by id (a replica died after running it, or
//!   the partition was read again from an older commit), never stores or answers it twice,
//!   including when an earlier delivery was cut off mid-turn. Real SQLite store; the model is
//!   the OpenAI provider against a loopback server speaking its wire format.

use moltbot_bus::offsets::Offsets;
use moltbot_bus::queues::SessionQueues;
use moltbot_core::config::OpenAiConfig;
use moltbot_core::Secret;
use moltbot_engine::{Engine, EngineOptions, ModelSlot, Overrides, TurnRequest};
use moltbot_fakes::FakeOpenAi;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_store::Store;
use proptest::prelude::*;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// `steps`: true reads the next offset, false finishes one of the running offsets
    /// (`pick` chooses which). Offsets left running at the end are finished in `pick` order.
    #[test]
    fn the_commit_position_never_passes_a_running_turn(
        base in 0i64..1_000_000,
        steps in prop::collection::vec(any::<bool>(), 1..120),
        picks in prop::collection::vec(any::<prop::sample::Index>(), 120),
    ) {
        let mut o = Offsets::default();
        let mut running: Vec<i64> = Vec::new();
        let mut next = base;
        let mut position = base;
        let mut picks = picks.iter().cycle();
        let mut finish = |o: &mut Offsets, running: &mut Vec<i64>, next: i64| {
            let off = running.remove(picks.next().unwrap().index(running.len()));
            if let Some(p) = o.finish(5, off) {
                prop_assert!(p > position, "the position moved back: {position} -> {p}");
                position = p;
            }
            let lowest = running.iter().min().copied().unwrap_or(next);
            prop_assert!(position <= lowest, "committed {position} past running {lowest}");
            prop_assert_eq!(o.running(), running.len());
            Ok(())
        };
        for read in steps {
            if read || running.is_empty() {
                o.start(5, next);
                running.push(next);
                next += 1;
            } else {
                finish(&mut o, &mut running, next)?;
            }
        }
        while !running.is_empty() {
            finish(&mut o, &mut running, next)?;
        }
        prop_assert_eq!(position, next, "everything finished, so everything is committed");
    }

    /// Jobs `(session, yields)`: each yields to the scheduler `yields` times while it runs,
    /// so later jobs of a session are often ready before earlier ones.
    #[test]
    fn a_sessions_turns_run_alone_and_in_order(
        jobs in prop::collection::vec((0u8..4, 0u8..6), 1..80),
    ) {
        let rt = runtime();
        let (ran, overlaps) = rt.block_on(async {
            let q = SessionQueues::new();
            let busy: Arc<Vec<AtomicBool>> = Arc::new((0..4).map(|_| AtomicBool::new(false)).collect());
            let ran = Arc::new(Mutex::new(Vec::new()));
            let overlaps = Arc::new(Mutex::new(0usize));
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for (i, (session, yields)) in jobs.iter().copied().enumerate() {
                let (busy, ran, overlaps, tx) = (busy.clone(), ran.clone(), overlaps.clone(), tx.clone());
                q.push(&format!("s{session}"), i, move |i| {
                    let (busy, ran, overlaps, tx) = (busy.clone(), ran.clone(), overlaps.clone(), tx.clone());
                    async move {
                        let flag = &busy[usize::from(session)];
                        if flag.swap(true, Ordering::SeqCst) {
                            *overlaps.lock().unwrap() += 1;
                        }
                        for _ in 0..yields {
                            tokio::task::yield_now().await;
                        }
                        ran.lock().unwrap().push((session, i));
                        flag.store(false, Ordering::SeqCst);
                        let _ = tx.send(());
                    }
                });
            }
            for _ in 0..jobs.len() {
                tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("every job runs")
                    .unwrap();
            }
            let ran = ran.lock().unwrap().clone();
            let overlaps = *overlaps.lock().unwrap();
            (ran, overlaps)
        });
        prop_assert_eq!(overlaps, 0, "two turns of one session ran at once");
        prop_assert_eq!(ran.len(), jobs.len());
        for session in 0..4u8 {
            let got: Vec<usize> = ran.iter().filter(|(s, _)| *s == session).map(|(_, i)| *i).collect();
            let want: Vec<usize> = jobs.iter().enumerate().filter(|(_, (s, _))| *s == session).map(|(i, _)| i).collect();
            prop_assert_eq!(got, want, "session s{} ran out of order", session);
        }
    }
}

/// One delivery of a session's turn: which turn, and whether the replica running it dies
/// (the turn is cancelled) after `cut_ms`.
#[derive(Debug, Clone)]
struct Delivery {
    turn: usize,
    cut_ms: Option<u64>,
}

/// A session's deliveries as a consumer group produces them: turns in order, and after any
/// delivery (always after a cut one) a rewind to an earlier turn, as when a partition is
/// read again from its last commit. Each rewind target is at most the turn just delivered.
fn deliveries(turns: usize) -> impl Strategy<Value = Vec<Delivery>> {
    prop::collection::vec(
        (
            prop::option::weighted(0.25, 0u64..40),
            prop::option::weighted(0.3, any::<prop::sample::Index>()),
        ),
        turns * 3,
    )
    .prop_map(move |steps| {
        let mut out = Vec::new();
        let mut turn = 0;
        for (cut_ms, rewind) in steps {
            if turn == turns {
                break;
            }
            out.push(Delivery { turn, cut_ms });
            turn = match (cut_ms, rewind) {
                (_, Some(back)) => back.index(turn + 1),
                (Some(_), None) => turn,
                (None, None) => turn + 1,
            };
        }
        // Whatever the schedule, the consumer goes on until the last turn is answered.
        while turn < turns {
            out.push(Delivery { turn, cut_ms: None });
            turn += 1;
        }
        out
    })
}

fn request(session: &str, turn: usize) -> TurnRequest {
    TurnRequest {
        session_id: session.to_string(),
        turn_id: Some(format!("{session}-t{turn}")),
        run_id: None,
        user: None,
        message: format!("turn {turn} of {session}"),
        channel: "http",
        origin: None,
        overrides: Overrides::default(),
    }
}

proptest! {
    // Each case runs real turns against SQLite and a loopback model server.
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn a_redelivered_turn_is_stored_and_answered_once(
        schedules in prop::collection::vec(deliveries(4), 1..4),
    ) {
        let rt = runtime();
        let dir = tempfile::tempdir().unwrap();
        let result: Result<(), TestCaseError> = rt.block_on(async {
            // Replies stream in chunks a few milliseconds apart, so cuts land mid-answer.
            let fake = FakeOpenAi::builder().chunk_delay(Duration::from_millis(3)).start().await;
            let model = OpenAiProvider::new(&OpenAiConfig {
                base_url: fake.base_url(),
                api_key: Some(Secret::new("sk-test")),
                model: "gpt-test".into(),
                timeout_secs: 30,
                max_retries: 0,
            })
            .unwrap();
            let store = Store::open(&dir.path().join("m.db")).unwrap();
            let engine = Engine::new(store.clone(), ModelSlot::ready(Arc::new(model)), EngineOptions::default());
            let mut tasks = Vec::new();
            for (s, schedule) in schedules.iter().cloned().enumerate() {
                let engine = engine.clone();
                tasks.push(tokio::spawn(async move {
                    let session = format!("p{s}");
                    let mut answers: HashMap<usize, Vec<String>> = HashMap::new();
                    for d in schedule {
                        let cancel = CancellationToken::new();
                        if let Some(ms) = d.cut_ms {
                            let cancel = cancel.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(ms)).await;
                                cancel.cancel();
                            });
                        }
                        match engine.turn_here(request(&session, d.turn), None, cancel).await {
                            Ok(out) => answers.entry(d.turn).or_default().push(out.reply),
                            Err(e) if d.cut_ms.is_some() => {
                                let _ = e; // cut off: a later delivery answers it
                            }
                            Err(e) => return Err(format!("{session} turn {}: {e}", d.turn)),
                        }
                    }
                    Ok((session, answers))
                }));
            }
            for t in tasks {
                let (session, answers) = t.await.unwrap().map_err(TestCaseError::fail)?;
                for (turn, replies) in &answers {
                    let want = format!("echo: turn {turn} of {session}");
                    for r in replies {
                        prop_assert_eq!(r, &want, "every delivery of a turn gives its one answer");
                    }
                }
                let stored: Vec<String> = store
                    .recent_messages(&session, 1000)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.content)
                    .collect();
                let want: Vec<String> = (0..4)
                    .flat_map(|t| {
                        let q = format!("turn {t} of {session}");
                        [q.clone(), format!("echo: {q}")]
                    })
                    .collect();
                prop_assert_eq!(stored, want, "{} holds each turn once, in order", session);
            }
            // A turn whose reply is stored is answered from the store: the model is asked once
            // per turn, plus at most once more for each cut delivery.
            let turns = 4 * schedules.len() as u64;
            let cuts = schedules.iter().flatten().filter(|d| d.cut_ms.is_some()).count() as u64;
            prop_assert!(
                fake.requests() <= turns + cuts,
                "the model was asked {} times for {turns} turns and {cuts} cut deliveries",
                fake.requests()
            );
            // A cut delivery leaves no trace in what later turns send the model: each user
            // message appears once in every request.
            for r in fake.recent_requests() {
                let body = r.json();
                let users: Vec<&str> = body["messages"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|m| m["role"] == "user")
                    .filter_map(|m| m["content"].as_str())
                    .collect();
                let mut unique = users.clone();
                unique.sort_unstable();
                unique.dedup();
                prop_assert_eq!(unique.len(), users.len(), "a user message sent twice: {:?}", users);
            }
            Ok(())
        });
        result?;
    }
}
