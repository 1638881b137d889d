//! Durable state of the messaging channels.
//!
//! - **inbox**: every received message, keyed by `(channel, external_id)` so a redelivered
//!   webhook or a repeated poll is recognised. A row stays `pending` until its turn has run
//!   and its reply is in the outbox (both in one transaction), so a crash in between re-runs
//!   the turn after restart instead of losing the message.
//! - **outbox**: replies waiting to be sent, with attempts and the next attempt time. Only
//!   the oldest pending row of a chat is eligible, so the pieces of a split reply arrive in
//!   order even when one of them has to be retried.
//! - **pairing_requests** / **allowed_senders**: see `pairing.rs`.
//! - **channel_cursors**: small adapter state (Telegram's update offset) written in the same
//!   transaction as the inbox rows it covers.

use crate::rows::Cols;
use crate::sqlite::SqliteStore;
use crate::{now_ms, StoreError};
use moltbot_core::Inbound;
use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

pub(crate) const SCHEMA_V2: &str = "
CREATE TABLE IF NOT EXISTS channel_cursors (
    channel TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (channel, key)
);
CREATE TABLE IF NOT EXISTS inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    channel     TEXT NOT NULL,
    external_id TEXT NOT NULL,
    chat_id     TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    sender_name TEXT,
    text        TEXT NOT NULL,
    is_group    INTEGER NOT NULL,
    mentioned   INTEGER NOT NULL,
    reply_to    TEXT,
    thread      TEXT,
    received_at INTEGER NOT NULL,
    status      TEXT NOT NULL DEFAULT 'pending',
    UNIQUE (channel, external_id)
);
CREATE INDEX IF NOT EXISTS inbox_pending ON inbox(status, id);
CREATE TABLE IF NOT EXISTS outbox (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    channel         TEXT NOT NULL,
    chat_id         TEXT NOT NULL,
    text            TEXT NOT NULL,
    reply_to        TEXT,
    thread          TEXT,
    dedupe_key      TEXT UNIQUE,
    status          TEXT NOT NULL DEFAULT 'pending',
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    last_error      TEXT,
    platform_id     TEXT,
    created_at      INTEGER NOT NULL,
    sent_at         INTEGER
);
CREATE INDEX IF NOT EXISTS outbox_chat ON outbox(status, channel, chat_id, id);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox(created_at);
CREATE INDEX IF NOT EXISTS inbox_received ON inbox(received_at);
CREATE TABLE IF NOT EXISTS pairing_requests (
    channel      TEXT NOT NULL,
    sender_id    TEXT NOT NULL,
    sender_name  TEXT,
    chat_id      TEXT NOT NULL,
    code         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL,
    last_sent_at INTEGER NOT NULL,
    PRIMARY KEY (channel, sender_id)
);
CREATE TABLE IF NOT EXISTS allowed_senders (
    channel     TEXT NOT NULL,
    sender_id   TEXT NOT NULL,
    sender_name TEXT,
    approved_at INTEGER NOT NULL,
    via         TEXT NOT NULL,
    PRIMARY KEY (channel, sender_id)
);
";

/// A received message as stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InboxRow {
    pub id: i64,
    pub received_at: i64,
    pub status: String,
    pub message: Inbound,
}

/// What [`Store::inbox_accept`] takes: the message. (An alias keeps the store's vocabulary.)
pub type InboxItem = Inbound;

/// A reply to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutbox {
    pub channel: String,
    pub chat_id: String,
    pub text: String,
    pub reply_to: Option<String>,
    pub thread: Option<String>,
    /// Queuing the same key twice keeps the first row (a re-run turn does not send twice).
    pub dedupe_key: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutboxRow {
    pub id: i64,
    pub channel: String,
    pub chat_id: String,
    pub text: String,
    pub reply_to: Option<String>,
    pub thread: Option<String>,
    /// `pending`, `sent` or `failed`.
    pub status: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
    pub last_error: Option<String>,
    pub platform_id: Option<String>,
    pub created_at: i64,
}

