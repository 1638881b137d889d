//! Cron jobs and their runs on PostgreSQL. The SQLite versions, and what each method
//! promises, are in `src/cron.rs`.

use super::channels::lock_key;
use super::{decode, PgStore};
use crate::cron::{cut, misfire_str, row_to_job, row_to_run, sort_due, JOB_COLUMNS, RUN_COLUMNS};
use crate::{
    CronJob, CronPayload, CronRun, CronRunStatus, CronTarget, NewCronRun, StoreError,
    CRON_OUTPUT_MAX_CHARS,
};
use sqlx::AssertSqlSafe;

/// Due jobs not claimed by anyone (or whose claim ran out) at `$1`.
const CLAIMABLE: &str = "(run_now OR (enabled AND next_run_ms <= $1))
     AND (claimed_until IS NULL OR claimed_until <= $1)";

impl PgStore {
    pub async fn cron_add(&self, job: CronJob, max_jobs: usize) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        lock_key(&mut tx, "cron_jobs").await?;
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM cron_jobs")
            .fetch_one(&mut *tx)
            .await?;
        if count >= max_jobs as i64 {
            tx.commit().await?;
            return Ok(false);
        }
        let (text, args) = match &job.payload {
            CronPayload::Message { text } | CronPayload::Prompt { text } => (text, None),
            CronPayload::Tool { name, args } => (name, Some(args)),
        };
        let (channel, chat_id, session) = match &job.target {
            CronTarget::Chat { channel, chat_id } => (Some(channel), Some(chat_id), None),
            CronTarget::Session { id } => (None, None, Some(id)),
        };
        let n = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO cron_jobs ({JOB_COLUMNS}) VALUES
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19)"
        )))
        .bind(&job.id)
        .bind(&job.name)
        .bind(&job.schedule_kind)
        .bind(&job.schedule_expr)
        .bind(&job.tz)
        .bind(job.payload.kind())
        .bind(text)
        .bind(args)
        .bind(channel)
        .bind(chat_id)
        .bind(session)
        .bind(job.enabled)
        .bind(job.run_now)
        .bind(job.next_run_ms)
        .bind(job.last_run_ms)
        .bind(job.last_status.map(CronRunStatus::as_str))
        .bind(job.misfire.map(misfire_str))
        .bind(&job.owner)
        .bind(job.created_ms)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(n == 1)
    }

    pub async fn cron_get(&self, id: &str) -> Result<Option<CronJob>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM cron_jobs WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(row_to_job).transpose()?)
    }

    pub async fn cron_list(&self) -> Result<Vec<CronJob>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM cron_jobs ORDER BY created_ms, seq"
        )))
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_job)
    }

    pub async fn cron_count(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM cron_jobs")
            .fetch_one(self.pool())
            .await?)
    }

    pub async fn cron_remove(&self, id: &str) -> Result<bool, StoreError> {
        // Runs go with the job (ON DELETE CASCADE).
        let n = sqlx::query("DELETE FROM cron_jobs WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    pub async fn cron_set_enabled(
        &self,
        id: &str,
        enabled: bool,
        next_run_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let q = if enabled {
            sqlx::query("UPDATE cron_jobs SET enabled = TRUE, next_run_ms = $2 WHERE id = $1")
                .bind(id)
                .bind(next_run_ms)
        } else {
            sqlx::query("UPDATE cron_jobs SET enabled = FALSE WHERE id = $1").bind(id)
        };
        Ok(q.execute(self.pool()).await?.rows_affected() > 0)
    }

    pub async fn cron_set_next_run(
        &self,
        id: &str,
        next_run_ms: Option<i64>,
    ) -> Result<bool, StoreError> {
        let n = sqlx::query(
            "UPDATE cron_jobs SET next_run_ms = $2,
                 enabled = CASE WHEN $2::BIGINT IS NULL THEN FALSE ELSE enabled END
             WHERE id = $1",
        )
        .bind(id)
        .bind(next_run_ms)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    pub async fn cron_run_now(&self, id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("UPDATE cron_jobs SET run_now = TRUE WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    pub async fn cron_clear_run_now(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE cron_jobs SET run_now = FALSE WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn cron_due(&self, now: i64, limit: usize) -> Result<Vec<CronJob>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {JOB_COLUMNS} FROM cron_jobs
             WHERE run_now OR (enabled AND next_run_ms <= $1)
             ORDER BY run_now DESC, next_run_ms, id LIMIT $2"
        )))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_job)
    }

    pub async fn cron_claim_due(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<CronJob>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE cron_jobs SET claimed_until = $1 + $2
             WHERE id IN (SELECT id FROM cron_jobs WHERE {CLAIMABLE}
                          ORDER BY run_now DESC, next_run_ms, id LIMIT $3
                          FOR UPDATE SKIP LOCKED)
             RETURNING {JOB_COLUMNS}"
        )))
        .bind(now)
        .bind(lease_ms)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        let mut jobs = decode(&rows, row_to_job)?;
        sort_due(&mut jobs);
        Ok(jobs)
    }

    pub async fn cron_release(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE cron_jobs SET claimed_until = NULL WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn cron_next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM cron_jobs WHERE run_now) THEN 0
                    ELSE (SELECT MIN(next_run_ms) FROM cron_jobs WHERE enabled) END",
        )
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn cron_record_run(
        &self,
        run: NewCronRun,
        keep: usize,
    ) -> Result<Option<i64>, StoreError> {
        let output = run.output.map(|o| cut(o, CRON_OUTPUT_MAX_CHARS));
        let mut tx = self.pool().begin().await?;
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO cron_runs (job_id, scheduled_ms, started_ms, finished_ms, status,
                 trigger, output)
             SELECT $1, $2, $3, $4, $5, $6, $7 WHERE EXISTS (SELECT 1 FROM cron_jobs
                 WHERE id = $1)
             RETURNING id",
        )
        .bind(&run.job_id)
        .bind(run.scheduled_ms)
        .bind(run.started_ms)
        .bind(run.finished_ms)
        .bind(run.status.as_str())
        .bind(run.trigger.as_str())
        .bind(output)
        .fetch_optional(&mut *tx)
        .await?;
        if id.is_some() {
            sqlx::query("UPDATE cron_jobs SET last_run_ms = $2, last_status = $3 WHERE id = $1")
                .bind(&run.job_id)
                .bind(run.started_ms)
                .bind(run.status.as_str())
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM cron_runs WHERE job_id = $1 AND id NOT IN
                     (SELECT id FROM cron_runs WHERE job_id = $1 ORDER BY id DESC LIMIT $2)",
            )
            .bind(&run.job_id)
            .bind(keep as i64)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(id)
    }

    pub async fn cron_runs(&self, job_id: &str, limit: usize) -> Result<Vec<CronRun>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {RUN_COLUMNS} FROM cron_runs WHERE job_id = $1 ORDER BY id DESC LIMIT $2"
        )))
        .bind(job_id)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_run)
    }
}
