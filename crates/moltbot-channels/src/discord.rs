//! Discord: messages arrive over the gateway WebSocket, replies and typing go over REST.
//!
//! # Layout
//! - [`DiscordChannel`] (here): the [`Channel`] implementation, its state, and the mapping of
//!   a `MESSAGE_CREATE` dispatch to an [`Inbound`].
//! - `gateway`: the gateway protocol (Hello, heartbeats, Identify/Resume, dispatches, close
//!   codes) with reconnects and a session that survives restarts through the sink's cursor.
//! - `rest`: `GET /gateway/bot`, `POST /channels/{id}/messages`, `POST /channels/{id}/typing`,
//!   per-channel rate-limit buckets and the mapping of Discord's answers to [`ChannelError`].
//!
//! The bot token only leaves this module inside the `Authorization` header (marked
//! sensitive) and the gateway's Identify/Resume payloads, which are never logged.

use crate::http;
use futures::future::BoxFuture;
use futures::FutureExt;
use moltbot_core::channel::{Capabilities, Markup};
use moltbot_core::config::DiscordConfig;
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

mod gateway;
mod rest;

/// The channel kind, the sink's channel name and the metrics label.
const KIND: &str = "discord";
/// Discord's limit on `content`, in characters.
const MAX_MESSAGE_CHARS: usize = 2000;
/// Bound on one REST call.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The Discord adapter: a bot connected to the gateway, answering over REST.
pub struct DiscordChannel {
    token: Secret,
    /// From config; when absent the gateway URL is asked of `GET /gateway/bot`.
    gateway_url: Option<String>,
    rest: rest::Rest,
    // A std mutex: held only to read or replace the value, never across an `.await`.
    state: Mutex<ChannelState>,
}

impl DiscordChannel {
    /// Fails when the bot token is missing or cannot be sent in a header, or the HTTP client
    /// cannot be built.
    pub fn new(cfg: &DiscordConfig) -> Result<Self, ChannelError> {
        let token = match &cfg.bot_token {
            Some(token) if !token.is_empty() => token.clone(),
            _ => {
                return Err(ChannelError::Unauthorized(
                    "channels.discord.bot_token is required, got nothing".into(),
                ))
            }
        };
        let client = http::client(REQUEST_TIMEOUT)?;
        let rest = rest::Rest::new(client, &cfg.api_base, &token)?;
        Ok(Self {
            token,
            gateway_url: cfg.gateway_url.clone().filter(|u| !u.trim().is_empty()),
            rest,
            state: Mutex::new(ChannelState::Connecting),
        })
    }

    fn set_state(&self, state: ChannelState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }
}

impl Channel for DiscordChannel {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_chars: MAX_MESSAGE_CHARS,
            markup: Markup::Markdown,
            typing: true,
            media: true,
        }
    }

    fn run<'a>(
        &'a self,
        sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        gateway::run(self, sink, shutdown).boxed()
    }

    fn send<'a>(&'a self, msg: &'a Outbound) -> BoxFuture<'a, Result<String, ChannelError>> {
        self.rest.create_message(msg).boxed()
    }

    fn typing<'a>(&'a self, chat_id: &'a str) -> BoxFuture<'a, Result<(), ChannelError>> {
        self.rest.trigger_typing(chat_id).boxed()
    }

    fn state(&self) -> ChannelState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Message types that carry a user's text: `DEFAULT` and `REPLY`. The others are system
/// notices (joins, pins, boosts, thread creation).
const TEXT_MESSAGE_TYPES: [u64; 2] = [0, 19];