/// Outbox rows that may be sent at `?1` (alias `o`): each chat's oldest pending row, once
/// due. The same text serves both backends (`$1` there).
pub(crate) const OUTBOX_DUE: &str = "o.status = 'pending' AND o.next_attempt_at <= ?1
    AND o.id = (SELECT MIN(id) FROM outbox h WHERE h.status = 'pending'
                AND h.channel = o.channel AND h.chat_id = o.chat_id)";

/// Inbox rows that owner `?1` may claim at `?2` (alias `i`): pending, not held by another
/// owner's unexpired claim, and with no earlier message of their chat held by another
/// owner (one chat is answered by one process at a time, in order).
pub(crate) const INBOX_CLAIMABLE: &str = "i.status = 'pending'
    AND (i.claimed_until IS NULL OR i.claimed_until <= ?2 OR i.claimed_by = ?1)
    AND NOT EXISTS (SELECT 1 FROM inbox e WHERE e.status = 'pending'
        AND e.channel = i.channel AND e.chat_id = i.chat_id AND e.id < i.id
        AND e.claimed_by <> ?1 AND e.claimed_until > ?2)";

pub(crate) const OUTBOX_COLUMNS: &str =
    "id, channel, chat_id, text, reply_to, thread, status, attempts, \
     next_attempt_at, last_error, platform_id, created_at";

pub(crate) fn row_to_outbox<R: Cols>(r: &R) -> Result<OutboxRow, R::Error> {
    Ok(OutboxRow {
        id: r.int(0)?,
        channel: r.text(1)?,
        chat_id: r.text(2)?,
        text: r.text(3)?,
        reply_to: r.opt_text(4)?,
        thread: r.opt_text(5)?,
        status: r.text(6)?,
        attempts: r.int(7)?,
        next_attempt_at: r.int(8)?,
        last_error: r.opt_text(9)?,
        platform_id: r.opt_text(10)?,
        created_at: r.int(11)?,
    })
}

pub(crate) const INBOX_COLUMNS: &str =
    "id, channel, external_id, chat_id, sender_id, sender_name, text, \
     is_group, mentioned, reply_to, thread, received_at, status";

pub(crate) fn row_to_inbox<R: Cols>(r: &R) -> Result<InboxRow, R::Error> {
    Ok(InboxRow {
        id: r.int(0)?,
        received_at: r.int(11)?,
        status: r.text(12)?,
        message: Inbound {
            channel: r.text(1)?,
            external_id: r.text(2)?,
            chat_id: r.text(3)?,
            sender_id: r.text(4)?,
            sender_name: r.opt_text(5)?,
            text: r.text(6)?,
            is_group: r.flag(7)?,
            mentioned: r.flag(8)?,
            reply_to: r.opt_text(9)?,
            thread: r.opt_text(10)?,
        },
    })
}

fn insert_outbox(tx: &Connection, items: &[NewOutbox], now: i64) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(items.len());
    let mut insert = tx.prepare_cached(
        "INSERT INTO outbox (channel, chat_id, text, reply_to, thread, dedupe_key,
                             next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)
         ON CONFLICT(dedupe_key) DO NOTHING",
    )?;
    for m in items {
        let n = insert.execute(params![
            m.channel,
            m.chat_id,
            m.text,
            m.reply_to,
            m.thread,
            m.dedupe_key,
            now
        ])?;
        if n == 1 {
            ids.push(tx.last_insert_rowid());
        } else {
            // Already queued under this key: report the existing row.
            let id: i64 = tx.query_row(
                "SELECT id FROM outbox WHERE dedupe_key = ?1",
                params![m.dedupe_key],
                |r| r.get(0),
            )?;
            ids.push(id);
        }
    }
    Ok(ids)
}

