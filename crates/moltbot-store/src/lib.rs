//! The session store: conversations persisted in SQLite in WAL mode.
//!
//! # Layout
//! - [`Store`]: a cheap-clone handle; every call runs its SQL on the blocking pool so async
//!   workers never wait on disk.
//! - [`SessionRow`], [`StoredMessage`], [`NewMessage`]: what goes in and out.
//! - `channels`: the messaging channels' durable state: inbox (received messages,
//!   de-duplicated by platform id), outbox (replies until sent), pairing requests, approved
//!   senders and adapter cursors ([`InboxRow`], [`OutboxRow`], [`PairingRequest`]…).
//! - `cron`: scheduled jobs and their run history ([`CronJob`], [`CronRun`]); schema v3.
//!
//! Writes go to one writer thread that owns the write connection and commits in groups:
//! it takes every write waiting in its queue, runs each inside its own savepoint (so one
//! failing write does not undo the others) and commits them in one transaction. Under load
//! that turns hundreds of commits per second into a few, without delaying a lone write.
//! Reads use a second connection behind a std `Mutex`, only ever held inside
//! `spawn_blocking` (never across an `.await`); WAL lets it read while the writer commits.

mod channels;
mod cron;
mod pairing;

pub use channels::{InboxItem, InboxRow, NewOutbox, OutboxRow};
pub use cron::{
    CronJob, CronPayload, CronRun, CronRunStatus, CronTarget, CronTrigger, NewCronRun,
    CRON_OUTPUT_MAX_CHARS,
};
pub use pairing::{AllowedSender, PairingRequest};

use moltbot_core::Role;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store database {path}: {cause}")]
    Open { path: PathBuf, cause: String },
    #[error("store query failed: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("store worker failed: {0}")]
    Join(String),
    #[error("store commit failed: {0}")]
    Commit(String),
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    pub fn kind(&self) -> &'static str {
        "store"
    }
}

/// A session as listed by the API.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SessionRow {
    pub id: String,
    pub user: Option<String>,
    pub channel: String,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
    pub updated_at: i64,
    pub message_count: i64,
    /// The first user message, shortened: a human label for lists.
    pub title: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StoredMessage {
    pub id: i64,
    pub role: Role,
    pub content: String,
    pub created_at: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NewMessage {
    pub role: Role,
    pub content: String,
    pub model: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

impl NewMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            model: None,
            prompt_tokens: None,
            completion_tokens: None,
        }
    }
}

/// What the store knows of a turn id: whether its user message and its reply are stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnRecord {
    pub user_stored: bool,
    pub reply: Option<StoredReply>,
}

/// A stored reply, with what is needed to answer again with it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredReply {
    pub content: String,
    pub model: Option<String>,
    pub prompt_tokens: Option<u32>,
    pub completion_tokens: Option<u32>,
}

