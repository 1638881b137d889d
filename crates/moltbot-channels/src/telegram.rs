//! Telegram through the Bot API: `getUpdates` long polling or webhook deliveries in, and
//! `sendMessage` with MarkdownV2 out.
//!
//! # Layout
//! - [`TelegramChannel`] (here): the [`Channel`] implementation — `getMe`, the polling loop
//!   with its durable offset, `sendMessage` with the plain-text fallback, `sendChatAction`.
//! - [`markdown`]: [`to_markdown_v2`], common Markdown → MarkdownV2.
//! - `update` (private): the `Update` fields read and their mapping to [`Inbound`].
//! - `webhook` (private): [`TelegramChannel::webhook_router`], the
//!   `POST /channels/telegram/webhook` route for webhook mode.
//!
//! # Delivery guarantees
//! Telegram keeps an update until a `getUpdates` call asks for a higher `offset`. The adapter
//! hands each batch to the sink together with the next offset as a [`Cursor`], stored in the
//! same transaction, and only then asks for that offset. A crash before the sink stored the
//! batch fetches it again; a crash after resumes from the stored offset; the sink drops
//! `external_id`s it has seen, so nothing is lost or answered twice.
//!
//! The bot token is part of every Bot API URL. It never reaches logs or error texts:
//! transport errors go through [`http::transport_error`] (which strips URLs), and every error
//! text built here is scrubbed of the token as well.

use futures::future::BoxFuture;
use moltbot_core::channel::{Capabilities, Cursor, Markup};
use moltbot_core::config::{TelegramConfig, TelegramMode};
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use crate::http;

pub mod markdown;
mod update;
mod webhook;

pub use markdown::to_markdown_v2;
pub use webhook::{SECRET_HEADER, WEBHOOK_BODY_LIMIT, WEBHOOK_PATH};

use update::{Me, Update};

/// The channel kind, cursor namespace and metrics label.
pub const KIND: &str = "telegram";
/// The cursor key under which the next `getUpdates` offset is stored.
pub const OFFSET_KEY: &str = "offset";
/// Telegram's limit for one message, in characters after entity parsing.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// Ordinary calls (`sendMessage`, `getMe`); a long poll gets its own, longer timeout.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How much longer than the long-poll timeout the HTTP request may take.
const POLL_MARGIN: Duration = Duration::from_secs(10);
/// Update kinds asked for. Edits would repeat an already-answered message id, and the hub
/// has no use for the other kinds yet.
const ALLOWED_UPDATES: &[&str] = &["message"];

/// A Telegram bot. Cheap to share behind an `Arc`: the webhook route and the hub hold it.
pub struct TelegramChannel {
    client: reqwest::Client,
    api_base: String,
    token: Secret,
    mode: TelegramMode,
    webhook_secret: Option<Secret>,
    poll_timeout: Duration,
    backoff: (Duration, Duration),
    /// Filled by the first successful `getMe`.
    me: OnceCell<Me>,
    // A std mutex: held only to read or swap the value, never across an `.await`.
    state: Mutex<ChannelState>,
}

