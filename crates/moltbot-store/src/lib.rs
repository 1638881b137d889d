//! Persistent state: sessions and messages, the channels' inbox/outbox, pairing and cron.
//!
//! # Layout
//! - [`Store`]: a cheap-clone handle over one of two backends with the same methods:
//!   - SQLite (`sqlite.rs`, the default): one file in the data folder, no server.
//!   - PostgreSQL (`postgres/`): for several gateway replicas on several machines
//!     ([`Store::connect_postgres`], `[data] database_url`).
//! - [`SessionRow`], [`StoredMessage`], [`NewMessage`]: what goes in and out.
//! - `channels`: the messaging channels' durable state: inbox (received messages,
//!   de-duplicated by platform id), outbox (replies until sent), pairing requests, approved
//!   senders and adapter cursors ([`InboxRow`], [`OutboxRow`], [`PairingRequest`]…).
//! - `cron`: scheduled jobs and their run history ([`CronJob`], [`CronRun`]).
//!
//! # Claims (several processes, one store)
//! Work that must happen once — running an inbox message, sending an outbox row, firing a
//! cron job — is *claimed* before it is done: [`Store::inbox_claim`], [`Store::outbox_claim`]
//! and [`Store::cron_claim_due`] mark rows with a lease in the same statement that selects
//! them (PostgreSQL: `FOR UPDATE SKIP LOCKED`, so concurrent claimers skip each other's rows
//! instead of waiting; SQLite: its single writer serialises them). A claimer that dies
//! leaves a lease that runs out, and another process takes the work over.

mod channels;
mod cron;
mod pairing;
mod postgres;
mod rows;
mod sqlite;

pub use channels::{InboxItem, InboxRow, NewOutbox, OutboxRow};
pub use cron::{
    CronJob, CronPayload, CronRun, CronRunStatus, CronTarget, CronTrigger, NewCronRun,
    CRON_OUTPUT_MAX_CHARS,
};
pub use pairing::{AllowedSender, PairingRequest};
pub use postgres::PgOptions;

use moltbot_core::{Inbound, Role};
use postgres::PgStore;
use rows::Cols;
use serde::Serialize;
use sqlite::SqliteStore;
use std::path::{Path, PathBuf};
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
    /// The database cannot be reached now (PostgreSQL down or restarting, pool exhausted):
    /// the request may succeed later, so it is answered 503 rather than 500.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    #[error("store query failed: {0}")]
    Postgres(String),
}

impl StoreError {
    pub fn kind(&self) -> &'static str {
        "store"
    }

    /// Whether retrying later may succeed (the database is unreachable, not the query bad).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Closed)
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

