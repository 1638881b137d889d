//! The cron scheduler on tokio's paused clock with a real SQLite store, and the `cron` tool.
//!
//! The store's writer is a real thread: while the runtime waited for it, paused time would
//! auto-advance to the next timer. A blocking task held for the whole test stops that
//! (tokio does not auto-advance while blocking tasks run), so time moves only by
//! `advance`, and the scheduler reads wall time through a `TokioClock` that follows it.
//! Waiting for the scheduler's work is done in real time (`real_pause`).

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use moltbot_core::config::{CronConfig, MisfirePolicy};
use moltbot_core::{Origin, Tool, ToolContext, ToolError};
use moltbot_store::Store;
use moltbot_tools::cron::{
    parse_tz, CronHandle, CronJob, CronPayload, CronRun, CronRunStatus, CronTarget, CronTool,
    CronTrigger, JobRunner, NewJob, Schedule, Scheduler, SchedulerOptions, TokioClock,
};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::advance;
use tokio_util::sync::CancellationToken;

const MIN: Duration = Duration::from_secs(60);

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn ms(s: &str) -> i64 {
    utc(s).timestamp_millis()
}

/// Runs `prompt` jobs: answers, fails when the prompt says "fail", waits for `release` (or
/// cancellation) when it says "slow".
#[derive(Default)]
struct FakeRunner {
    prompts: Mutex<Vec<String>>,
    sessions: Mutex<Vec<(String, String)>>,
    release: Notify,
}

impl JobRunner for FakeRunner {
    fn run<'a>(
        &'a self,
        job: &'a CronJob,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<String, String>> {
        Box::pin(async move {
            let CronPayload::Prompt { text } = &job.payload else {
                return Err("only prompts here".into());
            };
            self.prompts.lock().unwrap().push(text.clone());
            if text.contains("fail") {
                return Err(format!("boom: {text}"));
            }
            if text.contains("slow") {
                tokio::select! {
                    _ = self.release.notified() => {}
                    _ = cancel.cancelled() => return Err("cancelled".into()),
                }
            }
            Ok(format!("answer to {text}"))
        })
    }

    fn deliver_to_session<'a>(
        &'a self,
        session_id: &'a str,
        _job: &'a CronJob,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.sessions
                .lock()
                .unwrap()
                .push((session_id.to_string(), text.to_string()));
            Ok(())
        })
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
    handle: CronHandle,
    runner: Arc<FakeRunner>,
    shutdown: CancellationToken,
    /// Dropping it ends the blocking task that keeps paused time from auto-advancing.
    _freeze: std::sync::mpsc::Sender<()>,
}

/// Let real time pass (the writer thread works) without blocking the runtime.
async fn real_pause() {
    tokio::task::spawn_blocking(|| std::thread::sleep(Duration::from_millis(1)))
        .await
        .unwrap();
}

impl Fixture {
    /// A store and a handle whose clock reads `t0` now (paused time).
    fn new(t0: &str, cfg: CronConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("moltbot.db")).unwrap();
        let clock = Arc::new(TokioClock::starting_at(utc(t0)));
        let handle = CronHandle::with_clock(store.clone(), &cfg, clock).unwrap();
        let (freeze, held) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || held.recv());
        Self {
            dir,
            store,
            handle,
            runner: Arc::new(FakeRunner::default()),
            shutdown: CancellationToken::new(),
            _freeze: freeze,
        }
    }

    fn start(&self, opts: SchedulerOptions) -> JoinHandle<()> {
        let scheduler = Scheduler::with_options(self.handle.clone(), self.runner.clone(), opts);
        tokio::spawn(scheduler.run(self.shutdown.clone()))
    }

    async fn add(&self, schedule: Schedule, payload: CronPayload) -> CronJob {
        self.handle
            .add(NewJob {
                name: String::new(),
                schedule,
                tz: chrono_tz::UTC,
                payload,
                target: chat(),
                owner: None,
                misfire: None,
            })
            .await
            .unwrap()
    }

    /// A job's runs, oldest first.
    async fn runs(&self, id: &str) -> Vec<CronRun> {
        let mut r = self.store.cron_runs(id, 100).await.unwrap();
        r.reverse();
        r
    }

    /// Wait (in real time, paused time stands still) until a job has `n` runs.
    async fn wait_runs(&self, id: &str, n: usize) -> Vec<CronRun> {
        for _ in 0..5_000 {
            let r = self.runs(id).await;
            if r.len() >= n {
                return r;
            }
            real_pause().await;
        }
        panic!("job {id} has {:?}, expected {n} runs", self.runs(id).await);
    }

    /// Give the scheduler time to do whatever it would do at this instant.
    async fn settle(&self) {
        for _ in 0..50 {
            real_pause().await;
        }
    }

    async fn outbox_texts(&self) -> Vec<String> {
        let mut rows = self.store.outbox_recent(100).await.unwrap();
        rows.reverse();
        rows.into_iter().map(|r| r.text).collect()
    }
}

