//! Who may reach the model: the per-channel DM policy, approved senders, and one-time
//! pairing codes for unknown senders.
//!
//! Under `dm_policy = "pairing"` an unknown sender gets an 8-character code (valid for
//! `code_ttl_secs`, at most `max_pending` waiting per channel, re-sent at most every
//! `remind_after_secs`) and nothing they write reaches the model. The owner approves with
//! `moltbot pairing approve <channel> <code>`; the sender is then stored as allowed.
//! In groups no codes are handed out: a group message is answered only if its sender may
//! use the bot in direct messages (or the policy is `open`).

use moltbot_core::config::{DmPolicy, PairingConfig};
use moltbot_core::{ChannelError, Inbound};
use moltbot_store::{PairingRequest, Store};
use rand::Rng;

/// Code characters: capitals and digits without the look-alikes 0/O and 1/I.
const CODE_ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
pub const CODE_LEN: usize = 8;

/// A fresh pairing code (40 bits of entropy from the OS-seeded thread RNG).
pub fn new_code() -> String {
    let mut rng = rand::rng();
    (0..CODE_LEN)
        .map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char)
        .collect()
}

/// What to do with a message, access-wise.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Run the turn.
    Allowed,
    /// Send the sender their (new or reminded) pairing code; nothing reaches the model.
    SendCode { code: String, expires_at: i64 },
    /// Drop the message silently (with the reason for the log).
    Ignored(&'static str),
}

/// The access rules of one channel.
#[derive(Debug, Clone)]
pub struct Access {
    pub policy: DmPolicy,
    /// Senders allowed by config (`allow_from`).
    pub allow_from: Vec<String>,
}

impl Access {
    /// Decide for `msg` at `now` (ms since the epoch), creating a pairing request if needed.
    pub async fn check(
        &self,
        store: &Store,
        pairing: &PairingConfig,
        msg: &Inbound,
        now: i64,
    ) -> Result<Gate, ChannelError> {
        let internal = |e: moltbot_store::StoreError| ChannelError::Internal(e.to_string());
        if self.policy == DmPolicy::Open || self.allow_from.iter().any(|a| a == &msg.sender_id) {
            return Ok(Gate::Allowed);
        }
        if store
            .allowed_contains(&msg.channel, &msg.sender_id)
            .await
            .map_err(internal)?
        {
            return Ok(Gate::Allowed);
        }
        if self.policy == DmPolicy::Allowlist {
            return Ok(Gate::Ignored("sender not in the allowlist"));
        }
        if msg.is_group {
            return Ok(Gate::Ignored("unpaired sender in a group"));
        }
        let ttl_ms = pairing.code_ttl_secs as i64 * 1000;
        let remind_ms = pairing.remind_after_secs as i64 * 1000;
        if let Some(req) = store
            .pairing_get(&msg.channel, &msg.sender_id)
            .await
            .map_err(internal)?
            .filter(|r| r.expires_at > now)
        {
            if now - req.last_sent_at < remind_ms {
                return Ok(Gate::Ignored("pairing code sent recently"));
            }
            store
                .pairing_touch(&msg.channel, &msg.sender_id, now)
                .await
                .map_err(internal)?;
            return Ok(Gate::SendCode {
                code: req.code,
                expires_at: req.expires_at,
            });
        }
        let req = PairingRequest {
            channel: msg.channel.clone(),
            sender_id: msg.sender_id.clone(),
            sender_name: msg.sender_name.clone(),
            chat_id: msg.chat_id.clone(),
            code: new_code(),
            created_at: now,
            expires_at: now + ttl_ms,
            last_sent_at: now,
        };
        let (code, expires_at) = (req.code.clone(), req.expires_at);
        if store
            .pairing_put(req, pairing.max_pending)
            .await
            .map_err(internal)?
        {
            Ok(Gate::SendCode { code, expires_at })
        } else {
            tracing::warn!(
                channel = %msg.channel,
                max_pending = pairing.max_pending,
                "a new sender got no pairing code: too many codes wait for approval \
                 (moltbot pairing list)"
            );
            metrics::counter!("moltbot_channel_pairing_refused_total").increment(1);
            Ok(Gate::Ignored("too many pairing requests waiting"))
        }
    }
}

