//! Channel state (inbox, outbox, cursors) and pairing on PostgreSQL. The SQLite versions
//! of these queries, and what each method promises, are in `src/channels.rs` and
//! `src/pairing.rs`.

use super::{decode, pg_params, PgStore};
use crate::channels::{
    row_to_inbox, row_to_outbox, INBOX_CLAIMABLE, INBOX_COLUMNS, OUTBOX_COLUMNS, OUTBOX_DUE,
};
use crate::pairing::{row_to_allowed, row_to_pairing, ALLOWED_COLUMNS, PAIRING_COLUMNS};
use crate::{now_ms, AllowedSender, InboxRow, NewOutbox, OutboxRow, PairingRequest, StoreError};
use moltbot_core::Inbound;
use sqlx::AssertSqlSafe;
use sqlx::{PgConnection, Postgres, Transaction};

async fn insert_outbox(
    tx: &mut PgConnection,
    items: &[NewOutbox],
    now: i64,
) -> Result<Vec<i64>, StoreError> {
    let mut ids = Vec::with_capacity(items.len());
    for m in items {
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO outbox (channel, chat_id, text, reply_to, thread, dedupe_key,
                                 next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7)
             ON CONFLICT (dedupe_key) DO NOTHING RETURNING id",
        )
        .bind(&m.channel)
        .bind(&m.chat_id)
        .bind(&m.text)
        .bind(&m.reply_to)
        .bind(&m.thread)
        .bind(&m.dedupe_key)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let id = match id {
            Some(id) => id,
            // Already queued under this key: report the existing row.
            None => {
                sqlx::query_scalar("SELECT id FROM outbox WHERE dedupe_key = $1")
                    .bind(&m.dedupe_key)
                    .fetch_one(&mut *tx)
                    .await?
            }
        };
        ids.push(id);
    }
    Ok(ids)
}

/// Serialise writers of one key for the rest of the transaction (a count-then-insert must
/// not race another replica's).
pub(super) async fn lock_key(
    tx: &mut Transaction<'_, Postgres>,
    key: &str,
) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
        .bind(key)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

impl PgStore {
    pub async fn inbox_accept(
        &self,
        channel: &str,
        batch: Vec<Inbound>,
        cursor: Option<(String, String)>,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let now = now_ms();
        let mut tx = self.pool().begin().await?;
        let mut fresh = Vec::new();
        for m in batch {
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO inbox (channel, external_id, chat_id, sender_id, sender_name,
                     text, is_group, mentioned, reply_to, thread, received_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (channel, external_id) DO NOTHING RETURNING id",
            )
            .bind(channel)
            .bind(&m.external_id)
            .bind(&m.chat_id)
            .bind(&m.sender_id)
            .bind(&m.sender_name)
            .bind(&m.text)
            .bind(m.is_group)
            .bind(m.mentioned)
            .bind(&m.reply_to)
            .bind(&m.thread)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(id) = id {
                fresh.push(InboxRow {
                    id,
                    received_at: now,
                    status: "pending".into(),
                    message: Inbound {
                        channel: channel.to_string(),
                        ..m
                    },
                });
            }
        }
        if let Some((key, value)) = cursor {
            set_cursor(&mut tx, channel, &key, &value).await?;
        }
        tx.commit().await?;
        Ok(fresh)
    }