impl SqliteStore {
    /// Store received messages, skipping ids already seen, and save `cursor` in the same
    /// transaction. Returns the rows that were new.
    pub async fn inbox_accept(
        &self,
        channel: &str,
        batch: Vec<Inbound>,
        cursor: Option<(String, String)>,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let channel = channel.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let now = now_ms();
            let mut fresh = Vec::new();
            {
                let mut insert = conn.prepare_cached(
                    "INSERT INTO inbox (channel, external_id, chat_id, sender_id, sender_name,
                         text, is_group, mentioned, reply_to, thread, received_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
                     ON CONFLICT(channel, external_id) DO NOTHING",
                )?;
                for m in batch {
                    let n = insert.execute(params![
                        channel,
                        m.external_id,
                        m.chat_id,
                        m.sender_id,
                        m.sender_name,
                        m.text,
                        m.is_group,
                        m.mentioned,
                        m.reply_to,
                        m.thread,
                        now
                    ])?;
                    if n == 1 {
                        fresh.push(InboxRow {
                            id: conn.last_insert_rowid(),
                            received_at: now,
                            status: "pending".into(),
                            message: Inbound {
                                channel: channel.clone(),
                                ..m
                            },
                        });
                    }
                }
            }
            if let Some((key, value)) = cursor {
                conn.execute(
                    "INSERT INTO channel_cursors (channel, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT(channel, key) DO UPDATE SET value = excluded.value",
                    params![channel, key, value],
                )?;
            }
            let n = fresh.len() as i64;
            let _ = tx.send(fresh);
            Ok(n)
        })
        .await?;
        // The sender ran inside the committed write; a dropped value means a rollback.
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Up to `limit` messages received but not yet answered, oldest first (re-run after a
    /// restart).
    pub async fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxRow>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {INBOX_COLUMNS} FROM inbox WHERE status = 'pending' ORDER BY id LIMIT ?1"
            ))?;
            let rows = stmt
                .query_map(params![limit as i64], |r| row_to_inbox(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn inbox_claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let owner = owner.to_string();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "UPDATE inbox SET claimed_by = ?1, claimed_until = ?2 + ?3
                 WHERE id IN (SELECT id FROM inbox i WHERE {INBOX_CLAIMABLE} ORDER BY id LIMIT ?4)
                 RETURNING {INBOX_COLUMNS}"
            ))?;
            let mut rows: Vec<InboxRow> = stmt
                .query_map(params![owner, now, lease_ms, limit as i64], |r| {
                    row_to_inbox(r)
                })?
                .collect::<Result<_, _>>()?;
            rows.sort_by_key(|r| r.id);
            let n = rows.len() as i64;
            let _ = tx.send(rows);
            Ok(n)
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// The status of one inbox row (`pending`, `done`, `ignored`, `pairing`, `failed`).
    pub async fn inbox_status(&self, id: i64) -> Result<Option<String>, StoreError> {
        self.with_reader(move |conn| {
            Ok(conn
                .query_row("SELECT status FROM inbox WHERE id = ?1", params![id], |r| {
                    r.get(0)
                })
                .optional()?)
        })
        .await
    }

    /// Delete finished inbox rows and sent outbox rows older than `before` (ms since the
    /// epoch). Pending and failed rows stay. Returns how many rows went.
    pub async fn channels_prune(&self, before: i64) -> Result<i64, StoreError> {
        self.write(move |conn| {
            let a = conn.execute(
                "DELETE FROM inbox WHERE status != 'pending' AND received_at < ?1",
                params![before],
            )?;
            let b = conn.execute(
                "DELETE FROM outbox WHERE status = 'sent' AND created_at < ?1",
                params![before],
            )?;
            Ok((a + b) as i64)
        })
        .await
    }

    /// Close an inbox row (`done`, `ignored`, `failed`) and queue its replies, atomically.
    /// Returns the outbox ids.
    pub async fn inbox_finish(
        &self,
        inbox_id: i64,
        status: &'static str,
        replies: Vec<NewOutbox>,
    ) -> Result<Vec<i64>, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let ids = insert_outbox(conn, &replies, now_ms())?;
            conn.execute(
                "UPDATE inbox SET status = ?2 WHERE id = ?1",
                params![inbox_id, status],
            )?;
            let _ = tx.send(ids);
            Ok(1)
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    pub async fn cursor_get(&self, channel: &str, key: &str) -> Result<Option<String>, StoreError> {
        let (channel, key) = (channel.to_string(), key.to_string());
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM channel_cursors WHERE channel = ?1 AND key = ?2",
                    params![channel, key],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    pub async fn cursor_set(
        &self,
        channel: &str,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let (channel, key, value) = (channel.to_string(), key.to_string(), value.to_string());
        self.write(move |conn| {
            Ok(conn.execute(
                "INSERT INTO channel_cursors (channel, key, value) VALUES (?1, ?2, ?3)
                 ON CONFLICT(channel, key) DO UPDATE SET value = excluded.value",
                params![channel, key, value],
            )? as i64)
        })
        .await
        .map(drop)
    }

    /// Queue messages to send (not tied to a received message: pairing notices, `moltbot
    /// message send`, cron deliveries). Returns their ids.
    pub async fn outbox_enqueue(&self, items: Vec<NewOutbox>) -> Result<Vec<i64>, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let ids = insert_outbox(conn, &items, now_ms())?;
            let n = ids.len() as i64;
            let _ = tx.send(ids);
            Ok(n)
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// Messages whose turn has come: for each chat, its oldest pending message, if due.
    pub async fn outbox_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE {OUTBOX_DUE}
                 ORDER BY next_attempt_at, id LIMIT ?2"
            ))?;
            let rows = stmt
                .query_map(params![now, limit as i64], |r| row_to_outbox(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn outbox_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "UPDATE outbox SET next_attempt_at = ?1 + ?2
                 WHERE id IN (SELECT id FROM outbox o WHERE {OUTBOX_DUE}
                              ORDER BY next_attempt_at, id LIMIT ?3)
                 RETURNING {OUTBOX_COLUMNS}"
            ))?;
            let mut rows: Vec<OutboxRow> = stmt
                .query_map(params![now, lease_ms, limit as i64], |r| row_to_outbox(r))?
                .collect::<Result<_, _>>()?;
            rows.sort_by_key(|r| r.id);
            let n = rows.len() as i64;
            let _ = tx.send(rows);
            Ok(n)
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    /// When the next pending message becomes due (milliseconds since the epoch), if any.
    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        self.with_reader(|conn| {
            // Only each chat's head counts: a message queued behind a waiting one is not due.
            Ok(conn.query_row(
                "SELECT MIN(next_attempt_at) FROM outbox o WHERE status = 'pending'
                   AND id = (SELECT MIN(id) FROM outbox i WHERE i.status = 'pending'
                             AND i.channel = o.channel AND i.chat_id = o.chat_id)",
                [],
                |r| r.get(0),
            )?)
        })
        .await
    }

    pub async fn outbox_get(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    &format!("SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = ?1"),
                    params![id],
                    |r| row_to_outbox(r),
                )
                .optional()?)
        })
        .await
    }

    /// Recent outbox rows, newest first (for status pages and tests).
    pub async fn outbox_recent(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT ?1"
            ))?;
            let rows = stmt
                .query_map(params![limit as i64], |r| row_to_outbox(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Pending and failed counts per channel.
    pub async fn outbox_counts(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT channel, SUM(status = 'pending'), SUM(status = 'failed')
                 FROM outbox WHERE status != 'sent' GROUP BY channel ORDER BY channel",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    pub async fn outbox_sent(&self, id: i64, platform_id: &str) -> Result<(), StoreError> {
        let platform_id = platform_id.to_string();
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE outbox SET status = 'sent', platform_id = ?2, sent_at = ?3,
                     attempts = attempts + 1, last_error = NULL WHERE id = ?1",
                params![id, platform_id, now_ms()],
            )? as i64)
        })
        .await
        .map(drop)
    }

    /// Record a failed attempt: retry at `next_attempt_at`, or give up when `None`.
    pub async fn outbox_attempt_failed(
        &self,
        id: i64,
        next_attempt_at: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        let error = error.to_string();
        self.write(move |conn| {
            Ok(match next_attempt_at {
                Some(at) => conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?2,
                         last_error = ?3 WHERE id = ?1",
                    params![id, at, error],
                )?,
                None => conn.execute(
                    "UPDATE outbox SET attempts = attempts + 1, status = 'failed',
                         last_error = ?2 WHERE id = ?1",
                    params![id, error],
                )?,
            } as i64)
        })
        .await
        .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    fn msg(id: &str, chat: &str) -> Inbound {
        Inbound {
            channel: "telegram".into(),
            external_id: id.into(),
            chat_id: chat.into(),
            sender_id: "u1".into(),
            sender_name: Some("Ann".into()),
            text: format!("text {id}"),
            is_group: false,
            mentioned: false,
            reply_to: Some(id.into()),
            thread: None,
        }
    }

    fn out(chat: &str, text: &str, key: Option<&str>) -> NewOutbox {
        NewOutbox {
            channel: "telegram".into(),
            chat_id: chat.into(),
            text: text.into(),
            reply_to: None,
            thread: None,
            dedupe_key: key.map(str::to_string),
        }
    }

    #[tokio::test]
    async fn inbox_deduplicates_and_saves_the_cursor_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("c.db")).unwrap();
        let fresh = store
            .inbox_accept(
                "telegram",
                vec![msg("1", "c"), msg("2", "c")],
                Some(("offset".into(), "3".into())),
            )
            .await
            .unwrap();
        assert_eq!(fresh.len(), 2);
        let again = store
            .inbox_accept("telegram", vec![msg("2", "c"), msg("3", "c")], None)
            .await
            .unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].message.external_id, "3");
        assert_eq!(
            store
                .cursor_get("telegram", "offset")
                .await
                .unwrap()
                .as_deref(),
            Some("3")
        );
        let pending = store.inbox_pending(100).await.unwrap();
        assert_eq!(pending.len(), 3);
        let ids = store
            .inbox_finish(pending[0].id, "done", vec![out("c", "a", Some("k1"))])
            .await
            .unwrap();
        // The same reply queued again (a re-run turn) keeps the first row.
        let again = store
            .inbox_finish(pending[0].id, "done", vec![out("c", "a", Some("k1"))])
            .await
            .unwrap();
        assert_eq!(ids, again);
        assert_eq!(store.inbox_pending(100).await.unwrap().len(), 2);
        assert_eq!(store.inbox_pending(1).await.unwrap().len(), 1);
        assert_eq!(
            store.inbox_status(pending[0].id).await.unwrap().as_deref(),
            Some("done")
        );
        // Pruning keeps what is still pending.
        assert_eq!(store.channels_prune(now_ms() + 1).await.unwrap(), 1);
        assert_eq!(store.inbox_pending(100).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn outbox_sends_each_chat_in_order_and_retries() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("o.db")).unwrap();
        let ids = store
            .outbox_enqueue(vec![
                out("a", "a1", None),
                out("a", "a2", None),
                out("b", "b1", None),
            ])
            .await
            .unwrap();
        let now = now_ms();
        let due: Vec<String> = store
            .outbox_due(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(due, vec!["a1", "b1"], "only the head of each chat");
        // a1 fails and waits: a2 must not overtake it.
        store
            .outbox_attempt_failed(ids[0], Some(now + 60_000), "429")
            .await
            .unwrap();
        let due: Vec<String> = store
            .outbox_due(now, 10)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.text)
            .collect();
        assert_eq!(due, vec!["b1"]);
        // b1 is due since it was enqueued (at or just before `now`); a2 waits behind a1 and
        // does not count, and a1's retry is a minute away.
        let next = store.outbox_next_due().await.unwrap().unwrap();
        assert!(
            next <= now && next > now - 10_000,
            "next due {next}, now {now}"
        );
        store.outbox_sent(ids[2], "m1").await.unwrap();
        let due = store.outbox_due(now + 60_000, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].text, "a1");
        assert_eq!(due[0].attempts, 1);
        store
            .outbox_attempt_failed(ids[0], None, "gone")
            .await
            .unwrap();
        let due = store.outbox_due(now + 60_000, 10).await.unwrap();
        assert_eq!(
            due[0].text, "a2",
            "a failed message no longer blocks its chat"
        );
        let row = store.outbox_get(ids[0]).await.unwrap().unwrap();
        assert_eq!(row.status, "failed");
        assert_eq!(row.last_error.as_deref(), Some("gone"));
    }
}
