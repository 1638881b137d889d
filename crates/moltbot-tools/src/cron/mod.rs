//! Scheduled jobs: reminders, recurring prompts and tool calls.
//!
//! # Layout
//! - `schedule`: [`Schedule`] (cron pattern in a time zone, interval, one-shot) and
//!   `next_after`, DST-aware.
//! - `handle`: [`CronHandle`], the cheap-clone front door used by the tool, the CLI and the
//!   gateway: validates and stores jobs (in `moltbot-store`'s `cron_jobs`) and pokes the
//!   scheduler.
//! - `scheduler`: [`Scheduler`], one loop that sleeps until the next due job, wakes when
//!   jobs change and re-reads the store every few seconds (jobs added by the CLI); runs
//!   jobs through a [`JobRunner`] with bounded concurrency and records each run.
//! - `tool`: [`CronTool`], the `cron` tool (`add`, `list`, `remove`).
//!
//! Time comes from a [`Clock`] so tests drive it with tokio's paused clock.

mod handle;
pub mod natural;
mod schedule;
mod scheduler;
mod tool;

pub use handle::{CronHandle, NewJob};
pub use schedule::{
    format_duration, format_local, format_local_ms, parse_tz, CronExpr, Schedule, ScheduleError,
    MAX_EVERY, MIN_EVERY,
};
pub use scheduler::{JobRunner, Scheduler, SchedulerOptions, REMINDER_PREFIX};
pub use tool::CronTool;

pub use chrono_tz::Tz;
pub use moltbot_store::{CronJob, CronPayload, CronRun, CronRunStatus, CronTarget, CronTrigger};

use chrono::{DateTime, Utc};
use moltbot_store::StoreError;

/// Where the scheduler and the handle read the time.
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> DateTime<Utc>;
}

/// The system's wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time that follows tokio's clock from a fixed start: with `tokio::time::pause`, the
/// scheduler's idea of "now" moves only when the test advances time.
#[derive(Debug, Clone, Copy)]
pub struct TokioClock {
    start_wall: DateTime<Utc>,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `t` now. Call inside a tokio runtime.
    pub fn starting_at(t: DateTime<Utc>) -> Self {
        Self {
            start_wall: t,
            start: tokio::time::Instant::now(),
        }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now() - self.start;
        // An elapsed time beyond chrono's range (hundreds of years) cannot happen in a test.
        chrono::Duration::from_std(elapsed)
            .ok()
            .and_then(|d| self.start_wall.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CronError {
    /// A bad schedule or time zone; the message names the field.
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    /// Another bad argument (empty text, a schedule with no future run).
    #[error("{0}")]
    Invalid(String),
    #[error(
        "there are already {max} scheduled jobs, the most allowed (tools.cron.max_jobs)\n\
         hint: remove one first"
    )]
    Full { max: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl CronError {
    pub fn kind(&self) -> &'static str {
        match self {
            CronError::Schedule(_) | CronError::Invalid(_) => "cron_invalid",
            CronError::Full { .. } => "cron_full",
            CronError::Store(e) => e.kind(),
        }
    }
}

/// Describe the cron metrics once (the gateway calls this next to its own descriptions).
pub fn describe_metrics() {
    metrics::describe_counter!(
        "moltbot_cron_runs_total",
        "Scheduled job runs, by status (ok, error, skipped)."
    );
}