    pub async fn inbox_pending(&self, limit: usize) -> Result<Vec<InboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {INBOX_COLUMNS} FROM inbox WHERE status = 'pending' ORDER BY id LIMIT $1"
        )))
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_inbox)
    }

    pub async fn inbox_claim(
        &self,
        owner: &str,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<InboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE inbox SET claimed_by = $1, claimed_until = $2 + $3
             WHERE id IN (SELECT id FROM inbox i WHERE {} ORDER BY id LIMIT $4
                          FOR UPDATE SKIP LOCKED)
             RETURNING {INBOX_COLUMNS}",
            pg_params(INBOX_CLAIMABLE)
        )))
        .bind(owner)
        .bind(now)
        .bind(lease_ms)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        let mut rows = decode(&rows, row_to_inbox)?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    pub async fn inbox_status(&self, id: i64) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar("SELECT status FROM inbox WHERE id = $1")
            .bind(id)
            .fetch_optional(self.pool())
            .await?)
    }

    pub async fn channels_prune(&self, before: i64) -> Result<i64, StoreError> {
        let mut tx = self.pool().begin().await?;
        let a = sqlx::query("DELETE FROM inbox WHERE status <> 'pending' AND received_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let b = sqlx::query("DELETE FROM outbox WHERE status = 'sent' AND created_at < $1")
            .bind(before)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok((a + b) as i64)
    }

    pub async fn inbox_finish(
        &self,
        inbox_id: i64,
        status: &'static str,
        replies: Vec<NewOutbox>,
    ) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let ids = insert_outbox(&mut tx, &replies, now_ms()).await?;
        sqlx::query("UPDATE inbox SET status = $2 WHERE id = $1")
            .bind(inbox_id)
            .bind(status)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn cursor_get(&self, channel: &str, key: &str) -> Result<Option<String>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT value FROM channel_cursors WHERE channel = $1 AND key = $2")
                .bind(channel)
                .bind(key)
                .fetch_optional(self.pool())
                .await?,
        )
    }

    pub async fn cursor_set(
        &self,
        channel: &str,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        set_cursor(&mut tx, channel, key, value).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn outbox_enqueue(&self, items: Vec<NewOutbox>) -> Result<Vec<i64>, StoreError> {
        let mut tx = self.pool().begin().await?;
        let ids = insert_outbox(&mut tx, &items, now_ms()).await?;
        tx.commit().await?;
        Ok(ids)
    }

    pub async fn outbox_due(&self, now: i64, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox o WHERE {}
             ORDER BY next_attempt_at, id LIMIT $2",
            pg_params(OUTBOX_DUE)
        )))
        .bind(now)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_outbox)
    }

    pub async fn outbox_claim(
        &self,
        now: i64,
        lease_ms: i64,
        limit: usize,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "UPDATE outbox SET next_attempt_at = $1 + $2
             WHERE id IN (SELECT id FROM outbox o WHERE {}
                          ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
             RETURNING {OUTBOX_COLUMNS}",
            pg_params(OUTBOX_DUE)
        )))
        .bind(now)
        .bind(lease_ms)
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        let mut rows = decode(&rows, row_to_outbox)?;
        rows.sort_by_key(|r| r.id);
        Ok(rows)
    }

    pub async fn outbox_next_due(&self) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT MIN(next_attempt_at) FROM outbox o WHERE status = 'pending'
               AND id = (SELECT MIN(id) FROM outbox i WHERE i.status = 'pending'
                         AND i.channel = o.channel AND i.chat_id = o.chat_id)",
        )
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn outbox_get(&self, id: i64) -> Result<Option<OutboxRow>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(row_to_outbox).transpose()?)
    }

    pub async fn outbox_recent(&self, limit: usize) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {OUTBOX_COLUMNS} FROM outbox ORDER BY id DESC LIMIT $1"
        )))
        .bind(limit as i64)
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_outbox)
    }

    pub async fn outbox_counts(&self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        Ok(sqlx::query_as(
            "SELECT channel, COUNT(*) FILTER (WHERE status = 'pending'),
                    COUNT(*) FILTER (WHERE status = 'failed')
             FROM outbox WHERE status <> 'sent' GROUP BY channel ORDER BY channel",
        )
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn outbox_sent(&self, id: i64, platform_id: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET status = 'sent', platform_id = $2, sent_at = $3,
                 attempts = attempts + 1, last_error = NULL WHERE id = $1",
        )
        .bind(id)
        .bind(platform_id)
        .bind(now_ms())
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn outbox_attempt_failed(
        &self,
        id: i64,
        next_attempt_at: Option<i64>,
        error: &str,
    ) -> Result<(), StoreError> {
        let q = match next_attempt_at {
            Some(at) => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $2,
                     last_error = $3 WHERE id = $1",
            )
            .bind(id)
            .bind(at)
            .bind(error),
            None => sqlx::query(
                "UPDATE outbox SET attempts = attempts + 1, status = 'failed',
                     last_error = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(error),
        };
        q.execute(self.pool()).await?;
        Ok(())
    }

    pub async fn pairing_get(
        &self,
        channel: &str,
        sender_id: &str,
    ) -> Result<Option<PairingRequest>, StoreError> {
        let row = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PAIRING_COLUMNS} FROM pairing_requests WHERE channel = $1 AND sender_id = $2"
        )))
        .bind(channel)
        .bind(sender_id)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.as_ref().map(row_to_pairing).transpose()?)
    }

    pub async fn pairing_put(
        &self,
        req: PairingRequest,
        max_pending: usize,
    ) -> Result<bool, StoreError> {
        let mut tx = self.pool().begin().await?;
        lock_key(&mut tx, &format!("pairing:{}", req.channel)).await?;
        sqlx::query("DELETE FROM pairing_requests WHERE expires_at <= $1")
            .bind(req.created_at)
            .execute(&mut *tx)
            .await?;
        let others: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pairing_requests WHERE channel = $1 AND sender_id <> $2",
        )
        .bind(&req.channel)
        .bind(&req.sender_id)
        .fetch_one(&mut *tx)
        .await?;
        if others as usize >= max_pending {
            tx.commit().await?;
            return Ok(false);
        }
        sqlx::query(
            "INSERT INTO pairing_requests (channel, sender_id, sender_name, chat_id, code,
                 created_at, expires_at, last_sent_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (channel, sender_id) DO UPDATE SET
                 sender_name = excluded.sender_name, chat_id = excluded.chat_id,
                 code = excluded.code, created_at = excluded.created_at,
                 expires_at = excluded.expires_at, last_sent_at = excluded.last_sent_at",
        )
        .bind(&req.channel)
        .bind(&req.sender_id)
        .bind(&req.sender_name)
        .bind(&req.chat_id)
        .bind(&req.code)
        .bind(req.created_at)
        .bind(req.expires_at)
        .bind(req.last_sent_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn pairing_touch(
        &self,
        channel: &str,
        sender_id: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE pairing_requests SET last_sent_at = $3 WHERE channel = $1 AND sender_id = $2",
        )
        .bind(channel)
        .bind(sender_id)
        .bind(at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn pairing_list(&self, now: i64) -> Result<Vec<PairingRequest>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {PAIRING_COLUMNS} FROM pairing_requests WHERE expires_at > $1
             ORDER BY created_at"
        )))
        .bind(now)
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_pairing)
    }

    pub async fn pairing_approve(
        &self,
        channel: &str,
        code: &str,
        now: i64,
    ) -> Result<Option<PairingRequest>, StoreError> {
        let code = code.trim().to_ascii_uppercase();
        let mut tx = self.pool().begin().await?;
        // Taking the request and deleting it is one statement: two approvals of the same
        // code cannot both succeed.
        let row = sqlx::query(AssertSqlSafe(format!(
            "DELETE FROM pairing_requests WHERE channel = $1 AND code = $2 AND expires_at > $3
             RETURNING {PAIRING_COLUMNS}"
        )))
        .bind(channel)
        .bind(&code)
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let found = row.as_ref().map(row_to_pairing).transpose()?;
        if let Some(req) = &found {
            sqlx::query(
                "INSERT INTO allowed_senders (channel, sender_id, sender_name, approved_at, via)
                 VALUES ($1, $2, $3, $4, 'pairing')
                 ON CONFLICT (channel, sender_id) DO UPDATE SET approved_at = excluded.approved_at",
            )
            .bind(&req.channel)
            .bind(&req.sender_id)
            .bind(&req.sender_name)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    pub async fn allowed_contains(
        &self,
        channel: &str,
        sender_id: &str,
    ) -> Result<bool, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM allowed_senders WHERE channel = $1 AND sender_id = $2)",
        )
        .bind(channel)
        .bind(sender_id)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn allowed_list(&self) -> Result<Vec<AllowedSender>, StoreError> {
        let rows = sqlx::query(AssertSqlSafe(format!(
            "SELECT {ALLOWED_COLUMNS} FROM allowed_senders ORDER BY channel, approved_at"
        )))
        .fetch_all(self.pool())
        .await?;
        decode(&rows, row_to_allowed)
    }

    pub async fn allowed_add(
        &self,
        channel: &str,
        sender_id: &str,
        via: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool().begin().await?;
        sqlx::query("DELETE FROM pairing_requests WHERE channel = $1 AND sender_id = $2")
            .bind(channel)
            .bind(sender_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO allowed_senders (channel, sender_id, approved_at, via)
             VALUES ($1, $2, $3, $4) ON CONFLICT (channel, sender_id) DO NOTHING",
        )
        .bind(channel)
        .bind(sender_id)
        .bind(now_ms())
        .bind(via)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn allowed_remove(&self, channel: &str, sender_id: &str) -> Result<bool, StoreError> {
        let n = sqlx::query("DELETE FROM allowed_senders WHERE channel = $1 AND sender_id = $2")
            .bind(channel)
            .bind(sender_id)
            .execute(self.pool())
            .await?
            .rows_affected();
        Ok(n > 0)
    }
}

async fn set_cursor(
    tx: &mut Transaction<'_, Postgres>,
    channel: &str,
    key: &str,
    value: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO channel_cursors (channel, key, value) VALUES ($1, $2, $3)
         ON CONFLICT (channel, key) DO UPDATE SET value = excluded.value",
    )
    .bind(channel)
    .bind(key)
    .bind(value)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