/// The [`Inbound`] for a `MESSAGE_CREATE` payload `d`, or `None` for messages the bot must
/// not answer: its own, other bots', system notices, and messages with no text left (only
/// attachments, or only the mention).
fn inbound_from_message(d: &Value, bot_user_id: &str) -> Option<Inbound> {
    let author = &d["author"];
    let author_id = author["id"].as_str()?;
    if author["bot"].as_bool() == Some(true) || author_id == bot_user_id {
        return None;
    }
    if !TEXT_MESSAGE_TYPES.contains(&d["type"].as_u64().unwrap_or(0)) {
        return None;
    }
    let id = d["id"].as_str()?;
    let chat_id = d["channel_id"].as_str()?;
    let mentioned = !bot_user_id.is_empty()
        && (d["mentions"]
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u["id"] == bot_user_id))
            || d["referenced_message"]["author"]["id"] == bot_user_id);
    let text = strip_mentions(d["content"].as_str().unwrap_or_default(), bot_user_id);
    if text.is_empty() {
        return None;
    }
    let sender_name = author["global_name"]
        .as_str()
        .filter(|n| !n.is_empty())
        .or_else(|| author["username"].as_str())
        .map(str::to_string);
    Some(Inbound {
        channel: KIND.to_string(),
        external_id: id.to_string(),
        chat_id: chat_id.to_string(),
        sender_id: author_id.to_string(),
        sender_name,
        text,
        is_group: d["guild_id"].is_string(),
        mentioned,
        reply_to: Some(id.to_string()),
        thread: None,
    })
}

/// `text` without the bot's own mentions (`<@ID>` and the older nickname form `<@!ID>`),
/// each with one following space, trimmed.
fn strip_mentions(text: &str, bot_user_id: &str) -> String {
    if bot_user_id.is_empty() {
        return text.trim().to_string();
    }
    let mut out = text.to_string();
    for token in [format!("<@{bot_user_id}>"), format!("<@!{bot_user_id}>")] {
        out = out.replace(&format!("{token} "), "").replace(&token, "");
    }
    out.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: &str = "42";

    fn message(extra: Value) -> Value {
        let mut d = json!({
            "id": "1001",
            "type": 0,
            "channel_id": "77",
            "author": {"id": "5", "username": "ada", "global_name": null},
            "content": "hello",
            "mentions": [],
        });
        if let (Some(d), Some(extra)) = (d.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                d.insert(k.clone(), v.clone());
            }
        }
        d
    }

    #[test]
    fn a_direct_message_maps_to_an_inbound() {
        let inbound = inbound_from_message(&message(json!({})), BOT).expect("kept");
        assert_eq!(inbound.external_id, "1001");
        assert_eq!(inbound.chat_id, "77");
        assert_eq!(inbound.sender_id, "5");
        assert_eq!(inbound.sender_name.as_deref(), Some("ada"));
        assert_eq!(inbound.reply_to.as_deref(), Some("1001"));
        assert!(!inbound.is_group);
        assert!(!inbound.mentioned);
    }

    #[test]
    fn the_display_name_wins_over_the_username() {
        let d = message(json!({"author": {"id": "5", "username": "ada", "global_name": "Ada L."}}));
        let inbound = inbound_from_message(&d, BOT).expect("kept");
        assert_eq!(inbound.sender_name.as_deref(), Some("Ada L."));
    }

    #[test]
    fn mentions_and_replies_to_the_bot_are_detected_and_stripped() {
        let d = message(json!({
            "guild_id": "9",
            "content": "hey <@42> what time <@!42>",
            "mentions": [{"id": "42"}],
        }));
        let inbound = inbound_from_message(&d, BOT).expect("kept");
        assert!(inbound.is_group && inbound.mentioned);
        assert_eq!(inbound.text, "hey what time");

        let reply = message(json!({
            "guild_id": "9",
            "type": 19,
            "referenced_message": {"id": "1", "author": {"id": "42", "bot": true}},
        }));
        assert!(inbound_from_message(&reply, BOT).expect("kept").mentioned);

        let other = message(json!({"guild_id": "9", "mentions": [{"id": "43"}]}));
        assert!(!inbound_from_message(&other, BOT).expect("kept").mentioned);
    }

    #[test]
    fn bots_system_notices_and_empty_messages_are_ignored() {
        let own = message(json!({"author": {"id": "42", "username": "me"}}));
        assert_eq!(inbound_from_message(&own, BOT), None);
        let bot = message(json!({"author": {"id": "6", "username": "b", "bot": true}}));
        assert_eq!(inbound_from_message(&bot, BOT), None);
        let join = message(json!({"type": 7}));
        assert_eq!(inbound_from_message(&join, BOT), None);
        let only_mention = message(json!({"content": "<@42>", "mentions": [{"id": "42"}]}));
        assert_eq!(inbound_from_message(&only_mention, BOT), None);
    }
}
