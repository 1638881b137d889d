//! The PostgreSQL backend: for gateway replicas on several machines sharing one database.
//!
//! A `sqlx` connection pool; the schema comes from `migrations/postgres/`, applied at
//! connect time under PostgreSQL's advisory migration lock (replicas starting together
//! wait for each other instead of racing). Queries are built at run time (no database is
//! needed to compile). Work that must happen once across replicas is claimed with
//! `FOR UPDATE SKIP LOCKED` (see the crate docs). The channel, pairing and cron queries
//! live in `channels.rs` and `cron.rs`.
//!
//! While the database is unreachable every call fails within `acquire_timeout` with
//! [`StoreError::Unavailable`] (HTTP 503), and the pool reconnects by itself once it is back.

mod channels;
mod cron;

use crate::{
    now_ms, row_to_message, row_to_session, title_of, NewMessage, SessionRow, StoreError,
    StoredMessage, StoredReply, TurnRecord, MESSAGE_COLUMNS, SESSION_COLUMNS,
};
use moltbot_core::Role;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::AssertSqlSafe;
use sqlx::Row;
use std::str::FromStr;
use std::time::Duration;

/// How to reach the database. `Debug` leaves the URL out (it may hold the password).
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user:password@host:port/database`.
    url: String,
    /// Tables live in this schema (created if missing) instead of `public`: several
    /// deployments (or test runs) can share one database.
    pub schema: Option<String>,
    pub max_connections: u32,
    /// How long a call waits for a connection before failing with `Unavailable`.
    pub acquire_timeout: Duration,
}

impl std::fmt::Debug for PgOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgOptions")
            .field("url", &"***")
            .field("schema", &self.schema)
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .finish()
    }
}

impl PgOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            schema: None,
            max_connections: 16,
            acquire_timeout: Duration::from_secs(3),
        }
    }

    pub fn schema(mut self, schema: impl Into<String>) -> Self {
        self.schema = Some(schema.into());
        self
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        let down = match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed => true,
            // Class 08: connection exceptions; 57P: the server is shutting down or starting.
            sqlx::Error::Database(db) => db
                .code()
                .is_some_and(|c| c.starts_with("08") || c.starts_with("57P")),
            _ => false,
        };
        if down {
            StoreError::Unavailable(e.to_string())
        } else {
            StoreError::Postgres(e.to_string())
        }
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        match e {
            sqlx::migrate::MigrateError::Execute(e) => e.into(),
            e => StoreError::Postgres(format!("migration failed: {e}")),
        }
    }
}

/// A fragment written for SQLite's `?N` parameters, for PostgreSQL (`$N`).
pub(crate) fn pg_params(sql: &str) -> String {
    sql.replace('?', "$")
}

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Clone)]
pub(crate) struct PgStore {
    pool: PgPool,
}

/// A schema name is spliced into SQL (it cannot be a bind parameter): letters, digits and
/// `_` only.
fn check_schema(name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !name.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(StoreError::Postgres(format!(
            "schema {name:?}: use 1–63 letters, digits or '_', not starting with a digit"
        )))
    }
}

impl PgStore {
    pub async fn connect(opts: &PgOptions) -> Result<PgStore, StoreError> {
        let mut connect = PgConnectOptions::from_str(&opts.url)
            .map_err(|e| StoreError::Postgres(format!("data.database_url: {e}")))?
            .application_name("moltbot");
        if let Some(schema) = &opts.schema {
            check_schema(schema)?;
            // Create the schema first, on a connection of its own (the pool's connections
            // are bound to it through search_path).
            let admin = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(opts.acquire_timeout)
                .connect_with(connect.clone())
                .await?;
            // `IF NOT EXISTS` is not safe against a concurrent create (replicas starting
            // together): serialise the creators.
            let mut tx = admin.begin().await?;
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('moltbot-schema', 0))")
                .execute(&mut *tx)
                .await?;
            sqlx::query(AssertSqlSafe(format!(
                "CREATE SCHEMA IF NOT EXISTS {schema}"
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            admin.close().await;
            connect = connect.options([("search_path", schema.as_str())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections)
            .acquire_timeout(opts.acquire_timeout)
            // A connection broken while the server restarted is found out before use.
            .test_before_acquire(true)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await?;
        Ok(PgStore { pool })
    }

    pub(crate) fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn append_turn(
        &self,
        session_id: &str,
        user: Option<&str>,
        channel: &str,
        turn_id: Option<&str>,
        messages: Vec<NewMessage>,
    ) -> Result<(), StoreError> {
        let now = now_ms();
        let title = title_of(&messages);
        let mut tx = self.pool.begin().await?;
        // The session row first: it also serialises concurrent appends to one session. Its
        // `updated_at` goes above every other session's, so newest-first follows the order
        // of writes even within one millisecond.
        sqlx::query(
            "INSERT INTO sessions (id, \"user\", channel, created_at, updated_at, message_count, title)
             VALUES ($1, $2, $3, $4,
                     GREATEST($4, COALESCE((SELECT MAX(updated_at) FROM sessions), 0) + 1), 0, $5)
             ON CONFLICT (id) DO UPDATE SET updated_at = excluded.updated_at,
                 \"user\" = COALESCE(sessions.\"user\", excluded.\"user\"),
                 title = COALESCE(sessions.title, excluded.title)",
        )
        .bind(session_id)
        .bind(user)
        .bind(channel)
        .bind(now)
        .bind(title)
        .execute(&mut *tx)
        .await?;
        let mut inserted = 0i64;
        for m in &messages {
            // A second message of the same role for this turn hits the unique index.
            inserted += sqlx::query(
                "INSERT INTO messages (session_id, role, content, created_at, model,
                     prompt_tokens, completion_tokens, turn_id)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
            )
            .bind(session_id)
            .bind(m.role.as_str())
            .bind(&m.content)
            .bind(now)
            .bind(&m.model)
            .bind(m.prompt_tokens.map(i64::from))
            .bind(m.completion_tokens.map(i64::from))
            .bind(turn_id)
            .execute(&mut *tx)
            .await?
            .rows_affected() as i64;
        }
        sqlx::query("UPDATE sessions SET message_count = message_count + $2 WHERE id = $1")
            .bind(session_id)
            .bind(inserted)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn turn_record(&self, turn_id: &str) -> Result<TurnRecord, StoreError> {
        let rows = sqlx::query(
            "SELECT role, content, model, prompt_tokens, completion_tokens FROM messages
             WHERE turn_id = $1",
        )
        .bind(turn_id)
        .fetch_all(&self.pool)
        .await?;
        let mut record = TurnRecord::default();
        for r in rows {
            match Role::parse(r.try_get::<&str, _>(0)?) {
                Some(Role::User) => record.user_stored = true,
                Some(Role::Assistant) => {
                    use crate::rows::Cols;
                    record.reply = Some(StoredReply {
                        content: r.text(1)?,
                        model: r.opt_text(2)?,
                        prompt_tokens: r.opt_count(3)?,
                        completion_tokens: r.opt_count(4)?,
                    })
                }
                _ => {}
            }
        }
        Ok(record)
    }

    pub async fn recent_messages(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = $1
             ORDER BY id DESC LIMIT $2"
        )))
        .bind(session_id)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut out = decode(&rows, row_to_message)?;
        out.reverse();
        Ok(out)
    }

    pub async fn list_sessions(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<SessionRow>, i64), StoreError> {
        let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions")
            .fetch_one(&self.pool)
            .await?;
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY updated_at DESC, id
             LIMIT $1 OFFSET $2"
        )))
        .bind(limit as i64)
        .bind(offset as i64)
        .fetch_all(&self.pool)
        .await?;
        Ok((decode(&rows, row_to_session)?, total))
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {SESSION_COLUMNS} FROM sessions WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.as_ref().map(row_to_session).transpose()?)
    }

    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        // Messages go with the session (ON DELETE CASCADE).
        let n = sqlx::query("DELETE FROM sessions WHERE id = $1")
            .bind(id)
            .execute(&self.pool)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// Decode every row with one of the shared `row_to_*` functions.
pub(crate) fn decode<T>(
    rows: &[PgRow],
    f: impl Fn(&PgRow) -> Result<T, sqlx::Error>,
) -> Result<Vec<T>, StoreError> {
    rows.iter()
        .map(|r| f(r).map_err(StoreError::from))
        .collect()
}
