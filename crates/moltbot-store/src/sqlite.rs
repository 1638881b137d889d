//! The SQLite backend: one database file in WAL mode.
//!
//! Writes go to one writer thread that owns the write connection and commits in groups:
//! it takes every write waiting in its queue, runs each inside its own savepoint (so one
//! failing write does not undo the others) and commits them in one transaction. Under load
//! that turns hundreds of commits per second into a few, without delaying a lone write.
//! Reads use a second connection behind a std `Mutex`, only ever held inside
//! `spawn_blocking` (never across an `.await`); WAL lets it read while the writer commits.
//! Several processes on one host may share the file (busy timeout), but only PostgreSQL
//! serves replicas on several machines.
//!
//! The channel, pairing and cron queries of this backend live beside their row types
//! (`channels.rs`, `pairing.rs`, `cron.rs`).

use crate::{
    now_ms, row_to_message, row_to_session, title_of, NewMessage, SessionRow, StoreError,
    StoredMessage, StoredReply, TurnRecord, MESSAGE_COLUMNS, SESSION_COLUMNS,
};
use moltbot_core::Role;
use rusqlite::{params, Connection, OptionalExtension};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub(crate) struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: tokio::sync::mpsc::Sender<WriteJob>,
    reader: Mutex<Connection>,
}

/// One write: SQL run on the writer connection inside a savepoint; returns a row count.
type WriteOp = Box<dyn FnOnce(&Connection) -> Result<i64, StoreError> + Send>;

struct WriteJob {
    op: WriteOp,
    done: tokio::sync::oneshot::Sender<Result<i64, StoreError>>,
}

/// Most writes folded into one commit.
const MAX_GROUP: usize = 256;

/// The writer thread: group commit until every `Store` handle is gone.
fn writer_loop(mut conn: Connection, mut jobs: tokio::sync::mpsc::Receiver<WriteJob>) {
    while let Some(first) = jobs.blocking_recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut results = Vec::with_capacity(group.len());
        let mut waiting = Vec::with_capacity(group.len());
        let committed = (|| -> Result<(), rusqlite::Error> {
            let mut tx = conn.transaction()?;
            for job in group {
                let mut sp = tx.savepoint()?;
                let r = (job.op)(&sp);
                if r.is_ok() {
                    sp.commit()?;
                } else {
                    sp.rollback()?;
                }
                results.push(r);
                waiting.push(job.done);
            }
            tx.commit()
        })();
        match committed {
            Ok(()) => {
                for (done, r) in waiting.into_iter().zip(results) {
                    let _ = done.send(r);
                }
            }
            Err(e) => {
                let msg = e.to_string();
                for done in waiting {
                    let _ = done.send(Err(StoreError::Commit(msg.clone())));
                }
            }
        }
    }
}

pub(crate) const SCHEMA_VERSION: i32 = 5;

pub(crate) const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id            TEXT PRIMARY KEY,
    user          TEXT,
    channel       TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    message_count INTEGER NOT NULL DEFAULT 0,
    title         TEXT
);
CREATE INDEX IF NOT EXISTS sessions_updated ON sessions(updated_at DESC);
CREATE TABLE IF NOT EXISTS messages (
    id                INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id        TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    role              TEXT NOT NULL,
    content           TEXT NOT NULL,
    created_at        INTEGER NOT NULL,
    model             TEXT,
    prompt_tokens     INTEGER,
    completion_tokens INTEGER
);
CREATE INDEX IF NOT EXISTS messages_session ON messages(session_id, id);
";

/// v4: messages remember the turn that wrote them, so a turn delivered twice (the message
/// bus after a crash, a client retrying with an idempotency key) is stored once.
fn migrate_v4(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "messages", "turn_id", "TEXT")?;
    conn.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS messages_turn ON messages(turn_id, role)
         WHERE turn_id IS NOT NULL;",
    )
}

/// Add `column` to `table` unless it is there (SQLite has no `ADD COLUMN IF NOT EXISTS`).
fn add_column(conn: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let has: i64 = conn.query_row(
        &format!("SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = ?1"),
        params![column],
        |r| r.get(0),
    )?;
    if has == 0 {
        conn.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl};"))?;
    }
    Ok(())
}

/// v5: claims, so that several processes sharing the store never take the same inbox
/// message or cron run (an outbox row is claimed by moving its next attempt).
fn migrate_v5(conn: &Connection) -> rusqlite::Result<()> {
    add_column(conn, "inbox", "claimed_by", "TEXT")?;
    add_column(conn, "inbox", "claimed_until", "INTEGER")?;
    add_column(conn, "cron_jobs", "claimed_until", "INTEGER")
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First: other processes may hold the database (replicas sharing one file on a host),
    // and even switching to WAL waits for their locks.
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    // WAL: readers never block the writer. NORMAL sync is durable across process crashes
    // (only an OS crash can lose the last commits), the usual trade-off for WAL.
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // 1 MiB page cache per connection (SQLite's default is 2 MiB): the hot history lives in
    // the engine's own cache, so SQLite's mostly serves appends and cold loads.
    conn.pragma_update(None, "cache_size", -1024)?;
    Ok(())
}

