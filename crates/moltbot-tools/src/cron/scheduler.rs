//! [`Scheduler`]: one loop that starts due jobs.
//!
//! ```text
//! loop {
//!     claim every job due now (store.cron_claim_due), move its next_run, release it,
//!     start it
//!     select! { sleep until the next due time (at most `poll`), handle.poke(), shutdown }
//! }
//! ```
//!
//! The sleep is capped at [`SchedulerOptions::poll`] so jobs added or marked "run now" by
//! another process (the CLI writes the store directly) start within a few seconds.
//!
//! A job due more than [`SchedulerOptions::grace`] ago (the gateway was down, the machine
//! slept) is a misfire: `run_once` runs it once now (trigger `catchup`), `skip` records a
//! `skipped` run; either way it continues at its next future time. Jobs run as tasks, at
//! most [`SchedulerOptions::concurrency`] at once, so a slow job delays no other; a job
//! still running when it is due again gets a `skipped` run. Each run is recorded with its
//! status and counted in `moltbot_cron_runs_total{status}`.

use super::{format_local, Clock, CronHandle, Schedule};
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use moltbot_core::config::MisfirePolicy;
use moltbot_store::{
    CronJob, CronPayload, CronRunStatus, CronTarget, CronTrigger, NewCronRun, NewOutbox, Store,
};
use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info_span, warn, Instrument};

/// What a `message` job delivers before its text.
pub const REMINDER_PREFIX: &str = "⏰ Reminder: ";

/// Jobs started per wake-up, at most (the rest start on the next turn of the loop).
const DUE_BATCH: usize = 64;

/// How long a claim on a due job holds if its claimer dies before moving the job's next run.
const CLAIM_LEASE_MS: i64 = 60_000;

/// Runs the jobs that need more than the store: `prompt` jobs (the dialogue engine) and
/// `tool` jobs (the tool registry), and delivers to sessions. `message` jobs and deliveries
/// to channel chats (the outbox) are done by the scheduler itself.
pub trait JobRunner: Send + Sync + 'static {
    /// Run a `prompt` or `tool` job and return the text to deliver (empty: nothing to
    /// deliver). An `Err` is recorded as the run's error. Stop promptly when `cancel` fires
    /// (shutdown, or the job's time budget is spent).
    fn run<'a>(
        &'a self,
        job: &'a CronJob,
        cancel: CancellationToken,
    ) -> BoxFuture<'a, Result<String, String>>;

    /// Deliver a run's text to a session target (append it as an assistant message).
    fn deliver_to_session<'a>(
        &'a self,
        session_id: &'a str,
        job: &'a CronJob,
        text: &'a str,
    ) -> BoxFuture<'a, Result<(), String>>;
}

#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Jobs running at once, at most.
    pub concurrency: usize,
    /// Longest sleep between two reads of the store.
    pub poll: Duration,
    /// How late a job may start before it counts as missed (misfire policy).
    pub grace: Duration,
    /// Time budget of one `prompt` or `tool` run.
    pub job_timeout: Duration,
    /// How long shutdown waits for running jobs.
    pub drain: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            concurrency: 4,
            poll: Duration::from_secs(5),
            grace: Duration::from_secs(60),
            job_timeout: Duration::from_secs(600),
            drain: Duration::from_secs(10),
        }
    }
}

/// The scheduler loop of one process. Build it with the process's [`CronHandle`] (so
/// `handle.poke()` wakes it) and run it as one task.
pub struct Scheduler {
    handle: CronHandle,
    shared: Arc<Shared>,
    opts: SchedulerOptions,
}

/// What the loop and its job tasks share.
struct Shared {
    store: Store,
    runner: Arc<dyn JobRunner>,
    clock: Arc<dyn Clock>,
    history: usize,
    job_timeout: Duration,
    /// Ids of jobs running now. A std mutex: only held for an insert or a remove.
    running: Mutex<HashSet<String>>,
    permits: Arc<Semaphore>,
}

impl Scheduler {
    pub fn new(handle: CronHandle, runner: Arc<dyn JobRunner>) -> Self {
        Self::with_options(handle, runner, SchedulerOptions::default())
    }

    pub fn with_options(
        handle: CronHandle,
        runner: Arc<dyn JobRunner>,
        opts: SchedulerOptions,
    ) -> Self {
        let shared = Arc::new(Shared {
            store: handle.store().clone(),
            runner,
            clock: handle.clock(),
            history: handle.history_per_job(),
            job_timeout: opts.job_timeout,
            running: Mutex::new(HashSet::new()),
            permits: Arc::new(Semaphore::new(opts.concurrency.max(1))),
        });
        Self {
            handle,
            shared,
            opts,
        }
    }

