//! The messaging plug-in point: [`Channel`] (one per platform: Telegram, WhatsApp, Discord,
//! Slack) and [`InboundSink`], through which an adapter hands received messages to the turn
//! pipeline.
//!
//! An adapter does three things: it receives (long polling, a gateway WebSocket, or webhook
//! requests routed to it), it sends a reply, and it reports its connection state. Access
//! control (pairing, allowlists), session mapping, durable inbox/outbox, message splitting
//! and retries live outside the adapters, in `moltbot-channels`' hub, so every platform gets
//! them the same way.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A message received from a platform.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    /// The channel kind (`telegram`, `whatsapp`, `discord`, `slack`).
    pub channel: String,
    /// The platform's id of this message, unique within the channel: the de-duplication key
    /// (a redelivered webhook or a repeated poll carries the same id).
    pub external_id: String,
    /// Where a reply goes (a Telegram chat id, a WhatsApp phone number, a Discord or Slack
    /// channel id).
    pub chat_id: String,
    /// Who wrote it (a platform user id or phone number): what pairing and allowlists match.
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub text: String,
    /// Sent in a group or a public channel rather than a direct message.
    pub is_group: bool,
    /// In a group: the bot was mentioned or replied to.
    pub mentioned: bool,
    /// The platform message to answer (threads the reply where the platform supports it).
    pub reply_to: Option<String>,
    /// A platform thread to answer in (Slack `thread_ts`).
    pub thread: Option<String>,
}

/// A message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    pub chat_id: String,
    /// Plain text in the platform's size limit (the hub splits long replies before sending).
    /// The adapter applies its own markup escaping and falls back to plain text when the
    /// platform rejects the markup.
    pub text: String,
    pub reply_to: Option<String>,
    pub thread: Option<String>,
}

/// How a platform formats rich text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Markup {
    Plain,
    TelegramMarkdownV2,
    /// Slack's `mrkdwn`.
    SlackMrkdwn,
    /// Discord's and WhatsApp's light markdown (`*bold*`, `_italic_`, code fences).
    Markdown,
}

/// What a platform allows; the hub splits and formats by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// Longest message the platform accepts, in characters (UTF-16 units for Telegram are
    /// counted as characters here; the hub leaves a margin).
    pub max_message_chars: usize,
    pub markup: Markup,
    /// The platform has a "typing…" indicator.
    pub typing: bool,
    /// Images and files can be sent (not used by the text pipeline yet).
    pub media: bool,
}

/// A channel's connection state, for `/health` and `moltbot channels status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChannelState {
    /// Not started yet, or reconnecting.
    Connecting,
    /// Receiving: polling works, the gateway socket is identified, or webhooks are served.
    Connected,
    /// The last attempt failed; the adapter retries with backoff. The detail never holds a
    /// secret.
    Error {
        detail: String,
    },
    Stopped,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The platform asked us to slow down.
    #[error("rate limited; retry after {retry_after:?}")]
    RateLimited { retry_after: Duration },
    /// The platform refused this message for good (bad chat id, message too long, blocked
    /// by the user): retrying will not help.
    #[error("rejected by the platform: {0}")]
    Rejected(String),
    /// The credentials are wrong or revoked.
    #[error("the platform refused our credentials: {0}")]
    Unauthorized(String),
    /// Network errors and 5xx: worth retrying.
    #[error("transient failure: {0}")]
    Transient(String),
    /// Our own side failed (the store).
    #[error("internal failure: {0}")]
    Internal(String),
}

impl ChannelError {
    pub fn kind(&self) -> &'static str {
        match self {
            ChannelError::RateLimited { .. } => "rate_limited",
            ChannelError::Rejected(_) => "rejected",
            ChannelError::Unauthorized(_) => "unauthorized",
            ChannelError::Transient(_) => "transient",
            ChannelError::Internal(_) => "internal",
        }
    }

    /// Whether sending again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ChannelError::RateLimited { .. }
                | ChannelError::Transient(_)
                | ChannelError::Internal(_)
        )
    }
}

/// A small piece of adapter state saved in the same transaction as the messages it
/// covers (Telegram's `getUpdates` offset): after a restart the adapter resumes exactly
/// where the store says, so nothing is lost or repeated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    pub key: String,
    pub value: String,
}

/// Where adapters deliver what they receive. Implemented by the hub: `accept` returns once
/// the batch is durably stored (an adapter acknowledges to the platform only after that).
pub trait InboundSink: Send + Sync {
    /// Store `batch` (already-seen `external_id`s are ignored) and, in the same
    /// transaction, `cursor` for `channel`.
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        batch: Vec<Inbound>,
        cursor: Option<Cursor>,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;

    /// A cursor saved by [`InboundSink::accept`] or [`InboundSink::save_cursor`].
    fn cursor<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ChannelError>>;

    /// Save a cursor on its own (Discord's resume session id).
    fn save_cursor<'a>(
        &'a self,
        channel: &'a str,
        cursor: Cursor,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;
}

/// One messaging platform.
pub trait Channel: Send + Sync {
    /// `telegram`, `whatsapp`, `discord` or `slack`: also the metrics label.
    fn kind(&self) -> &'static str;

    fn capabilities(&self) -> Capabilities;

    /// Receive until `shutdown` fires, handing messages to `sink`. Reconnects with backoff
    /// on its own; returns `Err` only for a failure it cannot recover from (bad credentials).
    /// Webhook-only adapters wait for `shutdown` (their messages arrive over HTTP routes).
    fn run<'a>(
        &'a self,
        sink: std::sync::Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), ChannelError>>;

    /// Send one message (already within `max_message_chars`); returns the platform's id of
    /// the sent message.
    fn send<'a>(&'a self, msg: &'a Outbound) -> BoxFuture<'a, Result<String, ChannelError>>;

    /// Show "typing…" in `chat_id` for a few seconds; the hub repeats it while a turn runs.
    fn typing<'a>(&'a self, chat_id: &'a str) -> BoxFuture<'a, Result<(), ChannelError>>;

    fn state(&self) -> ChannelState;
}

/// Slash commands typed in a chat (`/approve ID`), answered before the message becomes a
/// turn. The hub asks the handler first; `None` lets the message through.
pub trait ChatCommands: Send + Sync + 'static {
    /// Whether `text` is one of these commands. Claimed messages are answered at once,
    /// beside the conversation rather than after its running turn (which may be the one
    /// waiting for the answer, as with an approval).
    fn claims(&self, text: &str) -> bool;

    /// `owner`: the sender is in the channel's `allow_from`.
    fn handle(&self, channel: &str, sender_id: &str, owner: bool, text: &str) -> Option<String>;
}