/// The text an unknown sender receives.
pub fn code_message(channel: &str, code: &str, ttl_secs: u64) -> String {
    let minutes = ttl_secs.div_ceil(60);
    format!(
        "Hi! This assistant only answers people its owner has approved.\n\n\
         Your pairing code: {code}\n\n\
         Ask the owner to run:\nmoltbot pairing approve {channel} {code}\n\n\
         The code is valid for {minutes} minutes."
    )
}

/// The text a sender receives once approved.
pub const APPROVED_MESSAGE: &str = "You're approved. Say hello!";

#[cfg(test)]
mod tests {
    use super::*;

    fn dm(sender: &str) -> Inbound {
        Inbound {
            channel: "telegram".into(),
            external_id: format!("m-{sender}"),
            chat_id: sender.into(),
            sender_id: sender.into(),
            sender_name: None,
            text: "hi".into(),
            is_group: false,
            mentioned: false,
            reply_to: None,
            thread: None,
        }
    }

    #[test]
    fn codes_are_eight_unambiguous_characters() {
        for _ in 0..200 {
            let c = new_code();
            assert_eq!(c.len(), CODE_LEN);
            assert!(c.bytes().all(|b| CODE_ALPHABET.contains(&b)), "{c}");
        }
        assert_ne!(new_code(), new_code());
    }

    #[tokio::test]
    async fn policies() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("p.db")).unwrap();
        let cfg = PairingConfig {
            code_ttl_secs: 3600,
            max_pending: 1,
            remind_after_secs: 600,
        };
        let open = Access {
            policy: DmPolicy::Open,
            allow_from: vec![],
        };
        assert_eq!(
            open.check(&store, &cfg, &dm("a"), 0).await.unwrap(),
            Gate::Allowed
        );
        let list = Access {
            policy: DmPolicy::Allowlist,
            allow_from: vec!["a".into()],
        };
        assert_eq!(
            list.check(&store, &cfg, &dm("a"), 0).await.unwrap(),
            Gate::Allowed
        );
        assert!(matches!(
            list.check(&store, &cfg, &dm("b"), 0).await.unwrap(),
            Gate::Ignored(_)
        ));

        let pairing = Access {
            policy: DmPolicy::Pairing,
            allow_from: vec![],
        };
        let Gate::SendCode { code, expires_at } =
            pairing.check(&store, &cfg, &dm("b"), 1_000).await.unwrap()
        else {
            panic!("expected a code")
        };
        assert_eq!(expires_at, 1_000 + 3_600_000);
        // Writing again soon: silence; after the reminder interval: the same code again.
        assert!(matches!(
            pairing.check(&store, &cfg, &dm("b"), 2_000).await.unwrap(),
            Gate::Ignored(_)
        ));
        assert_eq!(
            pairing
                .check(&store, &cfg, &dm("b"), 700_000)
                .await
                .unwrap(),
            Gate::SendCode {
                code: code.clone(),
                expires_at
            }
        );
        // The channel's pending bound (1) is reached: another stranger gets nothing.
        assert!(matches!(
            pairing.check(&store, &cfg, &dm("c"), 2_000).await.unwrap(),
            Gate::Ignored(_)
        ));
        // Unknown senders in groups never get codes.
        let mut g = dm("d");
        g.is_group = true;
        assert!(matches!(
            pairing.check(&store, &cfg, &g, 2_000).await.unwrap(),
            Gate::Ignored(_)
        ));
        store
            .pairing_approve("telegram", &code, 3_000)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            pairing.check(&store, &cfg, &dm("b"), 4_000).await.unwrap(),
            Gate::Allowed
        );
        // Once expired, a new code is issued.
        let Gate::SendCode { code: c2, .. } = pairing
            .check(&store, &cfg, &dm("c"), 10_000_000)
            .await
            .unwrap()
        else {
            panic!("expected a code after expiry")
        };
        assert_eq!(c2.len(), CODE_LEN);
    }
}