/// The store handle. Clones share one backend (connection pool or writer thread).
#[derive(Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Clone)]
enum Backend {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

impl Store {
    /// Open (creating if needed) the SQLite database at `path` and bring its schema up to
    /// date.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Sqlite(SqliteStore::open(path)?),
        })
    }

    /// Connect to PostgreSQL and run its migrations (under PostgreSQL's migration lock, so
    /// replicas starting together do not collide).
    pub async fn connect_postgres(opts: &PgOptions) -> Result<Store, StoreError> {
        Ok(Store {
            backend: Backend::Postgres(PgStore::connect(opts).await?),
        })
    }

    /// The store a configuration names: PostgreSQL when `database_url` is set, else the
    /// SQLite file `moltbot.db` in the data folder.
    pub async fn from_config(data: &moltbot_core::config::DataConfig) -> Result<Store, StoreError> {
        match &data.database_url {
            Some(url) => {
                let mut opts = PgOptions::new(url.expose());
                opts.schema = data.database_schema.clone();
                Store::connect_postgres(&opts).await
            }
            None => Store::open(&data.resolved_dir().join("moltbot.db")),
        }
    }

    /// `sqlite` or `postgres`.
    pub fn backend_name(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    /// The database file, for SQLite.
    pub fn path(&self) -> Option<&Path> {
        match &self.backend {
            Backend::Sqlite(s) => Some(s.path()),
            Backend::Postgres(_) => None,
        }
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
}

/// The public methods, each forwarded to the backend's method of the same name and
/// signature. A macro instead of a `dyn` trait: the ~50 async methods would each need a
/// boxed future and every caller a trait import; this way a backend missing a method, or
/// with a different signature, fails to compile here.
macro_rules! forward {
    ($( $(#[$doc:meta])* fn $name:ident(&self $(, $arg:ident: $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        impl Store {
            $(
                $(#[$doc])*
                pub async fn $name(&self $(, $arg: $ty)*) -> Result<$ret, StoreError> {
                    match &self.backend {
                        Backend::Sqlite(s) => s.$name($($arg),*).await,
                        Backend::Postgres(p) => p.$name($($arg),*).await,
                    }
                }
            )*
        }
    };
}

forward! {
    /// [`Store::append`] for a turn: with a `turn_id`, a message of a role that turn
    /// already stored is skipped (at most one user message and one reply per turn id).
    fn append_turn(
        &self,
        session_id: &str,
        user: Option<&str>,
        channel: &str,
        turn_id: Option<&str>,
        messages: Vec<NewMessage>,
    ) -> ();
    /// Which of a turn's messages are stored.
    fn turn_record(&self, turn_id: &str) -> TurnRecord;
    /// The last `limit` messages of a session, oldest first.
    fn recent_messages(&self, session_id: &str, limit: usize) -> Vec<StoredMessage>;
    /// Sessions, most recently updated first, and the total count.
    fn list_sessions(&self, limit: usize, offset: usize) -> (Vec<SessionRow>, i64);
    fn session(&self, id: &str) -> Option<SessionRow>;
    /// Delete a session and its messages. Returns whether it existed.
    fn delete_session(&self, id: &str) -> bool;
    /// A cheap liveness check for `/health`.
    fn ping(&self) -> ();

    /// Store received messages, skipping ids already seen, and save `cursor` in the same
    /// transaction. Returns the rows that were new.
    fn inbox_accept(
        &self,
        channel: &str,
        batch: Vec<Inbound>,
        cursor: Option<(String, String)>,
    ) -> Vec<InboxRow>;
    /// Up to `limit` messages received but not yet answered, oldest first.
    fn inbox_pending(&self, limit: usize) -> Vec<InboxRow>;
    /// Claim up to `limit` unanswered messages for `owner` until `now + lease_ms`, oldest
    /// first: unclaimed ones, ones whose lease ran out, and `owner`'s own (which renews
    /// their lease). A message waits while an earlier one of its chat is claimed by another
    /// owner, so one chat's messages are run by one process, in order.
    fn inbox_claim(&self, owner: &str, now: i64, lease_ms: i64, limit: usize) -> Vec<InboxRow>;
    /// The status of one inbox row (`pending`, `done`, `ignored`, `pairing`, `failed`).
    fn inbox_status(&self, id: i64) -> Option<String>;
    /// Delete finished inbox rows and sent outbox rows older than `before` (ms since the
    /// epoch). Pending and failed rows stay. Returns how many rows went.
    fn channels_prune(&self, before: i64) -> i64;
    /// Close an inbox row (`done`, `ignored`, `failed`) and queue its replies, atomically.
    /// Returns the outbox ids.
    fn inbox_finish(&self, inbox_id: i64, status: &'static str, replies: Vec<NewOutbox>) -> Vec<i64>;
    fn cursor_get(&self, channel: &str, key: &str) -> Option<String>;
    fn cursor_set(&self, channel: &str, key: &str, value: &str) -> ();
    /// Queue messages to send (not tied to a received message: pairing notices, `moltbot
    /// message send`, cron deliveries). Returns their ids.
    fn outbox_enqueue(&self, items: Vec<NewOutbox>) -> Vec<i64>;
    /// Messages whose turn has come: for each chat, its oldest pending message, if due.
    fn outbox_due(&self, now: i64, limit: usize) -> Vec<OutboxRow>;
    /// [`Store::outbox_due`], claimed: each row's next attempt moves to `now + lease_ms`,
    /// so no other process sends it meanwhile; recording the attempt sets the real one.
    fn outbox_claim(&self, now: i64, lease_ms: i64, limit: usize) -> Vec<OutboxRow>;
    /// When the next pending message becomes due (milliseconds since the epoch), if any.
    fn outbox_next_due(&self) -> Option<i64>;
    fn outbox_get(&self, id: i64) -> Option<OutboxRow>;
    /// Recent outbox rows, newest first (for status pages and tests).
    fn outbox_recent(&self, limit: usize) -> Vec<OutboxRow>;
    /// Pending and failed counts per channel.
    fn outbox_counts(&self) -> Vec<(String, i64, i64)>;
    fn outbox_sent(&self, id: i64, platform_id: &str) -> ();
    /// Record a failed attempt: retry at `next_attempt_at`, or give up when `None`.
    fn outbox_attempt_failed(&self, id: i64, next_attempt_at: Option<i64>, error: &str) -> ();

    fn pairing_get(&self, channel: &str, sender_id: &str) -> Option<PairingRequest>;
    /// Create or replace the sender's pairing request, unless the channel already has
    /// `max_pending` unexpired requests from other senders. Returns whether it was stored.
    fn pairing_put(&self, req: PairingRequest, max_pending: usize) -> bool;
    fn pairing_touch(&self, channel: &str, sender_id: &str, at: i64) -> ();
    /// Unexpired pairing requests, oldest first.
    fn pairing_list(&self, now: i64) -> Vec<PairingRequest>;
    /// Approve the unexpired request of `channel` with this code (case-insensitive): the
    /// sender becomes allowed and the request goes away, in one transaction.
    fn pairing_approve(&self, channel: &str, code: &str, now: i64) -> Option<PairingRequest>;
    fn allowed_contains(&self, channel: &str, sender_id: &str) -> bool;
    fn allowed_list(&self) -> Vec<AllowedSender>;
    /// Allow a sender directly (`moltbot pairing allow`), without a code.
    fn allowed_add(&self, channel: &str, sender_id: &str, via: &str) -> ();
    /// Revoke a sender. Returns whether they were allowed.
    fn allowed_remove(&self, channel: &str, sender_id: &str) -> bool;

    /// Add a job unless there are already `max_jobs`. Returns whether it was stored.
    fn cron_add(&self, job: CronJob, max_jobs: usize) -> bool;
    fn cron_get(&self, id: &str) -> Option<CronJob>;
    /// Every job, oldest first.
    fn cron_list(&self) -> Vec<CronJob>;
    fn cron_count(&self) -> i64;
    /// Delete a job and its history. Returns whether it existed.
    fn cron_remove(&self, id: &str) -> bool;
    /// Pause or resume a job; resuming sets its next run (`next_run_ms`). Returns whether
    /// the job exists.
    fn cron_set_enabled(&self, id: &str, enabled: bool, next_run_ms: Option<i64>) -> bool;
    /// Set when a job runs next; `None` leaves nothing scheduled and disables it (a spent
    /// one-shot). Returns whether the job exists.
    fn cron_set_next_run(&self, id: &str, next_run_ms: Option<i64>) -> bool;
    /// Ask for a run as soon as possible, whatever the schedule (also for a paused job);
    /// the regular schedule is unchanged. Returns whether the job exists.
    fn cron_run_now(&self, id: &str) -> bool;
    /// Clear a job's manual-run flag (its manual run has started).
    fn cron_clear_run_now(&self, id: &str) -> ();
    /// Jobs to start now: enabled and due at `now` (ms), or asked to run now. Earliest first.
    fn cron_due(&self, now: i64, limit: usize) -> Vec<CronJob>;
    /// [`Store::cron_due`], claimed until `now + lease_ms` (jobs claimed by another process
    /// are skipped). The claimer moves the job's next run, then [`Store::cron_release`]s it.
    fn cron_claim_due(&self, now: i64, lease_ms: i64, limit: usize) -> Vec<CronJob>;
    /// End a claim taken by [`Store::cron_claim_due`].
    fn cron_release(&self, id: &str) -> ();
    /// When the next job falls due (ms since the epoch): 0 when a manual run is waiting,
    /// `None` when nothing is scheduled.
    fn cron_next_due(&self) -> Option<i64>;
    /// Record a run, note it on the job and keep only the newest `keep` runs of the job.
    /// A run of a job deleted meanwhile is dropped. Returns the run id, if stored.
    fn cron_record_run(&self, run: NewCronRun, keep: usize) -> Option<i64>;
    /// A job's newest runs, newest first.
    fn cron_runs(&self, job_id: &str, limit: usize) -> Vec<CronRun>;
}

pub(crate) const SESSION_COLUMNS: &str =
    "id, \"user\", channel, created_at, updated_at, message_count, title";
pub(crate) const MESSAGE_COLUMNS: &str = "id, role, content, created_at, model";

pub(crate) fn row_to_message<R: Cols>(r: &R) -> Result<StoredMessage, R::Error> {
    Ok(StoredMessage {
        id: r.int(0)?,
        // Only our own code writes this column; an unknown value is read as a user turn
        // rather than failing the whole history.
        role: Role::parse(&r.text(1)?).unwrap_or(Role::User),
        content: r.text(2)?,
        created_at: r.int(3)?,
        model: r.opt_text(4)?,
    })
}

pub(crate) fn row_to_session<R: Cols>(r: &R) -> Result<SessionRow, R::Error> {
    Ok(SessionRow {
        id: r.text(0)?,
        user: r.opt_text(1)?,
        channel: r.text(2)?,
        created_at: r.int(3)?,
        updated_at: r.int(4)?,
        message_count: r.int(5)?,
        title: r.opt_text(6)?,
    })
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A session's title: its first user message, shortened.
pub(crate) fn title_of(messages: &[NewMessage]) -> Option<String> {
    messages
        .iter()
        .find(|m| m.role == Role::User)
        .map(|m| shorten(&m.content, 80))
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
    fn shorten_respects_char_boundaries() {
        assert_eq!(shorten("héllo wörld", 5), "héllo…");
        assert_eq!(shorten("短い", 5), "短い");
    }
}
