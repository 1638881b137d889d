//! Who may talk to the assistant through a channel: pairing requests (one-time codes for
//! unknown senders, bounded per channel, expiring) and the senders the owner approved.
//! The tables are created with the rest of the channel state (`channels::SCHEMA_V2`).

use crate::rows::Cols;
use crate::sqlite::SqliteStore;
use crate::{now_ms, StoreError};
use rusqlite::{params, OptionalExtension};
use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PairingRequest {
    pub channel: String,
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub chat_id: String,
    pub code: String,
    pub created_at: i64,
    pub expires_at: i64,
    pub last_sent_at: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllowedSender {
    pub channel: String,
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub approved_at: i64,
    /// `pairing` or `cli`.
    pub via: String,
}

pub(crate) const PAIRING_COLUMNS: &str =
    "channel, sender_id, sender_name, chat_id, code, created_at, expires_at, last_sent_at";

pub(crate) fn row_to_pairing<R: Cols>(r: &R) -> Result<PairingRequest, R::Error> {
    Ok(PairingRequest {
        channel: r.text(0)?,
        sender_id: r.text(1)?,
        sender_name: r.opt_text(2)?,
        chat_id: r.text(3)?,
        code: r.text(4)?,
        created_at: r.int(5)?,
        expires_at: r.int(6)?,
        last_sent_at: r.int(7)?,
    })
}

pub(crate) const ALLOWED_COLUMNS: &str = "channel, sender_id, sender_name, approved_at, via";

pub(crate) fn row_to_allowed<R: Cols>(r: &R) -> Result<AllowedSender, R::Error> {
    Ok(AllowedSender {
        channel: r.text(0)?,
        sender_id: r.text(1)?,
        sender_name: r.opt_text(2)?,
        approved_at: r.int(3)?,
        via: r.text(4)?,
    })
}

impl SqliteStore {
    pub async fn pairing_get(
        &self,
        channel: &str,
        sender_id: &str,
    ) -> Result<Option<PairingRequest>, StoreError> {
        let (channel, sender_id) = (channel.to_string(), sender_id.to_string());
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    &format!(
                        "SELECT {PAIRING_COLUMNS} FROM pairing_requests
                         WHERE channel = ?1 AND sender_id = ?2"
                    ),
                    params![channel, sender_id],
                    |r| row_to_pairing(r),
                )
                .optional()?)
        })
        .await
    }

    /// Create or replace the sender's pairing request, unless the channel already has
    /// `max_pending` unexpired requests from other senders. Returns whether it was stored.
    pub async fn pairing_put(
        &self,
        req: PairingRequest,
        max_pending: usize,
    ) -> Result<bool, StoreError> {
        let n = self
            .write(move |conn| {
                conn.execute(
                    "DELETE FROM pairing_requests WHERE expires_at <= ?1",
                    params![req.created_at],
                )?;
                let others: i64 = conn.query_row(
                    "SELECT COUNT(*) FROM pairing_requests WHERE channel = ?1 AND sender_id != ?2",
                    params![req.channel, req.sender_id],
                    |r| r.get(0),
                )?;
                if others as usize >= max_pending {
                    return Ok(0);
                }
                Ok(conn.execute(
                    "INSERT INTO pairing_requests (channel, sender_id, sender_name, chat_id, code,
                         created_at, expires_at, last_sent_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT(channel, sender_id) DO UPDATE SET
                         sender_name = excluded.sender_name, chat_id = excluded.chat_id,
                         code = excluded.code, created_at = excluded.created_at,
                         expires_at = excluded.expires_at, last_sent_at = excluded.last_sent_at",
                    params![
                        req.channel,
                        req.sender_id,
                        req.sender_name,
                        req.chat_id,
                        req.code,
                        req.created_at,
                        req.expires_at,
                        req.last_sent_at
                    ],
                )? as i64)
            })
            .await?;
        Ok(n == 1)
    }

    pub async fn pairing_touch(
        &self,
        channel: &str,
        sender_id: &str,
        at: i64,
    ) -> Result<(), StoreError> {
        let (channel, sender_id) = (channel.to_string(), sender_id.to_string());
        self.write(move |conn| {
            Ok(conn.execute(
                "UPDATE pairing_requests SET last_sent_at = ?3 WHERE channel = ?1 AND sender_id = ?2",
                params![channel, sender_id, at],
            )? as i64)
        })
        .await
        .map(drop)
    }

    /// Unexpired pairing requests, oldest first.
    pub async fn pairing_list(&self, now: i64) -> Result<Vec<PairingRequest>, StoreError> {
        self.with_reader(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {PAIRING_COLUMNS} FROM pairing_requests WHERE expires_at > ?1
                 ORDER BY created_at"
            ))?;
            let rows = stmt
                .query_map(params![now], |r| row_to_pairing(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Approve the unexpired request of `channel` with this code (case-insensitive): the
    /// sender becomes allowed and the request goes away, in one transaction.
    pub async fn pairing_approve(
        &self,
        channel: &str,
        code: &str,
        now: i64,
    ) -> Result<Option<PairingRequest>, StoreError> {
        let (channel, code) = (channel.to_string(), code.trim().to_ascii_uppercase());
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.write(move |conn| {
            let found = conn
                .query_row(
                    &format!(
                        "SELECT {PAIRING_COLUMNS} FROM pairing_requests
                         WHERE channel = ?1 AND code = ?2 AND expires_at > ?3"
                    ),
                    params![channel, code, now],
                    |r| row_to_pairing(r),
                )
                .optional()?;
            if let Some(req) = &found {
                conn.execute(
                    "INSERT INTO allowed_senders (channel, sender_id, sender_name, approved_at, via)
                     VALUES (?1, ?2, ?3, ?4, 'pairing')
                     ON CONFLICT(channel, sender_id) DO UPDATE SET approved_at = excluded.approved_at",
                    params![req.channel, req.sender_id, req.sender_name, now],
                )?;
                conn.execute(
                    "DELETE FROM pairing_requests WHERE channel = ?1 AND sender_id = ?2",
                    params![req.channel, req.sender_id],
                )?;
            }
            let n = i64::from(found.is_some());
            let _ = tx.send(found);
            Ok(n)
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)
    }

    pub async fn allowed_contains(
        &self,
        channel: &str,
        sender_id: &str,
    ) -> Result<bool, StoreError> {
        let (channel, sender_id) = (channel.to_string(), sender_id.to_string());
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT 1 FROM allowed_senders WHERE channel = ?1 AND sender_id = ?2",
                    params![channel, sender_id],
                    |_| Ok(()),
                )
                .optional()?
                .is_some())
        })
        .await
    }

    pub async fn allowed_list(&self) -> Result<Vec<AllowedSender>, StoreError> {
        self.with_reader(|conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {ALLOWED_COLUMNS} FROM allowed_senders ORDER BY channel, approved_at"
            ))?;
            let rows = stmt
                .query_map([], |r| row_to_allowed(r))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }

    /// Allow a sender directly (`moltbot pairing allow`), without a code.
    pub async fn allowed_add(
        &self,
        channel: &str,
        sender_id: &str,
        via: &str,
    ) -> Result<(), StoreError> {
        let (channel, sender_id, via) =
            (channel.to_string(), sender_id.to_string(), via.to_string());
        self.write(move |conn| {
            conn.execute(
                "DELETE FROM pairing_requests WHERE channel = ?1 AND sender_id = ?2",
                params![channel, sender_id],
            )?;
            Ok(conn.execute(
                "INSERT INTO allowed_senders (channel, sender_id, approved_at, via)
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT(channel, sender_id) DO NOTHING",
                params![channel, sender_id, now_ms(), via],
            )? as i64)
        })
        .await
        .map(drop)
    }

    /// Revoke a sender. Returns whether they were allowed.
    pub async fn allowed_remove(&self, channel: &str, sender_id: &str) -> Result<bool, StoreError> {
        let (channel, sender_id) = (channel.to_string(), sender_id.to_string());
        let n = self
            .write(move |conn| {
                Ok(conn.execute(
                    "DELETE FROM allowed_senders WHERE channel = ?1 AND sender_id = ?2",
                    params![channel, sender_id],
                )? as i64)
            })
            .await?;
        Ok(n > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Store;

    #[tokio::test]
    async fn pairing_requests_are_bounded_expire_and_approve_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.db")).unwrap();
        let req = |sender: &str, code: &str, now: i64| PairingRequest {
            channel: "telegram".into(),
            sender_id: sender.into(),
            sender_name: None,
            chat_id: sender.into(),
            code: code.into(),
            created_at: now,
            expires_at: now + 1000,
            last_sent_at: now,
        };
        assert!(store
            .pairing_put(req("u1", "AAAA2222", 0), 2)
            .await
            .unwrap());
        assert!(store
            .pairing_put(req("u2", "BBBB3333", 0), 2)
            .await
            .unwrap());
        assert!(!store
            .pairing_put(req("u3", "CCCC4444", 0), 2)
            .await
            .unwrap());
        // Replacing one's own request does not count against the bound.
        assert!(store
            .pairing_put(req("u2", "DDDD5555", 10), 2)
            .await
            .unwrap());
        assert_eq!(store.pairing_list(10).await.unwrap().len(), 2);
        assert!(store
            .pairing_approve("telegram", "bbbb3333", 20)
            .await
            .unwrap()
            .is_none());
        let ok = store
            .pairing_approve("telegram", "dddd5555", 20)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ok.sender_id, "u2");
        assert!(store.allowed_contains("telegram", "u2").await.unwrap());
        assert!(!store.allowed_contains("whatsapp", "u2").await.unwrap());
        assert!(store
            .pairing_approve("telegram", "DDDD5555", 20)
            .await
            .unwrap()
            .is_none());
        // Expired codes cannot be approved.
        assert!(store
            .pairing_approve("telegram", "AAAA2222", 5000)
            .await
            .unwrap()
            .is_none());
        assert!(store.pairing_list(5000).await.unwrap().is_empty());
        assert!(store.allowed_remove("telegram", "u2").await.unwrap());
        assert!(!store.allowed_contains("telegram", "u2").await.unwrap());
    }
}
