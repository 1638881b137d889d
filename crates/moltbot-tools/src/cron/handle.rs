//! [`CronHandle`]: validate, store and look up jobs, and wake the scheduler.

use super::{parse_tz, Clock, CronError, Schedule, SystemClock};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use moltbot_core::config::{CronConfig, MisfirePolicy};
use moltbot_store::{CronJob, CronPayload, CronRun, CronTarget, Store};
use std::sync::Arc;
use tokio::sync::Notify;

/// A job to add.
#[derive(Debug, Clone)]
pub struct NewJob {
    /// A human label; empty takes the start of the payload text.
    pub name: String,
    pub schedule: Schedule,
    /// The zone the job was created in: a cron pattern is read in it, one-shots and next
    /// run times are shown in it.
    pub tz: Tz,
    pub payload: CronPayload,
    pub target: CronTarget,
    /// Who creates it (`telegram:42`, `cli`); the tool shows a user only their own jobs.
    pub owner: Option<String>,
    /// Overrides `tools.cron.misfire`.
    pub misfire: Option<MisfirePolicy>,
}

/// The cheap-clone front door to scheduled jobs: the `cron` tool, the CLI and the gateway
/// add and remove jobs through it, and it wakes the [`super::Scheduler`] of this process
/// (another process's scheduler notices within its poll interval).
#[derive(Clone)]
pub struct CronHandle {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    changed: Notify,
    clock: Arc<dyn Clock>,
    default_tz: Tz,
    misfire: MisfirePolicy,
    history_per_job: usize,
    max_jobs: usize,
}

impl std::fmt::Debug for CronHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CronHandle")
            .field("default_tz", &self.inner.default_tz)
            .field("max_jobs", &self.inner.max_jobs)
            .finish()
    }
}

/// Longest generated job name, in characters.
const NAME_CHARS: usize = 60;

impl CronHandle {
    /// A handle on the system clock. Fails when `cfg.default_tz` is not a time zone.
    pub fn new(store: Store, cfg: &CronConfig) -> Result<Self, CronError> {
        Self::with_clock(store, cfg, Arc::new(SystemClock))
    }