impl SqliteStore {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let open_err = |cause: String| StoreError::Open {
            path: path.to_path_buf(),
            cause,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        }
        let writer = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        configure(&writer).map_err(|e| open_err(e.to_string()))?;
        let version: i32 = writer
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| open_err(e.to_string()))?;
        if version > SCHEMA_VERSION {
            return Err(open_err(format!(
                "schema version {version} is newer than this moltbot understands \
                 ({SCHEMA_VERSION}); upgrade moltbot"
            )));
        }
        writer
            .execute_batch(SCHEMA_V1)
            .and_then(|()| writer.execute_batch(crate::channels::SCHEMA_V2))
            .and_then(|()| writer.execute_batch(crate::cron::SCHEMA_V3))
            .and_then(|()| migrate_v4(&writer))
            .and_then(|()| migrate_v5(&writer))
            .map_err(|e| open_err(e.to_string()))?;
        writer
            .pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(|e| open_err(e.to_string()))?;
        let reader = Connection::open(path).map_err(|e| open_err(e.to_string()))?;
        configure(&reader).map_err(|e| open_err(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(4 * MAX_GROUP);
        std::thread::Builder::new()
            .name("moltbot-store-writer".into())
            .spawn(move || writer_loop(writer, rx))
            .map_err(|e| open_err(format!("cannot start the writer thread: {e}")))?;
        Ok(SqliteStore {
            inner: Arc::new(Inner {
                path: path.to_path_buf(),
                writer: tx,
                reader: Mutex::new(reader),
            }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Queue a write for the writer thread and wait until it is committed.
    pub(crate) async fn write(
        &self,
        op: impl FnOnce(&Connection) -> Result<i64, StoreError> + Send + 'static,
    ) -> Result<i64, StoreError> {
        let (done, wait) = tokio::sync::oneshot::channel();
        self.inner
            .writer
            .send(WriteJob {
                op: Box::new(op),
                done,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        wait.await.map_err(|_| StoreError::Closed)?
    }

    pub(crate) async fn with_reader<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            // A poisoned lock only means another query panicked; the connection is fine.
            let conn = inner.reader.lock().unwrap_or_else(|p| p.into_inner());
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }

    /// [`Store::append`] for a turn: with a `turn_id`, a message of a role that turn
    /// already stored is skipped (at most one user message and one reply per turn id).
    pub async fn append_turn(
        &self,
        session_id: &str,
        user: Option<&str>,
        channel: &str,
        turn_id: Option<&str>,
        messages: Vec<NewMessage>,
    ) -> Result<(), StoreError> {
        let turn_id = turn_id.map(str::to_string);
        let session_id = session_id.to_string();
        let user = user.map(str::to_string);
        let channel = channel.to_string();
        self.write(move |tx| {
            let now = now_ms();
            let mut inserted = 0i64;
            let title = title_of(&messages);
            tx.execute(
                // `updated_at` is strictly above every other session's, so newest-first
                // follows the order of writes even within one millisecond.
                "INSERT INTO sessions (id, \"user\", channel, created_at, updated_at, message_count, title)
                 VALUES (?1, ?2, ?3, ?4,
                         MAX(?4, COALESCE((SELECT MAX(updated_at) FROM sessions), 0) + 1), 0, ?5)
                 ON CONFLICT(id) DO UPDATE SET updated_at = excluded.updated_at,
                     \"user\" = COALESCE(sessions.\"user\", excluded.\"user\"),
                     title = COALESCE(sessions.title, excluded.title)",
                params![session_id, user, channel, now, title],
            )?;
            {
                let mut insert = tx.prepare_cached(
                    "INSERT OR IGNORE INTO messages (session_id, role, content, created_at, model, prompt_tokens, completion_tokens, turn_id)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )?;
                for m in &messages {
                    inserted += insert.execute(params![
                        session_id,
                        m.role.as_str(),
                        m.content,
                        now,
                        m.model,
                        m.prompt_tokens,
                        m.completion_tokens,
                        turn_id
                    ])? as i64;
                }
            }
            tx.execute(
                "UPDATE sessions SET message_count = message_count + ?2 WHERE id = ?1",
                params![session_id, inserted],
            )?;
            Ok(inserted)
        })
        .await
        .map(drop)
    }

    /// Which of a turn's messages are stored.
    pub async fn turn_record(&self, turn_id: &str) -> Result<TurnRecord, StoreError> {
        let turn_id = turn_id.to_string();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT role, content, model, prompt_tokens, completion_tokens FROM messages
                 WHERE turn_id = ?1",
            )?;
            let mut record = TurnRecord::default();
            let mut rows = stmt.query(params![turn_id])?;
            while let Some(r) = rows.next()? {
                let role: String = r.get(0)?;
                match Role::parse(&role) {
                    Some(Role::User) => record.user_stored = true,
                    Some(Role::Assistant) => {
                        record.reply = Some(StoredReply {
                            content: r.get(1)?,
                            model: r.get(2)?,
                            prompt_tokens: r.get(3)?,
                            completion_tokens: r.get(4)?,
                        })
                    }
                    _ => {}
                }
            }
            Ok(record)
        })
        .await
    }

    /// The last `limit` messages of a session, oldest first.
    pub async fn recent_messages(
        &self,
        session_id: &str,
        limit: usize,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let session_id = session_id.to_string();
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {MESSAGE_COLUMNS} FROM messages WHERE session_id = ?1
                 ORDER BY id DESC LIMIT ?2"
            ))?;
            let mut rows: Vec<StoredMessage> = stmt
                .query_map(params![session_id, limit as i64], |r| row_to_message(r))?
                .collect::<Result<_, _>>()?;
            rows.reverse();
            Ok(rows)
        })
        .await
    }

    /// Sessions, most recently updated first, and the total count.
    pub async fn list_sessions(
        &self,
        limit: usize,
        offset: usize,
    ) -> Result<(Vec<SessionRow>, i64), StoreError> {
        self.with_reader(move |conn| {
            let total: i64 = conn.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))?;
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {SESSION_COLUMNS} FROM sessions ORDER BY updated_at DESC, id
                 LIMIT ?1 OFFSET ?2"
            ))?;
            let rows = stmt
                .query_map(params![limit as i64, offset as i64], |r| row_to_session(r))?
                .collect::<Result<_, _>>()?;
            Ok((rows, total))
        })
        .await
    }

    pub async fn session(&self, id: &str) -> Result<Option<SessionRow>, StoreError> {
        let id = id.to_string();
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id = ?1"),
                    params![id],
                    |r| row_to_session(r),
                )
                .optional()?)
        })
        .await
    }

    /// Delete a session and its messages. Returns whether it existed.
    pub async fn delete_session(&self, id: &str) -> Result<bool, StoreError> {
        let id = id.to_string();
        let n = self
            .write(move |tx| {
                tx.execute("DELETE FROM messages WHERE session_id = ?1", params![id])?;
                Ok(tx.execute("DELETE FROM sessions WHERE id = ?1", params![id])? as i64)
            })
            .await?;
        Ok(n > 0)
    }

    /// A cheap liveness check for `/health`: the reader answers a query and the writer
    /// thread commits an empty group (so a dead writer shows up here, not at the next turn).
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with_reader(|conn| {
            conn.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))?;
            Ok(())
        })
        .await?;
        self.write(|_| Ok(0)).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_in_groups_and_failures_stay_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("g.db")).unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let s = store.clone();
            tasks.push(tokio::spawn(async move {
                if i % 10 == 0 {
                    // A write that fails half-way: its first statement must be rolled back.
                    s.write(move |c| {
                        c.execute(
                            "INSERT INTO sessions (id, channel, created_at, updated_at) \
                             VALUES (?1, 'x', 0, 0)",
                            params![format!("bad-{i}")],
                        )?;
                        c.execute("INSERT INTO nope VALUES (1)", [])?;
                        Ok(1)
                    })
                    .await
                    .map(drop)
                } else {
                    s.append_turn(
                        &format!("s{}", i % 7),
                        None,
                        "test",
                        None,
                        vec![NewMessage::new(Role::User, format!("m{i}"))],
                    )
                    .await
                }
            }));
        }
        let mut failed = 0;
        for t in tasks {
            if t.await.unwrap().is_err() {
                failed += 1;
            }
        }
        assert_eq!(failed, 20);
        let (rows, total) = store.list_sessions(100, 0).await.unwrap();
        assert_eq!(total, 7, "no half-written session survived");
        let messages: i64 = rows.iter().map(|r| r.message_count).sum();
        assert_eq!(messages, 180);
    }

    #[test]
    fn a_v3_database_gains_turn_ids() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.db");
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(SCHEMA_V1).unwrap();
            c.execute_batch(
                "INSERT INTO sessions (id, channel, created_at, updated_at) VALUES ('s','x',0,0);
                 INSERT INTO messages (session_id, role, content, created_at) VALUES ('s','user','old',0);
                 PRAGMA user_version = 3;",
            )
            .unwrap();
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let store = SqliteStore::open(&path).unwrap();
            let old = store.recent_messages("s", 5).await.unwrap();
            assert_eq!(old[0].content, "old");
            store
                .append_turn(
                    "s",
                    None,
                    "x",
                    Some("t"),
                    vec![NewMessage::new(Role::User, "new")],
                )
                .await
                .unwrap();
            assert!(store.turn_record("t").await.unwrap().user_stored);
        });
        // Opening again (already v4) is fine.
        drop(SqliteStore::open(&path).unwrap());
    }
}