    /// Run until `shutdown` fires, then cancel running jobs and wait for them (at most
    /// [`SchedulerOptions::drain`]).
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tasks = JoinSet::new();
        let poll_ms = self.opts.poll.as_millis().max(1) as i64;
        while !shutdown.is_cancelled() {
            while let Some(done) = tasks.try_join_next() {
                if let Err(e) = done {
                    warn!(cause = %e, "cron: a job task failed");
                }
            }
            let wait_ms = match self.start_due(&mut tasks, &shutdown).await {
                // Every due job was moved on (or disabled), so a due time at or before now
                // is a new one (time passed meanwhile): go round again at once.
                Ok(()) => {
                    let next = self.shared.store.cron_next_due().await;
                    // Read after the await, next to the timer's start below: time may have
                    // moved while the store answered.
                    let now_ms = self.shared.clock.now().timestamp_millis();
                    match next {
                        Ok(Some(due)) => (due - now_ms).clamp(0, poll_ms),
                        Ok(None) => poll_ms,
                        Err(e) => {
                            warn!(cause = %e, "cron: reading the next due time failed");
                            poll_ms
                        }
                    }
                }
                // The store failed: wait a poll interval rather than spin on the same job.
                Err(e) => {
                    warn!(cause = %e, "cron: starting due jobs failed");
                    poll_ms
                }
            };
            if wait_ms == 0 {
                continue;
            }
            let wake_at = tokio::time::Instant::now() + Duration::from_millis(wait_ms as u64);
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.handle.changed().notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Err(e) = done {
                        warn!(cause = %e, "cron: a job task failed");
                    }
                }
            }
        }
        let drain = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(self.opts.drain, drain).await.is_err() {
            warn!(
                running = tasks.len(),
                "cron: jobs still running at shutdown were aborted"
            );
            tasks.abort_all();
        }
    }

    /// Start (or skip) every job due now.
    async fn start_due(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
    ) -> Result<(), moltbot_store::StoreError> {
        let now = self.shared.clock.now();
        let now_ms = now.timestamp_millis();
        let store = &self.shared.store;
        // Claimed first: replicas sharing the store each see a due job, one gets it. The
        // claim ends once the job's next run is moved (or its manual flag cleared); if
        // this process dies in between, the claim runs out and another replica takes it.
        let claimed = store
            .cron_claim_due(now_ms, CLAIM_LEASE_MS, DUE_BATCH)
            .await?;
        for job in claimed {
            let id = job.id.clone();
            let started = self.start_claimed(tasks, shutdown, job, now).await;
            store.cron_release(&id).await?;
            started?;
        }
        Ok(())
    }

    /// Start (or skip) one claimed job, moving its next run first.
    async fn start_claimed(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
        job: CronJob,
        now: DateTime<Utc>,
    ) -> Result<(), moltbot_store::StoreError> {
        let now_ms = now.timestamp_millis();
        let store = &self.shared.store;
        let scheduled_due = job.enabled && job.next_run_ms.is_some_and(|t| t <= now_ms);
        if job.run_now {
            store.cron_clear_run_now(&job.id).await?;
            if !scheduled_due {
                self.start(tasks, shutdown, job, CronTrigger::Manual, now_ms)
                    .await;
                return Ok(());
            }
        }
        let due_ms = job.next_run_ms.unwrap_or(now_ms);
        let schedule = match Schedule::from_stored(&job.schedule_kind, &job.schedule_expr, &job.tz)
        {
            Ok(s) => s,
            Err(e) => {
                // Only a hand-edited row gets here: stop it and say why.
                store.cron_set_next_run(&job.id, None).await?;
                let msg = format!("the stored schedule is invalid, job disabled: {e}");
                self.shared
                    .record(&job, due_ms, now_ms, CronTrigger::Scheduled, Err(msg))
                    .await;
                return Ok(());
            }
        };
        let due = DateTime::<Utc>::from_timestamp_millis(due_ms).unwrap_or(now);
        let next = schedule.next_due(due, now).map(|t| t.timestamp_millis());
        store.cron_set_next_run(&job.id, next).await?;
        let late_ms = now_ms - due_ms;
        if late_ms <= self.opts.grace.as_millis() as i64 {
            self.start(tasks, shutdown, job, CronTrigger::Scheduled, due_ms)
                .await;
            return Ok(());
        }
        match job.misfire.unwrap_or(self.handle.misfire()) {
            MisfirePolicy::RunOnce => {
                self.start(tasks, shutdown, job, CronTrigger::Catchup, due_ms)
                    .await
            }
            MisfirePolicy::Skip => {
                let tz = super::parse_tz(&job.tz).unwrap_or(chrono_tz::UTC);
                let why = format!(
                    "missed the run due {} (misfire policy: skip)",
                    format_local(due, tz)
                );
                self.shared
                    .record_skipped(&job, due_ms, now_ms, CronTrigger::Catchup, why)
                    .await;
            }
        }
        Ok(())
    }

    /// Spawn a job's run, unless it is still running from before (then record a skip).
    async fn start(
        &self,
        tasks: &mut JoinSet<()>,
        shutdown: &CancellationToken,
        job: CronJob,
        trigger: CronTrigger,
        scheduled_ms: i64,
    ) {
        let fresh = self
            .shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(job.id.clone());
        if !fresh {
            let now_ms = self.shared.clock.now().timestamp_millis();
            let why = "the previous run was still running".to_string();
            self.shared
                .record_skipped(&job, scheduled_ms, now_ms, trigger, why)
                .await;
            return;
        }
        let span = info_span!("cron_job", job_id = %job.id, trigger = trigger.as_str());
        let shared = self.shared.clone();
        let cancel = shutdown.child_token();
        tasks.spawn(
            async move {
                let _running = RunningGuard {
                    shared: &shared,
                    id: job.id.clone(),
                };
                shared.run_job(&job, trigger, scheduled_ms, cancel).await;
            }
            .instrument(span),
        );
    }
}