fn chat() -> CronTarget {
    CronTarget::Chat {
        channel: "telegram".into(),
        chat_id: "42".into(),
    }
}

fn message(text: &str) -> CronPayload {
    CronPayload::Message { text: text.into() }
}

fn prompt(text: &str) -> CronPayload {
    CronPayload::Prompt { text: text.into() }
}

#[tokio::test(start_paused = true)]
async fn an_interval_job_fires_on_its_cadence_and_lands_in_the_outbox() {
    let f = Fixture::new("2026-01-05T00:00:00Z", CronConfig::default());
    let job = f
        .add(Schedule::every("10m").unwrap(), message("stretch"))
        .await;
    let _loop = f.start(SchedulerOptions::default());
    advance(10 * MIN - Duration::from_secs(1)).await;
    f.settle().await;
    assert!(f.runs(&job.id).await.is_empty(), "not before 10 min");
    advance(Duration::from_secs(1)).await;
    f.wait_runs(&job.id, 1).await;
    advance(10 * MIN).await;
    f.wait_runs(&job.id, 2).await;
    advance(10 * MIN).await;
    let runs = f.wait_runs(&job.id, 3).await;
    let due: Vec<i64> = runs.iter().map(|r| r.scheduled_ms).collect();
    assert_eq!(
        due,
        vec![
            ms("2026-01-05T00:10:00Z"),
            ms("2026-01-05T00:20:00Z"),
            ms("2026-01-05T00:30:00Z")
        ]
    );
    for r in &runs {
        assert_eq!(r.status, CronRunStatus::Ok);
        assert_eq!(r.trigger, CronTrigger::Scheduled);
        assert_eq!(r.started_ms, r.scheduled_ms, "started on time: {r:?}");
    }
    let outbox = f.store.outbox_recent(10).await.unwrap();
    assert_eq!(outbox.len(), 3);
    assert!(outbox
        .iter()
        .all(|o| o.channel == "telegram" && o.chat_id == "42" && o.text == "⏰ Reminder: stretch"));
    let job = f.handle.get(&job.id).await.unwrap().unwrap();
    assert_eq!(job.next_run_ms, Some(ms("2026-01-05T00:40:00Z")));
    assert_eq!(job.last_status, Some(CronRunStatus::Ok));
}

#[tokio::test(start_paused = true)]
async fn a_cron_job_fires_at_nine_in_berlin_across_the_dst_change() {
    // Saturday noon; Berlin moves to summer time in the night, so 09:00 is 07:00 UTC.
    let f = Fixture::new("2026-03-28T12:00:00Z", CronConfig::default());
    let berlin = parse_tz("Europe/Berlin").unwrap();
    let job = f
        .handle
        .add(NewJob {
            name: "standup".into(),
            schedule: Schedule::cron("0 9 * * *", berlin).unwrap(),
            tz: berlin,
            payload: message("standup"),
            target: chat(),
            owner: None,
            misfire: None,
        })
        .await
        .unwrap();
    assert_eq!(job.next_run_ms, Some(ms("2026-03-29T07:00:00Z")));
    assert_eq!(job.tz, "Europe/Berlin");
    let _loop = f.start(SchedulerOptions::default());
    advance(19 * 60 * MIN - Duration::from_secs(1)).await;
    f.settle().await;
    assert!(f.runs(&job.id).await.is_empty());
    advance(Duration::from_secs(1)).await;
    let runs = f.wait_runs(&job.id, 1).await;
    assert_eq!(runs[0].scheduled_ms, ms("2026-03-29T07:00:00Z"));
    let job = f.handle.get(&job.id).await.unwrap().unwrap();
    assert_eq!(job.next_run_ms, Some(ms("2026-03-30T07:00:00Z")));
}

