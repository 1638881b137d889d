//! Scheduled jobs and their run history (`cron_jobs`, `cron_runs`).
//!
//! The store keeps a job's schedule as text (`kind`, `expr`, `tz`); parsing and computing
//! the next run time belong to `moltbot-tools`' cron module, which writes `next_run_ms`.
//! A manual "run now" (from the CLI, possibly in another process) only sets `run_now`; the
//! gateway's scheduler re-reads the store every few seconds and picks it up.

use crate::rows::Cols;
use crate::sqlite::SqliteStore;
use crate::StoreError;
use moltbot_core::config::MisfirePolicy;
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

pub(crate) const SCHEMA_V3: &str = "
CREATE TABLE IF NOT EXISTS cron_jobs (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL,
    schedule_kind  TEXT NOT NULL,
    schedule_expr  TEXT NOT NULL,
    tz             TEXT NOT NULL,
    payload_kind   TEXT NOT NULL,
    payload_text   TEXT NOT NULL,
    payload_args   TEXT,
    target_channel TEXT,
    target_chat_id TEXT,
    target_session TEXT,
    enabled        INTEGER NOT NULL DEFAULT 1,
    run_now        INTEGER NOT NULL DEFAULT 0,
    next_run_ms    INTEGER,
    last_run_ms    INTEGER,
    last_status    TEXT,
    misfire        TEXT,
    owner          TEXT,
    created_ms     INTEGER NOT NULL,
    CHECK ((target_session IS NULL) != (target_channel IS NULL AND target_chat_id IS NULL))
);
CREATE INDEX IF NOT EXISTS cron_jobs_due ON cron_jobs(enabled, next_run_ms);
CREATE TABLE IF NOT EXISTS cron_runs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL REFERENCES cron_jobs(id) ON DELETE CASCADE,
    scheduled_ms INTEGER NOT NULL,
    started_ms   INTEGER NOT NULL,
    finished_ms  INTEGER NOT NULL,
    status       TEXT NOT NULL,
    trigger      TEXT NOT NULL,
    output       TEXT
);
CREATE INDEX IF NOT EXISTS cron_runs_job ON cron_runs(job_id, id);
";

/// Longest output or error text kept per run, in characters.
pub const CRON_OUTPUT_MAX_CHARS: usize = 2_000;

/// What a job does when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CronPayload {
    /// Deliver this text as it is (a reminder).
    Message { text: String },
    /// Run this prompt through the assistant and deliver the answer.
    Prompt { text: String },
    /// Call a tool with these arguments (a JSON object, as text) and deliver its output.
    Tool { name: String, args: String },
}

impl CronPayload {
    pub fn kind(&self) -> &'static str {
        match self {
            CronPayload::Message { .. } => "message",
            CronPayload::Prompt { .. } => "prompt",
            CronPayload::Tool { .. } => "tool",
        }
    }
}

/// Where a job's output goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CronTarget {
    /// A chat of a messaging channel, through the outbox.
    Chat { channel: String, chat_id: String },
    /// A stored conversation (HTTP/WebSocket clients read it there).
    Session { id: String },
}

/// A scheduled job as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CronJob {
    /// A UUID.
    pub id: String,
    /// A human label.
    pub name: String,
    /// `cron`, `every` or `at`.
    pub schedule_kind: String,
    /// The cron pattern, the interval (`10m`) or the instant (RFC 3339, UTC).
    pub schedule_expr: String,
    /// IANA time zone the schedule is read in.
    pub tz: String,
    pub payload: CronPayload,
    pub target: CronTarget,
    pub enabled: bool,
    /// A manual run was asked for and has not started yet.
    pub run_now: bool,
    /// Milliseconds since the epoch; `None` when nothing is scheduled (a spent one-shot).
    pub next_run_ms: Option<i64>,
    pub last_run_ms: Option<i64>,
    pub last_status: Option<CronRunStatus>,
    /// Overrides `tools.cron.misfire` for this job.
    pub misfire: Option<MisfirePolicy>,
    /// Who created it (`telegram:42`, `cli`).
    pub owner: Option<String>,
    pub created_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CronRunStatus {
    Ok,
    Error,
    Skipped,
}