    pub fn with_clock(
        store: Store,
        cfg: &CronConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, CronError> {
        let default_tz = parse_tz(&cfg.default_tz).map_err(|_| {
            CronError::Invalid(format!(
                "tools.cron.default_tz must be an IANA time zone like \"Europe/Berlin\" or empty \
                 for UTC, got {:?}",
                cfg.default_tz
            ))
        })?;
        Ok(Self {
            inner: Arc::new(Inner {
                store,
                changed: Notify::new(),
                clock,
                default_tz,
                misfire: cfg.misfire,
                history_per_job: cfg.history_per_job.max(1) as usize,
                max_jobs: cfg.max_jobs as usize,
            }),
        })
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The zone of jobs created without one (`tools.cron.default_tz`, else UTC).
    pub fn default_tz(&self) -> Tz {
        self.inner.default_tz
    }

    pub fn now(&self) -> DateTime<Utc> {
        self.inner.clock.now()
    }

    pub(crate) fn clock(&self) -> Arc<dyn Clock> {
        self.inner.clock.clone()
    }

    pub(crate) fn misfire(&self) -> MisfirePolicy {
        self.inner.misfire
    }

    pub(crate) fn history_per_job(&self) -> usize {
        self.inner.history_per_job
    }

    pub(crate) fn changed(&self) -> &Notify {
        &self.inner.changed
    }

    /// Wake the scheduler to re-read the jobs (after changing them behind its back).
    pub fn poke(&self) {
        // One waiter (the scheduler loop); a poke while it is busy is kept for its next wait.
        self.inner.changed.notify_one();
    }

    /// Validate and store a job, with its first run computed; refuses past one-shots,
    /// patterns that never match, empty texts and more than `max_jobs` jobs.
    pub async fn add(&self, job: NewJob) -> Result<CronJob, CronError> {
        let now = self.now();
        let text = match &job.payload {
            CronPayload::Message { text } | CronPayload::Prompt { text } => text.trim(),
            CronPayload::Tool { name, .. } => name.trim(),
        };
        if text.is_empty() {
            return Err(CronError::Invalid(format!(
                "the {} of a job must not be empty",
                job.payload.kind()
            )));
        }
        let next = job
            .schedule
            .next_after(now)
            .ok_or_else(|| match &job.schedule {
                Schedule::At(t) => CronError::Invalid(format!(
                    "`at` must be in the future, got {} (now {})",
                    super::format_local(*t, job.tz),
                    super::format_local(now, job.tz)
                )),
                other => {
                    CronError::Invalid(format!("`{}` {:?} never runs", other.kind(), other.expr()))
                }
            })?;
        let name = match job.name.trim() {
            "" => shorten(text, NAME_CHARS),
            n => n.to_string(),
        };
        let stored = CronJob {
            id: new_id(),
            name,
            schedule_kind: job.schedule.kind().into(),
            schedule_expr: job.schedule.expr(),
            tz: job.tz.name().into(),
            payload: job.payload,
            target: job.target,
            enabled: true,
            run_now: false,
            next_run_ms: Some(next.timestamp_millis()),
            last_run_ms: None,
            last_status: None,
            misfire: job.misfire,
            owner: job.owner,
            created_ms: now.timestamp_millis(),
        };
        if !self
            .inner
            .store
            .cron_add(stored.clone(), self.inner.max_jobs)
            .await?
        {
            return Err(CronError::Full {
                max: self.inner.max_jobs,
            });
        }
        self.poke();
        Ok(stored)
    }

    pub async fn get(&self, id: &str) -> Result<Option<CronJob>, CronError> {
        Ok(self.inner.store.cron_get(id).await?)
    }

    /// Every job, oldest first.
    pub async fn list(&self) -> Result<Vec<CronJob>, CronError> {
        Ok(self.inner.store.cron_list().await?)
    }

    /// Delete a job and its history. Returns whether it existed.
    pub async fn remove(&self, id: &str) -> Result<bool, CronError> {
        let found = self.inner.store.cron_remove(id).await?;
        self.poke();
        Ok(found)
    }

    /// Pause or resume a job; resuming schedules its next run from now. Returns whether
    /// the job exists. Resuming a spent one-shot fails: it has no future run.
    pub async fn set_enabled(&self, id: &str, enabled: bool) -> Result<bool, CronError> {
        let Some(job) = self.get(id).await? else {
            return Ok(false);
        };
        let next = if enabled {
            let schedule = Schedule::from_stored(&job.schedule_kind, &job.schedule_expr, &job.tz)?;
            let next = schedule.next_after(self.now()).ok_or_else(|| {
                CronError::Invalid(format!(
                    "job {id} has no future run ({} {})",
                    job.schedule_kind, job.schedule_expr
                ))
            })?;
            Some(next.timestamp_millis())
        } else {
            None
        };
        let found = self.inner.store.cron_set_enabled(id, enabled, next).await?;
        self.poke();
        Ok(found)
    }

    /// Ask for a run now, whatever the schedule. Returns whether the job exists.
    pub async fn run_now(&self, id: &str) -> Result<bool, CronError> {
        let found = self.inner.store.cron_run_now(id).await?;
        self.poke();
        Ok(found)
    }

    /// A job's newest runs, newest first.
    pub async fn runs(&self, id: &str, limit: usize) -> Result<Vec<CronRun>, CronError> {
        Ok(self.inner.store.cron_runs(id, limit).await?)
    }
}

/// A short id that people can type: 8 hex digits of a random UUID.
fn new_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

pub(crate) fn shorten(s: &str, max_chars: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", s[..i].trim_end()),
        None => s.to_string(),
    }
}