#[tokio::test(start_paused = true)]
async fn missed_runs_after_downtime_run_once_or_are_skipped() {
    let cfg = CronConfig {
        misfire: MisfirePolicy::Skip,
        ..CronConfig::default()
    };
    let f = Fixture::new("2026-01-05T12:00:00Z", cfg);
    let add = |payload, misfire| {
        f.handle.add(NewJob {
            name: String::new(),
            schedule: Schedule::every("30m").unwrap(),
            tz: chrono_tz::UTC,
            payload,
            target: chat(),
            owner: None,
            misfire,
        })
    };
    let catch_up = add(message("catch up"), Some(MisfirePolicy::RunOnce))
        .await
        .unwrap();
    // No override: the config's `skip`.
    let skip = add(message("skip me"), None).await.unwrap();
    let late = add(message("a bit late"), None).await.unwrap();
    // The gateway was down: two were due an hour and a half ago, one 30 s ago (within
    // the grace period).
    let past = ms("2026-01-05T10:30:00Z");
    f.store
        .cron_set_next_run(&catch_up.id, Some(past))
        .await
        .unwrap();
    f.store
        .cron_set_next_run(&skip.id, Some(past))
        .await
        .unwrap();
    f.store
        .cron_set_next_run(&late.id, Some(ms("2026-01-05T11:59:30Z")))
        .await
        .unwrap();

    let _loop = f.start(SchedulerOptions::default());
    let r = f.wait_runs(&catch_up.id, 1).await;
    assert_eq!(
        (r[0].status, r[0].trigger),
        (CronRunStatus::Ok, CronTrigger::Catchup)
    );
    assert_eq!(r[0].scheduled_ms, past);
    let r = f.wait_runs(&skip.id, 1).await;
    assert_eq!(
        (r[0].status, r[0].trigger),
        (CronRunStatus::Skipped, CronTrigger::Catchup)
    );
    assert!(
        r[0].output
            .as_deref()
            .unwrap()
            .contains("misfire policy: skip"),
        "{r:?}"
    );
    let r = f.wait_runs(&late.id, 1).await;
    assert_eq!(
        (r[0].status, r[0].trigger),
        (CronRunStatus::Ok, CronTrigger::Scheduled)
    );
    f.settle().await;

    // Both continue at their next time on the old cadence: 10:30 + 4 × 30 min.
    for id in [&catch_up.id, &skip.id] {
        let job = f.handle.get(id).await.unwrap().unwrap();
        assert_eq!(job.next_run_ms, Some(ms("2026-01-05T12:30:00Z")));
        assert_eq!(
            f.runs(id).await.len(),
            1,
            "one catch-up, not one per missed run"
        );
    }
    let texts = f.outbox_texts().await;
    assert!(
        texts.contains(&"⏰ Reminder: catch up".to_string()),
        "{texts:?}"
    );
    assert!(!texts.iter().any(|t| t.contains("skip me")), "{texts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_one_shot_fires_once_and_is_disabled() {
    let f = Fixture::new("2026-01-05T00:00:00Z", CronConfig::default());
    let job = f
        .add(
            Schedule::at("2026-01-05T01:00", chrono_tz::UTC).unwrap(),
            message("call mum"),
        )
        .await;
    let _loop = f.start(SchedulerOptions::default());
    advance(60 * MIN).await;
    let runs = f.wait_runs(&job.id, 1).await;
    assert_eq!(runs[0].scheduled_ms, ms("2026-01-05T01:00:00Z"));
    advance(3 * 60 * MIN).await;
    f.settle().await;
    assert_eq!(f.runs(&job.id).await.len(), 1);
    let job = f.handle.get(&job.id).await.unwrap().unwrap();
    assert!(!job.enabled);
    assert_eq!(job.next_run_ms, None);
    assert_eq!(f.outbox_texts().await, vec!["⏰ Reminder: call mum"]);
}

#[tokio::test(start_paused = true)]
async fn a_failing_job_is_recorded_and_the_loop_continues() {
    let f = Fixture::new("2026-01-05T00:00:00Z", CronConfig::default());
    let bad = f
        .add(Schedule::every("1m").unwrap(), prompt("fail please"))
        .await;
    let good = f
        .add(Schedule::every("1m").unwrap(), prompt("weather"))
        .await;
    let session_job = f
        .handle
        .add(NewJob {
            name: "digest".into(),
            schedule: Schedule::every("1m").unwrap(),
            tz: chrono_tz::UTC,
            payload: prompt("digest"),
            target: CronTarget::Session { id: "s-1".into() },
            owner: None,
            misfire: None,
        })
        .await
        .unwrap();
    let _loop = f.start(SchedulerOptions::default());
    advance(MIN).await;
    f.wait_runs(&bad.id, 1).await;
    advance(MIN).await;
    let runs = f.wait_runs(&bad.id, 2).await;
    assert!(runs.iter().all(|r| r.status == CronRunStatus::Error));
    assert_eq!(runs[0].output.as_deref(), Some("boom: fail please"));
    let runs = f.wait_runs(&good.id, 2).await;
    assert!(runs.iter().all(|r| r.status == CronRunStatus::Ok));
    assert_eq!(runs[0].output.as_deref(), Some("answer to weather"));
    f.wait_runs(&session_job.id, 2).await;
    f.settle().await;
    let texts = f.outbox_texts().await;
    assert_eq!(texts, vec!["answer to weather", "answer to weather"]);
    let sessions = f.runner.sessions.lock().unwrap().clone();
    assert_eq!(sessions.len(), 2);
    assert_eq!(
        sessions[0],
        ("s-1".to_string(), "answer to digest".to_string())
    );
}

#[tokio::test(start_paused = true)]
async fn a_job_added_while_the_loop_sleeps_fires_on_time() {
    let f = Fixture::new("2026-01-05T00:00:00Z", CronConfig::default());
    // Without a poke the loop would sleep an hour.
    let _loop = f.start(SchedulerOptions {
        poll: 60 * MIN,
        ..SchedulerOptions::default()
    });
    f.settle().await;
    advance(5 * MIN).await;
    f.settle().await;
    let job = f.add(Schedule::every("2m").unwrap(), message("tea")).await;
    advance(2 * MIN).await;
    let runs = f.wait_runs(&job.id, 1).await;
    assert_eq!(runs[0].scheduled_ms, job.next_run_ms.unwrap());
    assert_eq!(runs[0].started_ms, runs[0].scheduled_ms, "{runs:?}");
    assert_eq!(runs[0].trigger, CronTrigger::Scheduled);
}

#[tokio::test(start_paused = true)]
async fn jobs_from_another_process_and_run_now_are_picked_up_by_polling() {
    let f = Fixture::new("2026-01-05T00:00:00Z", CronConfig::default());
    let _loop = f.start(SchedulerOptions::default());
    f.settle().await;
    // The CLI: its own store connection and handle, nothing to poke in this process.
    let cli_store = Store::open(&f.dir.path().join("moltbot.db")).unwrap();
    let cli = CronHandle::with_clock(
        cli_store,
        &CronConfig::default(),
        Arc::new(TokioClock::starting_at(f.handle.now())),
    )
    .unwrap();
    let job = cli
        .add(NewJob {
            name: "daily".into(),
            schedule: Schedule::cron("0 9 * * *", chrono_tz::UTC).unwrap(),
            tz: chrono_tz::UTC,
            payload: message("from the cli"),
            target: chat(),
            owner: Some("cli".into()),
            misfire: None,
        })
        .await
        .unwrap();
    assert!(cli.run_now(&job.id).await.unwrap());
    advance(Duration::from_secs(5)).await;
    let runs = f.wait_runs(&job.id, 1).await;
    assert_eq!(runs[0].trigger, CronTrigger::Manual);
    let after = f.handle.get(&job.id).await.unwrap().unwrap();
    assert!(!after.run_now);
    assert_eq!(
        after.next_run_ms, job.next_run_ms,
        "a manual run keeps the schedule"
    );
    assert_eq!(f.outbox_texts().await, vec!["⏰ Reminder: from the cli"]);
    // A paused job runs when asked, and stays paused.
    assert!(cli.set_enabled(&job.id, false).await.unwrap());
    cli.run_now(&job.id).await.unwrap();
    advance(Duration::from_secs(5)).await;
    f.wait_runs(&job.id, 2).await;
    assert!(!f.handle.get(&job.id).await.unwrap().unwrap().enabled);
}

#[tokio::test(start_paused = true)]
async fn a_slow_job_delays_no_other_and_shutdown_cancels_it() {
    let f = Fixture::new("2026-01-05T00:00:00Z", CronConfig::default());
    let slow = f
        .add(Schedule::every("1m").unwrap(), prompt("slow report"))
        .await;
    let quick = f.add(Schedule::every("1m").unwrap(), message("ping")).await;
    let handle = f.start(SchedulerOptions::default());
    advance(MIN).await;
    f.wait_runs(&quick.id, 1).await;
    advance(MIN).await;
    f.wait_runs(&quick.id, 2).await;
    // The slow one is still in its first run: its second is skipped.
    let runs = f.wait_runs(&slow.id, 1).await;
    assert_eq!(runs[0].status, CronRunStatus::Skipped);
    assert_eq!(
        runs[0].output.as_deref(),
        Some("the previous run was still running")
    );
    f.runner.release.notify_one();
    let runs = f.wait_runs(&slow.id, 2).await;
    assert_eq!(runs[1].status, CronRunStatus::Ok);
    assert_eq!(runs[1].scheduled_ms, ms("2026-01-05T00:01:00Z"));

    // At shutdown a running job is cancelled and recorded, and the loop ends.
    advance(MIN).await;
    for _ in 0..5_000 {
        if f.runner.prompts.lock().unwrap().len() == 2 {
            break;
        }
        real_pause().await;
    }
    assert_eq!(f.runner.prompts.lock().unwrap().len(), 2);
    f.shutdown.cancel();
    handle.await.unwrap();
    let runs = f.runs(&slow.id).await;
    assert_eq!(runs.last().unwrap().status, CronRunStatus::Error);
    assert_eq!(runs.last().unwrap().output.as_deref(), Some("cancelled"));
}

// ---- the `cron` tool -------------------------------------------------------------------

fn turn(user: &str, origin: Option<(&str, &str)>) -> ToolContext {
    let mut ctx = ToolContext::detached("sess-1");
    ctx.user = Some(user.to_string());
    ctx.origin = origin.map(|(channel, chat_id)| Origin {
        channel: channel.into(),
        chat_id: chat_id.into(),
    });
    ctx
}

async fn call(
    tool: &CronTool,
    args: serde_json::Value,
    ctx: &ToolContext,
) -> Result<String, ToolError> {
    tool.call(args, ctx).await.map(|o| o.text)
}

#[tokio::test(start_paused = true)]
async fn the_tool_adds_lists_and_removes_a_users_jobs() {
    let cfg = CronConfig {
        default_tz: "Europe/Berlin".into(),
        max_jobs: 3,
        ..CronConfig::default()
    };
    let f = Fixture::new("2026-11-30T12:00:00Z", cfg);
    let tool = CronTool::new(f.handle.clone());
    let spec = serde_json::to_string(tool.spec()).unwrap();
    assert!(spec.len() < 600, "{} chars: {spec}", spec.len());
    assert_eq!(tool.spec().name, "cron");

    let ann = turn("telegram:1", Some(("telegram", "100")));
    let out = call(
        &tool,
        json!({"action": "add", "message": "dentist", "at": "2026-12-01T09:00"}),
        &ann,
    )
    .await
    .unwrap();
    // Default zone from the config; the next run shown in it.
    assert!(out.contains("next run Tue 2026-12-01 09:00 CET"), "{out}");
    let jobs = f.handle.list().await.unwrap();
    assert_eq!(jobs.len(), 1);
    let id = jobs[0].id.clone();
    assert!(out.contains(&id), "{out}");
    assert_eq!(
        jobs[0].target,
        CronTarget::Chat {
            channel: "telegram".into(),
            chat_id: "100".into()
        }
    );
    assert_eq!(jobs[0].payload, message("dentist"));
    assert_eq!(jobs[0].owner.as_deref(), Some("telegram:1"));
    assert_eq!(jobs[0].next_run_ms, Some(ms("2026-12-01T08:00:00Z")));

    // Without an origin the job goes to the session; a prompt job; an explicit zone.
    let bob = turn("http:bob", None);
    let out = call(
        &tool,
        json!({"action": "add", "prompt": "summarise the news", "cron": "0 8 * * 1-5",
               "tz": "America/New_York"}),
        &bob,
    )
    .await
    .unwrap();
    assert!(out.contains("next run Mon 2026-11-30 08:00 EST"), "{out}");
    let bobs = f.handle.list().await.unwrap();
    let bobs = bobs
        .iter()
        .find(|j| j.owner.as_deref() == Some("http:bob"))
        .unwrap();
    assert_eq!(
        bobs.target,
        CronTarget::Session {
            id: "sess-1".into()
        }
    );
    assert_eq!(bobs.payload, prompt("summarise the news"));

    // Each user sees only their own jobs.
    let list = call(&tool, json!({"action": "list"}), &ann).await.unwrap();
    assert!(list.contains(&id) && list.contains("dentist"), "{list}");
    assert!(!list.contains("summarise"), "{list}");
    let e = call(&tool, json!({"action": "remove", "id": id}), &bob)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("is not one of your jobs"), "{e}");
    let out = call(&tool, json!({"action": "remove", "id": id}), &ann)
        .await
        .unwrap();
    assert!(out.contains("Removed job"), "{out}");
    assert_eq!(
        call(&tool, json!({"action": "list"}), &ann).await.unwrap(),
        "No scheduled jobs."
    );

    // max_jobs
    for _ in 0..2 {
        call(
            &tool,
            json!({"action": "add", "message": "x", "every": "1h"}),
            &ann,
        )
        .await
        .unwrap();
    }
    let e = call(
        &tool,
        json!({"action": "add", "message": "x", "every": "1h"}),
        &ann,
    )
    .await
    .unwrap_err();
    assert!(matches!(e, ToolError::Denied(_)), "{e}");
    assert!(e.to_string().contains("already 3 scheduled jobs"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn the_tool_explains_bad_arguments() {
    let f = Fixture::new("2026-11-30T12:00:00Z", CronConfig::default());
    let tool = CronTool::new(f.handle.clone());
    let ctx = turn("u", None);
    let cases = [
        (
            json!({"action": "add", "message": "x"}),
            "one of `cron`, `every`, `at` or `when`, got none",
        ),
        (
            json!({"action": "add", "message": "x", "cron": "0 9 * * *", "at": "2026-12-01T09:00"}),
            "got `cron` and `at`",
        ),
        (
            json!({"action": "add", "message": "x", "every": "5s"}),
            "got \"5s\"",
        ),
        (
            json!({"action": "add", "message": "x", "every": "1h", "tz": "Nowhere"}),
            "`tz`",
        ),
        (
            json!({"action": "add", "message": "x", "cron": "61 * * * *"}),
            "\"61 * * * *\"",
        ),
        (
            json!({"action": "add", "message": "x", "at": "2020-01-01T09:00"}),
            "`at` must be in the future",
        ),
        (
            json!({"action": "add", "every": "1h"}),
            "`message` is required",
        ),
        (json!({"action": "remove"}), "`id` is required"),
        (
            json!({"action": "pause"}),
            "`action` must be add, list or remove, got \"pause\"",
        ),
        (json!({}), "`action` is required"),
    ];
    for (args, want) in cases {
        let e = call(&tool, args.clone(), &ctx).await.unwrap_err();
        assert!(matches!(e, ToolError::InvalidArguments(_)), "{args}: {e}");
        assert!(e.to_string().contains(want), "{args}: {e}");
    }
    assert!(f.handle.list().await.unwrap().is_empty());
    // A bad default zone is refused when the handle is built.
    let bad = CronConfig {
        default_tz: "Europe/Atlantis".into(),
        ..CronConfig::default()
    };
    let e = CronHandle::new(f.store.clone(), &bad).unwrap_err();
    assert!(e.to_string().contains("tools.cron.default_tz"), "{e}");
}

/// A model that gives no schedule (small local models rarely write a valid cron pattern
/// or date): the tool reads it, and the reminder text, from the user's own words.
#[tokio::test]
async fn the_tool_reads_the_schedule_from_the_users_words() {
    let cfg = CronConfig {
        default_tz: "Europe/Berlin".into(),
        ..CronConfig::default()
    };
    let f = Fixture::new("2026-11-30T12:00:00Z", cfg);
    let tool = CronTool::new(f.handle.clone());
    let mut ctx = turn("telegram:42", Some(("telegram", "42")));
    ctx.request = Some("remind me every day at 9 to call Anna".into());
    let out = call(&tool, json!({"action": "add"}), &ctx).await.unwrap();
    assert!(out.contains("09:00"), "{out}");
    let jobs = f.handle.list().await.unwrap();
    assert_eq!(jobs[0].schedule_kind, "cron");
    assert_eq!(jobs[0].schedule_expr, "0 9 * * *");
    assert_eq!(
        jobs[0].payload,
        CronPayload::Message {
            text: "call Anna".into()
        }
    );
    // `when` in words works too, with the model's own message.
    let out = call(
        &tool,
        json!({"action": "add", "when": "in 20 minutes", "message": "check the oven"}),
        &turn("telegram:42", None),
    )
    .await
    .unwrap();
    assert!(out.contains("Scheduled"), "{out}");
    assert_eq!(f.handle.list().await.unwrap().len(), 2);
    // A pattern that does not parse gives way to the user's words.
    let mut ctx = turn("telegram:42", None);
    ctx.request = Some("every weekday at 8:30 stand-up".into());
    call(
        &tool,
        json!({"action": "add", "cron": "0 9 every day", "message": "stand-up"}),
        &ctx,
    )
    .await
    .unwrap();
    let jobs = f.handle.list().await.unwrap();
    assert!(
        jobs.iter().any(|j| j.schedule_expr == "30 8 * * 1-5"),
        "{jobs:?}"
    );
}

/// The stores three replicas would share: three handles on one SQLite file (processes on
/// one host) and, when `MOLTBOT_TEST_POSTGRES` is set, three pools on one PostgreSQL schema.
async fn shared_stores(dir: &std::path::Path) -> Vec<(&'static str, Vec<Store>)> {
    let path = dir.join("shared.db");
    let mut out = vec![(
        "sqlite",
        (0..3).map(|_| Store::open(&path).unwrap()).collect(),
    )];
    if let Some(url) = std::env::var("MOLTBOT_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    {
        let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
        let mut stores = Vec::new();
        for _ in 0..3 {
            let opts = moltbot_store::PgOptions::new(&url).schema(schema.clone());
            stores.push(Store::connect_postgres(&opts).await.unwrap());
        }
        out.push(("postgres", stores));
    }
    out
}

/// Three schedulers (three replicas) on one store, waking at the same instants: each due
/// run is claimed by one of them, so every minute fires exactly once.
#[tokio::test(start_paused = true)]
async fn three_schedulers_sharing_a_store_fire_each_run_once() {
    let dir = tempfile::tempdir().unwrap();
    let (freeze, held) = std::sync::mpsc::channel::<()>();
    tokio::task::spawn_blocking(move || held.recv());
    for (name, stores) in shared_stores(dir.path()).await {
        let clock = Arc::new(TokioClock::starting_at(tokio_now_utc()));
        let cfg = CronConfig::default();
        let shutdown = CancellationToken::new();
        let handles: Vec<CronHandle> = stores
            .iter()
            .map(|s| CronHandle::with_clock(s.clone(), &cfg, clock.clone()).unwrap())
            .collect();
        let job = handles[0]
            .add(NewJob {
                name: "tick".into(),
                schedule: Schedule::every("1m").unwrap(),
                tz: chrono_tz::UTC,
                payload: message("tick"),
                target: chat(),
                owner: None,
                misfire: None,
            })
            .await
            .unwrap();
        let runner = Arc::new(FakeRunner::default());
        let loops: Vec<_> = handles
            .iter()
            .map(|h| {
                let s = Scheduler::with_options(h.clone(), runner.clone(), Default::default());
                tokio::spawn(s.run(shutdown.clone()))
            })
            .collect();
        let store = &stores[0];
        for minute in 1..=8 {
            advance(MIN).await;
            let mut n = 0;
            for _ in 0..5_000 {
                n = store.cron_runs(&job.id, 100).await.unwrap().len();
                if n >= minute {
                    break;
                }
                real_pause().await;
            }
            assert!(n >= minute, "{name}: {n} runs after {minute} minutes");
        }
        // Let any late duplicate show up before counting.
        for _ in 0..200 {
            real_pause().await;
        }
        let runs = store.cron_runs(&job.id, 100).await.unwrap();
        let mut due: Vec<i64> = runs.iter().map(|r| r.scheduled_ms).collect();
        due.sort_unstable();
        let expected: Vec<i64> = (1..=8)
            .map(|m| job.next_run_ms.unwrap() + (m - 1) * 60_000)
            .collect();
        assert_eq!(due, expected, "{name}: each minute once");
        let sent = store.outbox_recent(100).await.unwrap();
        assert_eq!(sent.len(), 8, "{name}: one reminder per run");
        shutdown.cancel();
        for l in loops {
            l.await.unwrap();
        }
    }
    drop(freeze);
}

/// Wall-clock now, rounded to the second, as the paused clock's starting point.
fn tokio_now_utc() -> DateTime<Utc> {
    let now = Utc::now().timestamp();
    DateTime::<Utc>::from_timestamp(now, 0).unwrap()
}