#[derive(Clone)]
pub struct Store {
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

const SCHEMA_VERSION: i32 = 4;

const SCHEMA_V1: &str = "
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
    let has: i64 = conn.query_row(
        "SELECT COUNT(*) FROM pragma_table_info('messages') WHERE name = 'turn_id'",
        [],
        |r| r.get(0),
    )?;
    if has == 0 {
        conn.execute_batch("ALTER TABLE messages ADD COLUMN turn_id TEXT;")?;
    }
    conn.execute_batch(
        "CREATE UNIQUE INDEX IF NOT EXISTS messages_turn ON messages(turn_id, role)
         WHERE turn_id IS NOT NULL;",
    )
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
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

impl Store {
    /// Open (creating if needed) the database at `path` and bring its schema up to date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
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
            .and_then(|()| writer.execute_batch(channels::SCHEMA_V2))
            .and_then(|()| writer.execute_batch(cron::SCHEMA_V3))
            .and_then(|()| migrate_v4(&writer))
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
        Ok(Store {
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

    /// Append messages to a session in one transaction, creating the session if new.
    pub async fn append(
        &self,
        session_id: &str,
        user: Option<&str>,
        channel: &str,
        messages: Vec<NewMessage>,
    ) -> Result<(), StoreError> {
        self.append_turn(session_id, user, channel, None, messages)
            .await
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
            let title = messages
                .iter()
                .find(|m| m.role == Role::User)
                .map(|m| shorten(&m.content, 80));
            tx.execute(
                "INSERT INTO sessions (id, user, channel, created_at, updated_at, message_count, title)
                 VALUES (?1, ?2, ?3, ?4, ?4, 0, ?5)
                 ON CONFLICT(id) DO UPDATE SET updated_at = ?4,
                     user = COALESCE(sessions.user, excluded.user),
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
            let mut stmt = conn.prepare_cached(
                "SELECT id, role, content, created_at, model FROM messages
                 WHERE session_id = ?1 ORDER BY id DESC LIMIT ?2",
            )?;
            let mut rows: Vec<StoredMessage> = stmt
                .query_map(params![session_id, limit as i64], row_to_message)?
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
            let mut stmt = conn.prepare_cached(
                "SELECT id, user, channel, created_at, updated_at, message_count, title
                 FROM sessions ORDER BY updated_at DESC, id LIMIT ?1 OFFSET ?2",
            )?;
            let rows = stmt
                .query_map(params![limit as i64, offset as i64], row_to_session)?
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
                    "SELECT id, user, channel, created_at, updated_at, message_count, title
                     FROM sessions WHERE id = ?1",
                    params![id],
                    row_to_session,
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

fn row_to_message(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredMessage> {
    let role: String = r.get(1)?;
    Ok(StoredMessage {
        id: r.get(0)?,
        // Only our own code writes this column; an unknown value is read as a user turn
        // rather than failing the whole history.
        role: Role::parse(&role).unwrap_or(Role::User),
        content: r.get(2)?,
        created_at: r.get(3)?,
        model: r.get(4)?,
    })
}

fn row_to_session(r: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: r.get(0)?,
        user: r.get(1)?,
        channel: r.get(2)?,
        created_at: r.get(3)?,
        updated_at: r.get(4)?,
        message_count: r.get(5)?,
        title: r.get(6)?,
    })
}

fn shorten(s: &str, max_chars: usize) -> String {
    let s = s.trim();
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_persist_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("moltbot.db");
        {
            let store = Store::open(&path).unwrap();
            store
                .append(
                    "s1",
                    Some("ann"),
                    "http",
                    vec![
                        NewMessage::new(Role::User, "hello"),
                        NewMessage::new(Role::Assistant, "hi there"),
                    ],
                )
                .await
                .unwrap();
            store
                .append("s2", None, "ws", vec![NewMessage::new(Role::User, "x")])
                .await
                .unwrap();
        }
        let store = Store::open(&path).unwrap();
        let msgs = store.recent_messages("s1", 10).await.unwrap();
        assert_eq!(msgs.len(), 2);
        assert_eq!(msgs[0].role, Role::User);
        assert_eq!(msgs[1].content, "hi there");
        let s1 = store.session("s1").await.unwrap().unwrap();
        assert_eq!(s1.message_count, 2);
        assert_eq!(s1.user.as_deref(), Some("ann"));
        assert_eq!(s1.title.as_deref(), Some("hello"));
        let (rows, total) = store.list_sessions(10, 0).await.unwrap();
        assert_eq!(total, 2);
        assert_eq!(rows.len(), 2);
        assert!(store.session("nope").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn recent_returns_the_newest_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("m.db")).unwrap();
        for i in 0..10 {
            store
                .append(
                    "s",
                    None,
                    "http",
                    vec![NewMessage::new(Role::User, format!("m{i}"))],
                )
                .await
                .unwrap();
        }
        let last3: Vec<String> = store
            .recent_messages("s", 3)
            .await
            .unwrap()
            .into_iter()
            .map(|m| m.content)
            .collect();
        assert_eq!(last3, vec!["m7", "m8", "m9"]);
        assert!(store.delete_session("s").await.unwrap());
        assert!(store.recent_messages("s", 3).await.unwrap().is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_commit_in_groups_and_failures_stay_isolated() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("g.db")).unwrap();
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
                    s.append(
                        &format!("s{}", i % 7),
                        None,
                        "test",
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

    #[tokio::test]
    async fn a_turn_id_stores_each_side_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("t.db")).unwrap();
        assert_eq!(
            store.turn_record("t1").await.unwrap(),
            TurnRecord::default()
        );
        let user = || vec![NewMessage::new(Role::User, "hello")];
        store
            .append_turn("s", None, "http", Some("t1"), user())
            .await
            .unwrap();
        // A second delivery of the same turn: nothing new.
        store
            .append_turn("s", None, "http", Some("t1"), user())
            .await
            .unwrap();
        let rec = store.turn_record("t1").await.unwrap();
        assert!(rec.user_stored && rec.reply.is_none());
        let mut reply = NewMessage::new(Role::Assistant, "hi!");
        reply.model = Some("m".into());
        reply.completion_tokens = Some(2);
        for _ in 0..2 {
            store
                .append_turn("s", None, "http", Some("t1"), vec![reply.clone()])
                .await
                .unwrap();
        }
        let rec = store.turn_record("t1").await.unwrap();
        let got = rec.reply.unwrap();
        assert_eq!(
            (got.content.as_str(), got.model.as_deref()),
            ("hi!", Some("m"))
        );
        assert_eq!(got.completion_tokens, Some(2));
        assert_eq!(store.recent_messages("s", 10).await.unwrap().len(), 2);
        assert_eq!(store.session("s").await.unwrap().unwrap().message_count, 2);
        // Without a turn id nothing is de-duplicated.
        store.append("s", None, "http", user()).await.unwrap();
        store.append("s", None, "http", user()).await.unwrap();
        assert_eq!(store.session("s").await.unwrap().unwrap().message_count, 4);
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
            let store = Store::open(&path).unwrap();
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
        drop(Store::open(&path).unwrap());
    }

    #[test]
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("héllo wörld", 5), "héllo…");
        assert_eq!(shorten("短い", 5), "短い");
    }
}