/// Takes a job off the running set when its task ends (also on panic).
struct RunningGuard<'a> {
    shared: &'a Shared,
    id: String,
}

impl Drop for RunningGuard<'_> {
    fn drop(&mut self) {
        self.shared
            .running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.id);
    }
}

impl Shared {
    async fn run_job(
        &self,
        job: &CronJob,
        trigger: CronTrigger,
        scheduled_ms: i64,
        cancel: CancellationToken,
    ) {
        // The semaphore is never closed; a failed acquire would only mean running unbounded.
        let _permit = self.permits.clone().acquire_owned().await.ok();
        let started_ms = self.clock.now().timestamp_millis();
        debug!("cron: job started");
        let result = match &job.payload {
            CronPayload::Message { text } => Ok(format!("{REMINDER_PREFIX}{text}")),
            CronPayload::Prompt { .. } | CronPayload::Tool { .. } => {
                let run = self.runner.run(job, cancel.clone());
                match tokio::time::timeout(self.job_timeout, run).await {
                    Ok(r) => r,
                    Err(_) => {
                        cancel.cancel();
                        Err(format!("timed out after {}s", self.job_timeout.as_secs()))
                    }
                }
            }
        };
        let result = match result {
            Ok(text) if !text.trim().is_empty() => {
                let key = match trigger {
                    CronTrigger::Manual => format!("cron:{}:manual:{started_ms}", job.id),
                    _ => format!("cron:{}:{scheduled_ms}", job.id),
                };
                self.deliver(job, &text, key)
                    .await
                    .map(|()| text)
                    .map_err(|e| format!("delivery failed: {e}"))
            }
            other => other,
        };
        self.record(job, scheduled_ms, started_ms, trigger, result)
            .await;
    }

    async fn deliver(&self, job: &CronJob, text: &str, dedupe_key: String) -> Result<(), String> {
        match &job.target {
            CronTarget::Chat { channel, chat_id } => self
                .store
                .outbox_enqueue(vec![NewOutbox {
                    channel: channel.clone(),
                    chat_id: chat_id.clone(),
                    text: text.to_string(),
                    reply_to: None,
                    thread: None,
                    // A run re-done after a crash does not send twice.
                    dedupe_key: Some(dedupe_key),
                }])
                .await
                .map(drop)
                .map_err(|e| e.to_string()),
            CronTarget::Session { id } => self.runner.deliver_to_session(id, job, text).await,
        }
    }

    async fn record(
        &self,
        job: &CronJob,
        scheduled_ms: i64,
        started_ms: i64,
        trigger: CronTrigger,
        result: Result<String, String>,
    ) {
        let (status, output) = match result {
            Ok(text) => (CronRunStatus::Ok, text),
            Err(e) => {
                warn!(job_id = %job.id, cause = %e, "cron: job failed");
                (CronRunStatus::Error, e)
            }
        };
        self.save(job, scheduled_ms, started_ms, trigger, status, output)
            .await;
    }

    async fn record_skipped(
        &self,
        job: &CronJob,
        scheduled_ms: i64,
        now_ms: i64,
        trigger: CronTrigger,
        why: String,
    ) {
        debug!(job_id = %job.id, reason = %why, "cron: run skipped");
        self.save(
            job,
            scheduled_ms,
            now_ms,
            trigger,
            CronRunStatus::Skipped,
            why,
        )
        .await;
    }

    async fn save(
        &self,
        job: &CronJob,
        scheduled_ms: i64,
        started_ms: i64,
        trigger: CronTrigger,
        status: CronRunStatus,
        output: String,
    ) {
        metrics::counter!("moltbot_cron_runs_total", "status" => status.as_str()).increment(1);
        let run = NewCronRun {
            job_id: job.id.clone(),
            scheduled_ms,
            started_ms,
            finished_ms: self.clock.now().timestamp_millis(),
            status,
            trigger,
            output: Some(output).filter(|o| !o.is_empty()),
        };
        if let Err(e) = self.store.cron_record_run(run, self.history).await {
            warn!(job_id = %job.id, cause = %e, "cron: recording a run failed");
        }
    }
}