impl TelegramChannel {
    pub fn new(cfg: &TelegramConfig) -> Result<Self, ChannelError> {
        let token = cfg
            .bot_token
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| {
                ChannelError::Unauthorized(
                    "channels.telegram.bot_token is empty; hint: ask @BotFather for one".into(),
                )
            })?;
        let api_base = cfg.api_base.trim_end_matches('/').to_string();
        if !(api_base.starts_with("http://") || api_base.starts_with("https://")) {
            return Err(ChannelError::Internal(format!(
                "channels.telegram.api_base must be an http(s) URL, got {:?}",
                http::shorten(&api_base, 100)
            )));
        }
        Ok(Self {
            client: http::client(CALL_TIMEOUT)?,
            api_base,
            token,
            mode: cfg.mode,
            webhook_secret: cfg.webhook_secret.clone().filter(|s| !s.is_empty()),
            poll_timeout: Duration::from_secs(cfg.poll_timeout_secs),
            backoff: (Duration::from_secs(1), Duration::from_secs(30)),
            me: OnceCell::new(),
            state: Mutex::new(ChannelState::Connecting),
        })
    }

    /// Wait `first` after a failure, doubling up to `max` while failures continue (1 s to
    /// 30 s by default; tests shorten it).
    pub fn with_retry_backoff(mut self, first: Duration, max: Duration) -> Self {
        self.backoff = (first, max.max(first));
        self
    }

    fn set_state(&self, next: ChannelState) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if *state == next {
            return;
        }
        match &next {
            ChannelState::Connected => tracing::info!(channel = KIND, "connected"),
            ChannelState::Error { detail } => tracing::warn!(channel = KIND, %detail, "failing"),
            ChannelState::Connecting | ChannelState::Stopped => {}
        }
        *state = next;
    }

    fn fail(&self, detail: impl Into<String>) {
        self.set_state(ChannelState::Error {
            detail: detail.into(),
        });
    }

    /// Who the bot is; asks `getMe` the first time.
    async fn me(&self) -> Result<&Me, CallError> {
        self.me
            .get_or_try_init(|| self.call::<Me>("getMe", &NoParams {}, None))
            .await
    }

    async fn run_until(
        &self,
        sink: &dyn InboundSink,
        shutdown: &CancellationToken,
    ) -> Result<(), ChannelError> {
        self.set_state(ChannelState::Connecting);
        let Some(me) = self.identify(shutdown).await? else {
            return Ok(());
        };
        match self.mode {
            TelegramMode::Webhook => {
                shutdown.cancelled().await;
                Ok(())
            }
            TelegramMode::Polling => self.poll(me, sink, shutdown).await,
        }
    }

    /// `getMe` until it works: `None` when shut down first, `Err` for a bad token.
    async fn identify(&self, shutdown: &CancellationToken) -> Result<Option<&Me>, ChannelError> {
        let mut backoff = Backoff::new(self.backoff);
        loop {
            let answer = tokio::select! {
                _ = shutdown.cancelled() => return Ok(None),
                answer = self.me() => answer,
            };
            match answer {
                Ok(me) => {
                    tracing::info!(channel = KIND, bot_id = me.id, username = %me.username, "bot identified");
                    self.set_state(ChannelState::Connected);
                    return Ok(Some(me));
                }
                // 404 is what Telegram answers for a token that is not even well formed.
                Err(CallError::Api(e))
                    if matches!(e.status, StatusCode::UNAUTHORIZED | StatusCode::NOT_FOUND) =>
                {
                    let err = ChannelError::Unauthorized(format!(
                        "getMe refused the bot token ({}); hint: check channels.telegram.bot_token and api_base",
                        e.summary()
                    ));
                    self.fail(err.to_string());
                    return Err(err);
                }
                Err(e) => {
                    self.fail(format!("getMe failed: {}", ChannelError::from(e)));
                    if !backoff.pause(shutdown).await {
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The `getUpdates` loop; see the module docs for how the offset is kept.
    async fn poll(
        &self,
        me: &Me,
        sink: &dyn InboundSink,
        shutdown: &CancellationToken,
    ) -> Result<(), ChannelError> {
        let mut backoff = Backoff::new(self.backoff);
        let mut offset = loop {
            match sink.cursor(KIND, OFFSET_KEY).await {
                Ok(saved) => break saved.and_then(|v| v.trim().parse::<i64>().ok()),
                Err(e) => {
                    self.fail(format!("cannot read the saved getUpdates offset: {e}"));
                    if !backoff.pause(shutdown).await {
                        return Ok(());
                    }
                }
            }
        };
        tracing::debug!(channel = KIND, ?offset, "polling");
        loop {
            let polled = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                polled = self.get_updates(offset) => polled,
            };
            let updates = match polled {
                Ok(updates) => updates,
                Err(e) => {
                    let wait = match e {
                        CallError::Api(api) if api.status == StatusCode::UNAUTHORIZED => {
                            let err = ChannelError::Unauthorized(format!(
                                "getUpdates refused the bot token ({})",
                                api.summary()
                            ));
                            self.fail(err.to_string());
                            return Err(err);
                        }
                        CallError::Api(api) if api.status == StatusCode::CONFLICT => {
                            self.fail(format!(
                                "getUpdates conflicts with a webhook or another poller using this \
                                 bot token ({}); hint: call deleteWebhook, stop the other process, \
                                 or set channels.telegram.mode = \"webhook\"",
                                api.summary()
                            ));
                            backoff.next_delay()
                        }
                        CallError::Api(api) if api.status == StatusCode::TOO_MANY_REQUESTS => {
                            let wait = api.retry_after.unwrap_or(self.backoff.0);
                            self.fail(format!("getUpdates is rate limited; retrying in {wait:?}"));
                            wait
                        }
                        other => {
                            self.fail(format!("getUpdates failed: {}", ChannelError::from(other)));
                            backoff.next_delay()
                        }
                    };
                    if !sleep_or_shutdown(wait, shutdown).await {
                        return Ok(());
                    }
                    continue;
                }
            };
            backoff.reset();
            self.set_state(ChannelState::Connected);
            let Some(last) = updates.iter().map(|(id, _)| *id).max() else {
                continue;
            };
            let next = last + 1;
            let batch: Vec<Inbound> = updates
                .iter()
                .filter_map(|(_, update)| update.as_ref())
                .filter_map(|update| update::to_inbound(update, me))
                .collect();
            tracing::debug!(
                channel = KIND,
                updates = updates.len(),
                messages = batch.len(),
                next,
                "received"
            );
            let cursor = Cursor {
                key: OFFSET_KEY.to_string(),
                value: next.to_string(),
            };
            match sink.accept(KIND, batch, Some(cursor)).await {
                // Only now is it safe to let Telegram forget these updates.
                Ok(()) => offset = Some(next),
                Err(e) => {
                    self.fail(format!("cannot store received messages: {e}"));
                    if !backoff.pause(shutdown).await {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// One long poll: each update's id, and the update if it could be read (an unreadable
    /// one is skipped, but its id still advances the offset).
    async fn get_updates(
        &self,
        offset: Option<i64>,
    ) -> Result<Vec<(i64, Option<Update>)>, CallError> {
        #[derive(Serialize)]
        struct Params<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            offset: Option<i64>,
            timeout: u64,
            allowed_updates: &'a [&'a str],
        }
        let params = Params {
            offset,
            timeout: self.poll_timeout.as_secs(),
            allowed_updates: ALLOWED_UPDATES,
        };
        let raw: Vec<Value> = self
            .call("getUpdates", &params, Some(self.poll_timeout + POLL_MARGIN))
            .await?;
        let mut updates = Vec::with_capacity(raw.len());
        for value in raw {
            let Some(id) = value.get("update_id").and_then(Value::as_i64) else {
                tracing::warn!(channel = KIND, "skipping an update without update_id");
                continue;
            };
            let update = serde_json::from_value::<Update>(value)
                .inspect_err(|e| tracing::warn!(channel = KIND, update_id = id, error = %e, "skipping an unreadable update"))
                .ok();
            updates.push((id, update));
        }
        Ok(updates)
    }

    async fn send_message(&self, msg: &Outbound) -> Result<String, ChannelError> {
        #[derive(Serialize)]
        struct ReplyParameters {
            message_id: i64,
            allow_sending_without_reply: bool,
        }
        #[derive(Serialize)]
        struct LinkPreview {
            is_disabled: bool,
        }
        #[derive(Serialize)]
        struct SendMessage<'a> {
            chat_id: Value,
            text: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            parse_mode: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            message_thread_id: Option<i64>,
            #[serde(skip_serializing_if = "Option::is_none")]
            reply_parameters: Option<ReplyParameters>,
            link_preview_options: LinkPreview,
        }
        #[derive(Deserialize)]
        struct Sent {
            message_id: i64,
        }

        let formatted = to_markdown_v2(&msg.text);
        // Inbound `reply_to` is a message id; accept a `chat:message` external id as well.
        let reply_to = msg
            .reply_to
            .as_deref()
            .and_then(|r| r.rsplit(':').next())
            .and_then(|id| id.trim().parse().ok());
        let body = |text, parse_mode| SendMessage {
            chat_id: chat_id_value(&msg.chat_id),
            text,
            parse_mode,
            message_thread_id: msg.thread.as_deref().and_then(|t| t.parse().ok()),
            reply_parameters: reply_to.map(|message_id| ReplyParameters {
                message_id,
                allow_sending_without_reply: true,
            }),
            link_preview_options: LinkPreview { is_disabled: true },
        };
        let sent = match self
            .call::<Sent>("sendMessage", &body(&formatted, Some("MarkdownV2")), None)
            .await
        {
            Err(CallError::Api(e)) if e.is_markup_error() => {
                tracing::warn!(
                    channel = KIND,
                    description = %e.description,
                    "Telegram refused the MarkdownV2 text; sending it as plain text"
                );
                self.call::<Sent>("sendMessage", &body(&msg.text, None), None)
                    .await
            }
            other => other,
        };
        Ok(sent?.message_id.to_string())
    }

    async fn send_typing(&self, chat_id: &str) -> Result<(), ChannelError> {
        let body = serde_json::json!({"chat_id": chat_id_value(chat_id), "action": "typing"});
        self.call::<bool>("sendChatAction", &body, None).await?;
        Ok(())
    }

    /// One Bot API call. The URL holds the token, so nothing here prints it.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        params: &impl Serialize,
        timeout: Option<Duration>,
    ) -> Result<T, CallError> {
        #[derive(Deserialize)]
        struct Envelope<T> {
            ok: bool,
            result: Option<T>,
            error_code: Option<u16>,
            description: Option<String>,
            parameters: Option<ResponseParameters>,
        }
        #[derive(Deserialize)]
        struct ResponseParameters {
            retry_after: Option<u64>,
        }

        let url = format!("{}/bot{}/{method}", self.api_base, self.token.expose());
        let mut request = self.client.post(url).json(params);
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let transport = |e| CallError::Transport(self.scrub(http::transport_error(e)));
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let header_retry = http::retry_after_header(response.headers());
        let body = response.bytes().await.map_err(transport)?;
        match serde_json::from_slice::<Envelope<T>>(&body) {
            Ok(Envelope {
                ok: true,
                result: Some(result),
                ..
            }) => Ok(result),
            Ok(envelope) => {
                // Telegram's `error_code` matches the HTTP status; a 200 without a result is
                // treated as a bad gateway.
                let status = if status.is_success() {
                    envelope
                        .error_code
                        .and_then(|c| StatusCode::from_u16(c).ok())
                        .filter(|c| !c.is_success())
                        .unwrap_or(StatusCode::BAD_GATEWAY)
                } else {
                    status
                };
                let retry_after = envelope
                    .parameters
                    .and_then(|p| p.retry_after)
                    .map(Duration::from_secs)
                    .or(header_retry);
                let description = envelope.description.unwrap_or_else(|| reason(status));
                Err(CallError::Api(ApiError {
                    status,
                    description: self.scrub_text(&description),
                    retry_after,
                }))
            }
            Err(_) if status.is_success() => Err(CallError::Transport(ChannelError::Transient(
                format!("Telegram answered {method} with a body that is not a Bot API response"),
            ))),
            // Not Telegram talking (a proxy, a wrong api_base): the body may echo the URL, so
            // only the status is kept.
            Err(_) => Err(CallError::Api(ApiError {
                status,
                description: reason(status),
                retry_after: header_retry,
            })),
        }
    }

    fn scrub_text(&self, text: &str) -> String {
        let token = self.token.expose();
        if token.is_empty() || !text.contains(token) {
            return text.to_string();
        }
        text.replace(token, "***")
    }

    fn scrub(&self, e: ChannelError) -> ChannelError {
        match e {
            ChannelError::RateLimited { retry_after } => ChannelError::RateLimited { retry_after },
            ChannelError::Rejected(m) => ChannelError::Rejected(self.scrub_text(&m)),
            ChannelError::Unauthorized(m) => ChannelError::Unauthorized(self.scrub_text(&m)),
            ChannelError::Transient(m) => ChannelError::Transient(self.scrub_text(&m)),
            ChannelError::Internal(m) => ChannelError::Internal(self.scrub_text(&m)),
        }
    }
}

impl Channel for TelegramChannel {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_chars: MAX_MESSAGE_CHARS,
            markup: Markup::TelegramMarkdownV2,
            typing: true,
            media: true,
        }
    }

    fn run<'a>(
        &'a self,
        sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let result = self.run_until(sink.as_ref(), &shutdown).await;
            if result.is_ok() {
                self.set_state(ChannelState::Stopped);
            }
            result
        })
    }

    fn send<'a>(&'a self, msg: &'a Outbound) -> BoxFuture<'a, Result<String, ChannelError>> {
        Box::pin(self.send_message(msg))
    }

    fn typing<'a>(&'a self, chat_id: &'a str) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(self.send_typing(chat_id))
    }

    fn state(&self) -> ChannelState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// The parameters of a call that takes none: serialises as `{}`.