impl CronRunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CronRunStatus::Ok => "ok",
            CronRunStatus::Error => "error",
            CronRunStatus::Skipped => "skipped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "ok" => Some(CronRunStatus::Ok),
            "error" => Some(CronRunStatus::Error),
            "skipped" => Some(CronRunStatus::Skipped),
            _ => None,
        }
    }
}

/// Why a run happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CronTrigger {
    /// Its time came.
    Scheduled,
    /// Someone asked (`moltbot cron run`).
    Manual,
    /// It fell due while the gateway was down (misfire policy).
    Catchup,
}

impl CronTrigger {
    pub fn as_str(self) -> &'static str {
        match self {
            CronTrigger::Scheduled => "scheduled",
            CronTrigger::Manual => "manual",
            CronTrigger::Catchup => "catchup",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "scheduled" => Some(CronTrigger::Scheduled),
            "manual" => Some(CronTrigger::Manual),
            "catchup" => Some(CronTrigger::Catchup),
            _ => None,
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CronRun {
    pub id: i64,
    pub job_id: String,
    /// The occurrence this run is for (the due time; for a manual run, when it was asked).
    pub scheduled_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub status: CronRunStatus,
    pub trigger: CronTrigger,
    /// The delivered text, the error or why it was skipped; cut at
    /// [`CRON_OUTPUT_MAX_CHARS`].
    pub output: Option<String>,
}

/// A run to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCronRun {
    pub job_id: String,
    pub scheduled_ms: i64,
    pub started_ms: i64,
    pub finished_ms: i64,
    pub status: CronRunStatus,
    pub trigger: CronTrigger,
    pub output: Option<String>,
}

pub(crate) fn misfire_str(m: MisfirePolicy) -> &'static str {
    match m {
        MisfirePolicy::RunOnce => "run_once",
        MisfirePolicy::Skip => "skip",
    }
}

fn misfire_parse(s: &str) -> Option<MisfirePolicy> {
    match s {
        "run_once" => Some(MisfirePolicy::RunOnce),
        "skip" => Some(MisfirePolicy::Skip),
        _ => None,
    }
}

/// Jobs due at `?1` and not claimed by anyone (or whose claim ran out).
pub(crate) const CRON_CLAIMABLE: &str = "(run_now = 1 OR (enabled = 1 AND next_run_ms <= ?1))
     AND (claimed_until IS NULL OR claimed_until <= ?1)";

pub(crate) const JOB_COLUMNS: &str = "id, name, schedule_kind, schedule_expr, tz, payload_kind, \
     payload_text, payload_args, target_channel, target_chat_id, target_session, enabled, \
     run_now, next_run_ms, last_run_ms, last_status, misfire, owner, created_ms";

pub(crate) fn row_to_job<R: Cols>(r: &R) -> Result<CronJob, R::Error> {
    let payload_kind = r.text(5)?;
    let payload_text = r.text(6)?;
    let payload = match payload_kind.as_str() {
        "message" => CronPayload::Message { text: payload_text },
        "prompt" => CronPayload::Prompt { text: payload_text },
        "tool" => CronPayload::Tool {
            name: payload_text,
            args: r.opt_text(7)?.unwrap_or_else(|| "{}".into()),
        },
        other => return Err(R::bad(5, format!("unknown payload kind {other:?}"))),
    };
    let target = match r.opt_text(10)? {
        Some(id) => CronTarget::Session { id },
        None => CronTarget::Chat {
            channel: r.opt_text(8)?.unwrap_or_default(),
            chat_id: r.opt_text(9)?.unwrap_or_default(),
        },
    };
    let last_status = r.opt_text(15)?;
    let misfire = r.opt_text(16)?;
    Ok(CronJob {
        id: r.text(0)?,
        name: r.text(1)?,
        schedule_kind: r.text(2)?,
        schedule_expr: r.text(3)?,
        tz: r.text(4)?,
        payload,
        target,
        enabled: r.flag(11)?,
        run_now: r.flag(12)?,
        next_run_ms: r.opt_int(13)?,
        last_run_ms: r.opt_int(14)?,
        last_status: last_status.as_deref().and_then(CronRunStatus::parse),
        misfire: misfire.as_deref().and_then(misfire_parse),
        owner: r.opt_text(17)?,
        created_ms: r.int(18)?,
    })
}