#[derive(Serialize)]
struct NoParams {}

/// A numeric chat id goes as a number; `@channelname` as text.
fn chat_id_value(chat_id: &str) -> Value {
    match chat_id.trim().parse::<i64>() {
        Ok(id) => Value::from(id),
        Err(_) => Value::from(chat_id),
    }
}

fn reason(status: StatusCode) -> String {
    status
        .canonical_reason()
        .unwrap_or("unknown status")
        .to_string()
}

/// A Bot API call that did not give a result.
#[derive(Debug)]
enum CallError {
    /// Telegram (or something in front of it) answered with an error.
    Api(ApiError),
    /// No usable answer: network, timeout, a body that is not a Bot API response.
    Transport(ChannelError),
}

#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    /// Telegram's `description`, e.g. "Forbidden: bot was blocked by the user".
    description: String,
    /// `parameters.retry_after`, or the `Retry-After` header.
    retry_after: Option<Duration>,
}

impl ApiError {
    fn summary(&self) -> String {
        format!(
            "HTTP {}: {}",
            self.status.as_u16(),
            http::shorten(&self.description, 300)
        )
    }

    /// Telegram could not parse the MarkdownV2 ("can't parse entities: …").
    fn is_markup_error(&self) -> bool {
        let d = self.description.to_ascii_lowercase();
        self.status == StatusCode::BAD_REQUEST
            && (d.contains("parse entities")
                || d.contains("can't find end")
                || d.contains("entity"))
    }
}