pub(crate) const RUN_COLUMNS: &str =
    "id, job_id, scheduled_ms, started_ms, finished_ms, status, trigger, output";

pub(crate) fn row_to_run<R: Cols>(r: &R) -> Result<CronRun, R::Error> {
    let status = r.text(5)?;
    let trigger = r.text(6)?;
    Ok(CronRun {
        id: r.int(0)?,
        job_id: r.text(1)?,
        scheduled_ms: r.int(2)?,
        started_ms: r.int(3)?,
        finished_ms: r.int(4)?,
        status: CronRunStatus::parse(&status)
            .ok_or_else(|| R::bad(5, format!("unknown run status {status:?}")))?,
        trigger: CronTrigger::parse(&trigger)
            .ok_or_else(|| R::bad(6, format!("unknown run trigger {trigger:?}")))?,
        output: r.opt_text(7)?,
    })
}

/// Claimed jobs in the order they start: manual runs first, then the earliest due (the
/// order of the claim query, which `RETURNING` does not keep).
pub(crate) fn sort_due(jobs: &mut [CronJob]) {
    jobs.sort_by(|a, b| {
        (!a.run_now, a.next_run_ms, &a.id).cmp(&(!b.run_now, b.next_run_ms, &b.id))
    });
}

pub(crate) fn cut(s: String, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

impl SqliteStore {
    /// Add a job unless there are already `max_jobs`. Returns whether it was stored.
    pub async fn cron_add(&self, job: CronJob, max_jobs: usize) -> Result<bool, StoreError> {
        let n = self
            .write(move |conn| {
                let count: i64 =
                    conn.query_row("SELECT COUNT(*) FROM cron_jobs", [], |r| r.get(0))?;
                if count >= max_jobs as i64 {
                    return Ok(0);
                }
                let (text, args) = match &job.payload {
                    CronPayload::Message { text } | CronPayload::Prompt { text } => (text, None),
                    CronPayload::Tool { name, args } => (name, Some(args)),
                };
                let (channel, chat_id, session) = match &job.target {
                    CronTarget::Chat { channel, chat_id } => (Some(channel), Some(chat_id), None),
                    CronTarget::Session { id } => (None, None, Some(id)),
                };
                Ok(conn.execute(
                    &format!(
                        "INSERT INTO cron_jobs ({JOB_COLUMNS}) VALUES
                         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16,
                          ?17, ?18, ?19)"
                    ),
                    params![
                        job.id,
                        job.name,
                        job.schedule_kind,
                        job.schedule_expr,
                        job.tz,
                        job.payload.kind(),
                        text,
                        args,
                        channel,
                        chat_id,
                        session,
                        job.enabled,
                        job.run_now,
                        job.next_run_ms,
                        job.last_run_ms,
                        job.last_status.map(CronRunStatus::as_str),
                        job.misfire.map(misfire_str),
                        job.owner,
                        job.created_ms,
                    ],
                )? as i64)
            })
            .await?;
        Ok(n == 1)
    }

    pub async fn cron_get(&self, id: &str) -> Result<Option<CronJob>, StoreError> {
        let id = id.to_string();
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {JOB_COLUMNS} FROM cron_jobs WHERE id = ?1"),
                    params![id],
                    |r| row_to_job(r),
                )
                .optional()?)
        })
        .await
    }

    /// Every job, oldest first.
    pub async fn cron_list(&self) -> Result<Vec<CronJob>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM cron_jobs ORDER BY created_ms, rowid"
            ))?;
            let rows = stmt
                .query_map([], |r| row_to_job(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn cron_count(&self) -> Result<i64, StoreError> {
        self.with_reader(|conn| {
            Ok(conn.query_row("SELECT COUNT(*) FROM cron_jobs", [], |r| r.get(0))?)
        })
        .await
    }

    /// Delete a job and its history. Returns whether it existed.
    pub async fn cron_remove(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        let n = self
            .write(move |conn| {
                conn.execute("DELETE FROM cron_runs WHERE job_id = ?1", params![id])?;
                Ok(conn.execute("DELETE FROM cron_jobs WHERE id = ?1", params![id])? as i64)
            })
            .await?;
        Ok(n > 0)
    }

    /// Pause or resume a job; resuming sets its next run (`next_run_ms`). Returns whether
    /// the job exists.
    pub async fn cron_set_enabled(
        &self,
        id: &str,
        enabled: bool,
        next_run_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        let n = self
            .write(move |conn| {
                Ok(if enabled {
                    conn.execute(
                        "UPDATE cron_jobs SET enabled = 1, next_run_ms = ?2 WHERE id = ?1",
                        params![id, next_run_ms],
                    )?
                } else {
                    conn.execute(
                        "UPDATE cron_jobs SET enabled = 0 WHERE id = ?1",
                        params![id],
                    )?
                } as i64)
            })
            .await?;
        Ok(n > 0)
    }

    /// Set when a job runs next; `None` leaves nothing scheduled and disables it (a spent
    /// one-shot). Returns whether the job exists.
    pub async fn cron_set_next_run(
        &self,
        id: &str,
        next_run_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let id = id.to_string();
        let n = self
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE cron_jobs SET next_run_ms = ?2,
                         enabled = CASE WHEN ?2 IS NULL THEN 0 ELSE enabled END
                     WHERE id = ?1",
                    params![id, next_run_ms],
                )? as i64)
            })
            .await?;
        Ok(n > 0)
    }

    /// Ask for a run as soon as possible, whatever the schedule (also for a paused job);
    /// the regular schedule is unchanged. Returns whether the job exists.
    pub async fn cron_run_now(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        let n = self
            .write(move |conn| {
                Ok(conn.execute(
                    "UPDATE cron_jobs SET run_now = 1 WHERE id = ?1",
                    params![id],
                )? as i64)
            })
            .await?;
        Ok(n > 0)
    }

    /// Clear a job's manual-run flag (its manual run has started).
    pub async fn cron_clear_run_now(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE cron_jobs SET run_now = 0 WHERE id = ?1",
                params![id],
            )? as i64)
        })
        .await
        .map(drop)
    }

    /// Jobs to start now: enabled and due at `now` (ms), or asked to run now. Earliest first.
    pub async fn cron_due(&self, now: i64, limit: usize) -> Result<Vec<CronJob>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {JOB_COLUMNS} FROM cron_jobs
                 WHERE run_now = 1 OR (enabled = 1 AND next_run_ms <= ?1)
                 ORDER BY run_now DESC, next_run_ms, id LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![now, limit as i64], |r| row_to_job(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn cron_claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<CronJob>, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "UPDATE cron_jobs SET claimed_until = ?1 + ?2
                 WHERE id IN (SELECT id FROM cron_jobs WHERE {CRON_CLAIMABLE}
                              ORDER BY run_now DESC, next_run_ms, id LIMIT ?3)
                 RETURNING {JOB_COLUMNS}"
            ))?;
            let mut jobs: Vec<CronJob> = stmt
                .query_map(params![now, lease_ms, limit as i64], |r| row_to_job(r))?
                .collect::<Result<_, _>>()?;
            sort_due(&mut jobs);
            let n = jobs.len() as i64;
            let _ = tx.send(jobs);
            Ok(n)
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    pub async fn cron_release(&self, id: &str) -> Result<(), StoreError> {
        let id = id.to_string();
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE cron_jobs SET claimed_until = NULL WHERE id = ?1",
                params![id],
            )? as i64)
        })
        .await
        .map(drop)
    }

    /// When the next job falls due (ms since the epoch): 0 when a manual run is waiting,
    /// `None` when nothing is scheduled.
    pub async fn cron_next_due(&self) -> Result<Option<i64>, StoreError> {
        self.with_reader(|conn| {
            Ok(conn.query_row(
                "SELECT CASE WHEN EXISTS (SELECT 1 FROM cron_jobs WHERE run_now = 1) THEN 0
                        ELSE (SELECT MIN(next_run_ms) FROM cron_jobs WHERE enabled = 1) END",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    /// Record a run, note it on the job and keep only the newest `keep` runs of the job.
    /// A run of a job deleted meanwhile is dropped. Returns the run id, if stored.
    pub async fn cron_record_run(
        &self,
        run: NewCronRun,
        keep: usize,
    ) -> Result<Option<i64>, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let output = run.output.map(|o| cut(o, CRON_OUTPUT_MAX_CHARS));
            let n = conn.execute(
                "INSERT INTO cron_runs (job_id, scheduled_ms, started_ms, finished_ms, status,
                     trigger, output)
                 SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE EXISTS (SELECT 1 FROM cron_jobs
                     WHERE id = ?1)",
                params![
                    run.job_id,
                    run.scheduled_ms,
                    run.started_ms,
                    run.finished_ms,
                    run.status.as_str(),
                    run.trigger.as_str(),
                    output
                ],
            )?;
            let id = (n == 1).then(|| conn.last_insert_rowid());
            if id.is_some() {
                conn.execute(
                    "UPDATE cron_jobs SET last_run_ms = ?2, last_status = ?3 WHERE id = ?1",
                    params![run.job_id, run.started_ms, run.status.as_str()],
                )?;
                conn.execute(
                    "DELETE FROM cron_runs WHERE job_id = ?1 AND id NOT IN
                         (SELECT id FROM cron_runs WHERE job_id = ?1 ORDER BY id DESC LIMIT ?2)",
                    params![run.job_id, keep as i64],
                )?;
            }
            let _ = tx.send(id);
            Ok(n as i64)
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// A job's newest runs, newest first.
    pub async fn cron_runs(&self, job_id: &str, limit: usize) -> Result<Vec<CronRun>, StoreError> {
        let job_id = job_id.to_string();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {RUN_COLUMNS} FROM cron_runs WHERE job_id = ?1 ORDER BY id DESC LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![job_id, limit as i64], |r| row_to_run(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn job(id: &str, next: Option<i64>) -> CronJob {
        CronJob {
            id: id.into(),
            name: format!("job {id}"),
            schedule_kind: "every".into(),
            schedule_expr: "10m".into(),
            tz: "UTC".into(),
            payload: CronPayload::Message {
                text: "drink water".into(),
            },
            target: CronTarget::Chat {
                channel: "telegram".into(),
                chat_id: "42".into(),
            },
            enabled: true,
            run_now: false,
            next_run_ms: next,
            last_run_ms: None,
            last_status: None,
            misfire: None,
            owner: Some("telegram:42".into()),
            created_ms: 1,
        }
    }

    fn run(job_id: &str, at: i64, status: CronRunStatus) -> NewCronRun {
        NewCronRun {
            job_id: job_id.into(),
            scheduled_ms: at,
            started_ms: at,
            finished_ms: at + 5,
            status,
            trigger: CronTrigger::Scheduled,
            output: Some(format!("run at {at}")),
        }
    }

    #[tokio::test]
    async fn cron_jobs_persist_and_come_due() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cron.db");
        {
            let store = Store::open(&path).unwrap();
            assert!(store.cron_add(job("a", Some(1_000)), 10).await.unwrap());
            let mut b = job("b", Some(5_000));
            b.payload = CronPayload::Tool {
                name: "web_fetch".into(),
                args: r#"{"url":"https://example.com"}"#.into(),
            };
            b.target = CronTarget::Session { id: "s1".into() };
            b.misfire = Some(MisfirePolicy::Skip);
            assert!(store.cron_add(b, 10).await.unwrap());
            // The id is the key.
            assert!(store.cron_add(job("a", None), 10).await.is_err());
            // The limit counts existing jobs.
            assert!(!store.cron_add(job("c", None), 2).await.unwrap());
        }
        let store = Store::open(&path).unwrap();
        let jobs = store.cron_list().await.unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(jobs[0], job("a", Some(1_000)));
        let b = store.cron_get("b").await.unwrap().unwrap();
        assert_eq!(b.target, CronTarget::Session { id: "s1".into() });
        assert_eq!(b.misfire, Some(MisfirePolicy::Skip));
        assert!(matches!(b.payload, CronPayload::Tool { ref name, .. } if name == "web_fetch"));
        assert_eq!(store.cron_count().await.unwrap(), 2);

        assert_eq!(store.cron_next_due().await.unwrap(), Some(1_000));
        let due: Vec<String> = store
            .cron_due(1_000, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|j| j.id)
            .collect();
        assert_eq!(due, vec!["a"]);
        assert!(store.cron_set_next_run("a", Some(7_000)).await.unwrap());
        assert_eq!(store.cron_next_due().await.unwrap(), Some(5_000));
        // Pausing takes a job out of the schedule; a manual run still happens.
        assert!(store.cron_set_enabled("b", false, None).await.unwrap());
        assert_eq!(store.cron_next_due().await.unwrap(), Some(7_000));
        assert!(store.cron_due(6_000, 10).await.unwrap().is_empty());
        assert!(store.cron_run_now("b").await.unwrap());
        assert!(!store.cron_run_now("nope").await.unwrap());
        assert_eq!(store.cron_next_due().await.unwrap(), Some(0));
        let due = store.cron_due(0, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert!(due[0].run_now && !due[0].enabled);
        store.cron_clear_run_now("b").await.unwrap();
        assert_eq!(store.cron_next_due().await.unwrap(), Some(7_000));
        assert!(store
            .cron_set_enabled("b", true, Some(9_000))
            .await
            .unwrap());
        // A spent one-shot: no next run, disabled.
        assert!(store.cron_set_next_run("a", None).await.unwrap());
        let a = store.cron_get("a").await.unwrap().unwrap();
        assert!(!a.enabled && a.next_run_ms.is_none());
        assert_eq!(store.cron_next_due().await.unwrap(), Some(9_000));

        assert!(store.cron_remove("a").await.unwrap());
        assert!(!store.cron_remove("a").await.unwrap());
        assert!(store.cron_get("a").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn cron_runs_are_recorded_pruned_and_truncated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("runs.db")).unwrap();
        store.cron_add(job("a", Some(0)), 10).await.unwrap();
        for i in 0..5 {
            let status = if i == 3 {
                CronRunStatus::Error
            } else {
                CronRunStatus::Ok
            };
            assert!(store
                .cron_record_run(run("a", i * 100, status), 3)
                .await
                .unwrap()
                .is_some());
        }
        let runs = store.cron_runs("a", 10).await.unwrap();
        let at: Vec<i64> = runs.iter().map(|r| r.scheduled_ms).collect();
        assert_eq!(at, vec![400, 300, 200], "newest first, only 3 kept");
        assert_eq!(runs[1].status, CronRunStatus::Error);
        assert_eq!(runs[0].trigger, CronTrigger::Scheduled);
        assert_eq!(store.cron_runs("a", 1).await.unwrap().len(), 1);
        let a = store.cron_get("a").await.unwrap().unwrap();
        assert_eq!(a.last_run_ms, Some(400));
        assert_eq!(a.last_status, Some(CronRunStatus::Ok));

        let mut long = run("a", 500, CronRunStatus::Skipped);
        long.output = Some("é".repeat(CRON_OUTPUT_MAX_CHARS + 10));
        long.trigger = CronTrigger::Catchup;
        store.cron_record_run(long, 3).await.unwrap();
        let last = &store.cron_runs("a", 1).await.unwrap()[0];
        assert_eq!(last.trigger, CronTrigger::Catchup);
        assert_eq!(
            last.output.as_ref().unwrap().chars().count(),
            CRON_OUTPUT_MAX_CHARS + 1
        );

        // A run of a job removed meanwhile is dropped, not an error.
        assert!(store
            .cron_record_run(run("gone", 1, CronRunStatus::Ok), 3)
            .await
            .unwrap()
            .is_none());
        // Removing a job removes its history.
        store.cron_remove("a").await.unwrap();
        assert!(store.cron_runs("a", 10).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_version_2_database_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v2.db");
        {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.execute_batch(crate::sqlite::SCHEMA_V1).unwrap();
            conn.execute_batch(crate::channels::SCHEMA_V2).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            conn.execute(
                "INSERT INTO sessions (id, channel, created_at, updated_at) VALUES ('old', 'http', 1, 1)",
                [],
            )
            .unwrap();
            let has_cron: i64 = conn
                .query_row(
                    "SELECT COUNT(*) FROM sqlite_master WHERE name = 'cron_jobs'",
                    [],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(has_cron, 0);
        }
        let store = Store::open(&path).unwrap();
        assert!(store.session("old").await.unwrap().is_some());
        assert!(store.cron_add(job("a", Some(1)), 10).await.unwrap());
        assert_eq!(store.cron_list().await.unwrap().len(), 1);
        drop(store);
        let conn = rusqlite::Connection::open(&path).unwrap();
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(version, crate::sqlite::SCHEMA_VERSION);
    }
}