impl From<CallError> for ChannelError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Transport(e) => e,
            // For Telegram 403 is about one chat (the user blocked the bot, it was removed
            // from the group): sending there again will not help, the token is fine.
            CallError::Api(e) if e.status == StatusCode::FORBIDDEN => {
                ChannelError::Rejected(e.summary())
            }
            CallError::Api(e) => http::status_error(e.status, e.retry_after, &e.description),
        }
    }
}

/// Doubling waits between failed attempts.
struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new((first, max): (Duration, Duration)) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = (self.next * 2).min(self.max);
        delay
    }

    fn reset(&mut self) {
        self.next = self.first;
    }

    /// Wait the next delay; `false` when shut down meanwhile.
    async fn pause(&mut self, shutdown: &CancellationToken) -> bool {
        sleep_or_shutdown(self.next_delay(), shutdown).await
    }
}

async fn sleep_or_shutdown(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => false,
        _ = tokio::time::sleep(delay) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_map_to_channel_errors() {
        let api = |status: u16, description: &str, retry: Option<u64>| {
            ChannelError::from(CallError::Api(ApiError {
                status: StatusCode::from_u16(status).unwrap(),
                description: description.into(),
                retry_after: retry.map(Duration::from_secs),
            }))
        };
        assert_eq!(
            api(429, "Too Many Requests: retry after 5", Some(5)),
            ChannelError::RateLimited {
                retry_after: Duration::from_secs(5)
            }
        );
        assert_eq!(
            api(403, "Forbidden: bot was blocked by the user", None).kind(),
            "rejected"
        );
        assert_eq!(api(401, "Unauthorized", None).kind(), "unauthorized");
        assert_eq!(
            api(400, "Bad Request: chat not found", None).kind(),
            "rejected"
        );
        assert_eq!(api(502, "Bad Gateway", None).kind(), "transient");
    }

    #[test]
    fn markup_errors_are_recognised() {
        let e = |status, d: &str| ApiError {
            status,
            description: d.into(),
            retry_after: None,
        };
        assert!(e(
            StatusCode::BAD_REQUEST,
            "Bad Request: can't parse entities: Character '.' is reserved"
        )
        .is_markup_error());
        assert!(!e(StatusCode::BAD_REQUEST, "Bad Request: chat not found").is_markup_error());
        assert!(!e(StatusCode::FORBIDDEN, "can't parse entities").is_markup_error());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let mut b = Backoff::new((Duration::from_secs(1), Duration::from_secs(30)));
        let delays: Vec<u64> = (0..7).map(|_| b.next_delay().as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 30, 30]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_secs(1));
    }

    #[test]
    fn new_requires_a_token_and_an_http_base() {
        let mut cfg = TelegramConfig::default();
        assert_eq!(
            TelegramChannel::new(&cfg).err().map(|e| e.kind()),
            Some("unauthorized")
        );
        cfg.bot_token = Some(Secret::new("1:abc"));
        cfg.api_base = "ftp://x".into();
        assert_eq!(
            TelegramChannel::new(&cfg).err().map(|e| e.kind()),
            Some("internal")
        );
        cfg.api_base = "http://127.0.0.1:1/".into();
        let channel = TelegramChannel::new(&cfg).unwrap();
        assert_eq!(channel.api_base, "http://127.0.0.1:1");
        assert_eq!(channel.kind(), "telegram");
        assert_eq!(channel.capabilities().max_message_chars, 4096);
        assert_eq!(channel.state(), ChannelState::Connecting);
    }

    #[test]
    fn chat_ids_are_numbers_when_they_can_be() {
        assert_eq!(chat_id_value("-100123"), Value::from(-100123));
        assert_eq!(chat_id_value("@news"), Value::from("@news"));
    }
}
