//! Slack Events API: events arrive as signed posts from Slack, replies go out through
//! `chat.postMessage`.
//!
//! - [`SlackChannel::events_router`] serves [`EVENTS_PATH`]: it checks
//!   `X-Slack-Signature` over `v0:<timestamp>:<body>` (refusing timestamps more than five
//!   minutes off), answers `url_verification`, stores user messages and mentions, and acks
//!   200 at once — the turn runs later in the hub, well within Slack's 3 s.
//! - [`Channel::run`] calls `auth.test` to learn the bot's own user id (for mentions and to
//!   ignore its own messages), then reports `Connected` until shutdown.
//! - [`Channel::send`] posts with `chat.postMessage`, converting Markdown with [`to_mrkdwn`].
//!
//! A message in a channel that mentions the bot arrives twice (`message` and `app_mention`):
//! both get the external id `{channel}:{ts}`, so the sink keeps one.

use crate::http::{self, client, retry_after_header, shorten, status_error, transport_error};
use crate::signature::verify_hex;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use futures::future::BoxFuture;
use moltbot_core::channel::{Capabilities, Markup};
use moltbot_core::config::SlackConfig;
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

const KIND: &str = "slack";

/// Where Slack posts events (the Request URL is `https://<host>` + this).
pub const EVENTS_PATH: &str = "/channels/slack/events";

/// Event envelopes are a few kilobytes.
const BODY_LIMIT: usize = 1024 * 1024;

/// Slack truncates `text` at 40 000 characters but recommends at most 4 000; a margin
/// leaves room for the escaping [`to_mrkdwn`] adds.
const MAX_MESSAGE_CHARS: usize = 3900;

/// Requests signed further than this from our clock are refused (replay protection).
const MAX_CLOCK_SKEW_SECS: i64 = 5 * 60;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// When a rate-limited answer has no `Retry-After`.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(1);

/// `ok: false` errors meaning our token is wrong, revoked or lacks a scope.
const UNAUTHORIZED_ERRORS: [&str; 6] = [
    "invalid_auth",
    "not_authed",
    "token_revoked",
    "token_expired",
    "account_inactive",
    "missing_scope",
];

/// `ok: false` errors about this message that sending again will not fix.
const REJECTED_ERRORS: [&str; 8] = [
    "channel_not_found",
    "not_in_channel",
    "msg_too_long",
    "is_archived",
    "no_text",
    "restricted_action",
    "cannot_reply_to_message",
    "invalid_thread_ts",
];

/// Message subtypes that are still a person writing (with a file, or a thread reply also
/// shown in the channel); every other subtype (edits, joins, bot messages) is ignored.
const USER_SUBTYPES: [&str; 2] = ["file_share", "thread_broadcast"];

/// The Slack Events API adapter.
pub struct SlackChannel {
    http: reqwest::Client,
    /// Web API base without a trailing slash.
    api_base: String,
    bot_token: Secret,
    signing_secret: Secret,
    /// Learned from `auth.test` in `run`; until then the envelope's `authorizations` tell.
    bot_user_id: OnceLock<String>,
    // A std mutex: held only to read or replace the state, never across an `.await`.
    state: Mutex<ChannelState>,
}

impl SlackChannel {
    /// An adapter for `cfg`. Fails when a credential is missing (config validation normally
    /// catches that first): without the signing secret no event could be trusted.
    pub fn new(cfg: &SlackConfig) -> Result<Self, ChannelError> {
        Ok(Self {
            http: client(REQUEST_TIMEOUT)?,
            api_base: cfg.api_base.trim_end_matches('/').to_string(),
            bot_token: required(&cfg.bot_token, "bot_token")?,
            signing_secret: required(&cfg.signing_secret, "signing_secret")?,
            bot_user_id: OnceLock::new(),
            state: Mutex::new(ChannelState::Connecting),
        })
    }

    /// The Events API route ([`EVENTS_PATH`]), delivering to `sink`. Mount it on the public
    /// listener; Slack must reach it over HTTPS.
    pub fn events_router(self: &Arc<Self>, sink: Arc<dyn InboundSink>) -> Router {
        let hook = Hook {
            channel: self.clone(),
            sink,
        };
        Router::new()
            .route(EVENTS_PATH, post(receive))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(hook)
    }

    /// The bot's own user id, once `auth.test` has answered.
    pub fn bot_user_id(&self) -> Option<&str> {
        self.bot_user_id.get().map(String::as_str)
    }

    fn set_state(&self, state: ChannelState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    fn check_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), HookError> {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let Some(timestamp) = header("x-slack-request-timestamp") else {
            return Err(HookError::Unauthorized(
                "the X-Slack-Request-Timestamp header is required, got nothing".into(),
            ));
        };
        let Ok(sent_at) = timestamp.trim().parse::<i64>() else {
            return Err(HookError::Unauthorized(format!(
                "X-Slack-Request-Timestamp must be a Unix time in seconds, got {:?}",
                shorten(timestamp, 20)
            )));
        };
        let now = unix_now();
        if (now - sent_at).abs() > MAX_CLOCK_SKEW_SECS {
            return Err(HookError::Unauthorized(format!(
                "X-Slack-Request-Timestamp must be within {MAX_CLOCK_SKEW_SECS} s of now \
                 ({now}), got {sent_at}; hint: a stale or replayed request, or a wrong clock"
            )));
        }
        let presented = header("x-slack-signature")
            .and_then(|v| v.trim().strip_prefix("v0="))
            .unwrap_or_default();
        let key = self.signing_secret.expose().as_bytes();
        if verify_hex(key, &[b"v0:", timestamp.as_bytes(), b":", body], presented) {
            Ok(())
        } else {
            Err(HookError::Unauthorized(
                "X-Slack-Signature does not match the request signed with the signing secret"
                    .into(),
            ))
        }
    }

    /// The user message in an `event_callback`, if it is one we answer.
    fn inbound(&self, envelope: &Envelope) -> Option<Inbound> {
        let event = envelope.event.as_ref()?;
        let kind = event["type"].as_str().unwrap_or_default();
        if kind != "message" && kind != "app_mention" {
            debug!(kind, "ignoring a Slack event");
            return None;
        }
        // Parsed on its own so that an unexpected shape in one event is skipped, not
        // answered with an error Slack retries.
        let event = match MessageEvent::deserialize(event) {
            Ok(event) => event,
            Err(e) => {
                debug!(cause = %e, "ignoring a Slack event of an unexpected shape");
                return None;
            }
        };
        if event.bot_id.is_some() {
            return None;
        }
        if let Some(subtype) = &event.subtype {
            if !USER_SUBTYPES.contains(&subtype.as_str()) {
                debug!(%subtype, "ignoring a Slack message subtype");
                return None;
            }
        }
        let (Some(user), Some(channel), Some(ts)) = (event.user, event.channel, event.ts) else {
            debug!("ignoring a Slack message without user, channel or ts");
            return None;
        };
        let bot = self.bot_user_id().or_else(|| envelope.bot_user_id());
        if bot == Some(user.as_str()) {
            return None;
        }
        let is_mention = kind == "app_mention";
        let is_group = is_mention
            || match event.channel_type.as_deref() {
                Some("im") => false,
                Some(_) => true,
                // Direct-message channel ids start with D.
                None => !channel.starts_with('D'),
            };
        let (text, mentioned_in_text) = match bot {
            Some(bot) => strip_mention(&event.text, bot),
            None => (event.text, false),
        };
        let thread = event.thread_ts.or_else(|| is_group.then(|| ts.clone()));
        Some(Inbound {
            channel: KIND.to_string(),
            external_id: format!("{channel}:{ts}"),
            chat_id: channel,
            sender_id: user,
            sender_name: None,
            text,
            is_group,
            // A direct message is addressed to the bot by definition.
            mentioned: !is_group || is_mention || mentioned_in_text,
            reply_to: None,
            thread,
        })
    }

    async fn call<B: Serialize>(&self, method: &str, body: &B) -> Result<WebAnswer, ChannelError> {
        // Serialising our own request types cannot fail (string fields only).
        let body = serde_json::to_vec(body)
            .map_err(|e| ChannelError::Internal(format!("cannot encode {method}: {e}")))?;
        let response = self
            .http
            .post(format!("{}/{method}", self.api_base))
            .bearer_auth(self.bot_token.expose())
            .header(header::CONTENT_TYPE, "application/json; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after_header(response.headers());
        let bytes = response.bytes().await.map_err(transport_error)?;
        let answer = serde_json::from_slice::<WebAnswer>(&bytes).ok();
        match answer {
            Some(answer) if answer.ok && status.is_success() => Ok(answer),
            Some(answer) => Err(self.web_error(status, retry_after, answer.error.as_deref())),
            None if status.is_success() => Err(ChannelError::Transient(format!(
                "{method} answered HTTP {} with a body that is not a Slack answer",
                status.as_u16()
            ))),
            None => Err(status_error(
                status,
                retry_after,
                &self.redact(String::from_utf8_lossy(&bytes).into_owned()),
            )),
        }
    }

    /// Map Slack's `ok: false` (or a failed status) to a [`ChannelError`].
    fn web_error(
        &self,
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
        error: Option<&str>,
    ) -> ChannelError {
        let code = error.unwrap_or("unknown_error");
        let detail = self.redact(format!("HTTP {}: {}", status.as_u16(), shorten(code, 100)));
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS || code == "ratelimited" {
            ChannelError::RateLimited {
                retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            }
        } else if UNAUTHORIZED_ERRORS.contains(&code) {
            ChannelError::Unauthorized(detail)
        } else if REJECTED_ERRORS.contains(&code) {
            ChannelError::Rejected(detail)
        } else {
            ChannelError::Transient(detail)
        }
    }

    /// Slack does not echo tokens, but an error text is logged and stored: make sure.
    fn redact(&self, mut text: String) -> String {
        for secret in [&self.bot_token, &self.signing_secret] {
            if text.contains(secret.expose()) {
                text = text.replace(secret.expose(), "***");
            }
        }
        text
    }

    async fn auth_test(&self) -> Result<String, ChannelError> {
        let answer = self.call("auth.test", &serde_json::Map::new()).await?;
        answer
            .user_id
            .filter(|id| !id.is_empty())
            .ok_or_else(|| ChannelError::Transient("auth.test answered without user_id".into()))
    }
}

fn required(value: &Option<Secret>, field: &str) -> Result<Secret, ChannelError> {
    value.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
        ChannelError::Unauthorized(format!("channels.slack.{field} is required, got nothing"))
    })
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// 1 s doubling up to a minute, plus up to a quarter of jitter so restarts do not stampede.
/// Remove mentions of `bot` (`<@U123>` or `<@U123|name>`) from `text`; whether there was one.
fn strip_mention(text: &str, bot: &str) -> (String, bool) {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    let mut found = false;
    while let Some(start) = rest.find("<@") {
        let after = &rest[start + 2..];
        let mention = after
            .find('>')
            .filter(|&end| after[..end].split('|').next() == Some(bot));
        match mention {
            Some(end) => {
                found = true;
                out.push_str(&rest[..start]);
                rest = &after[end + 1..];
                // "hey <@U1> look" → "hey look", not "hey  look".
                if out.is_empty() || out.ends_with(char::is_whitespace) {
                    rest = rest.trim_start_matches(' ');
                }
            }
            None => {
                out.push_str(&rest[..start + 2]);
                rest = after;
            }
        }
    }
    if !found {
        return (text.to_string(), false);
    }
    out.push_str(rest);
    (out.trim().to_string(), true)
}

/// Common Markdown (what models write) as Slack `mrkdwn`: `**b**` → `*b*`, `*i*` → `_i_`,
/// `~~s~~` → `~s~`, `[t](u)` → `<u|t>`, headings → bold lines, list bullets → `•`, code
/// kept (fence language tags dropped). `&`, `<` and `>` are escaped everywhere, so text
/// can never form a Slack mention or link by accident.
pub fn to_mrkdwn(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut in_fence = false;
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        let trimmed = line.trim_start();
        let indent = &line[..line.len() - trimmed.len()];
        if let Some(after) = trimmed.strip_prefix("```") {
            if !in_fence && after.len() >= 3 && after.ends_with("```") {
                // A one-line fence: code as it is.
                escape_into(line, &mut out);
                continue;
            }
            in_fence = !in_fence;
            out.push_str(indent);
            out.push_str("```");
            // The language tag of an opening fence would show as the first code line.
            if !in_fence {
                escape_into(after, &mut out);
            }
            continue;
        }
        if in_fence {
            escape_into(line, &mut out);
        } else if let Some(title) = heading(trimmed) {
            out.push('*');
            inline_into(&title.replace("**", ""), &mut out);
            out.push('*');
        } else if let Some(item) = ["- ", "* ", "+ "]
            .iter()
            .find_map(|bullet| trimmed.strip_prefix(bullet))
        {
            out.push_str(indent);
            out.push_str("• ");
            inline_into(item, &mut out);
        } else {
            inline_into(line, &mut out);
        }
    }
    out
}

/// The title of a Markdown heading line (`# Title` … `###### Title`).
fn heading(line: &str) -> Option<&str> {
    let hashes = line.len() - line.trim_start_matches('#').len();
    if !(1..=6).contains(&hashes) {
        return None;
    }
    line[hashes..].strip_prefix(' ').map(str::trim)
}

fn inline_into(s: &str, out: &mut String) {
    let mut rest = s;
    while let Some(c) = rest.chars().next() {
        if let Some((converted, len)) = inline_span(rest) {
            out.push_str(&converted);
            rest = &rest[len..];
        } else {
            escape_char(c, out);
            rest = &rest[c.len_utf8()..];
        }
    }
}

/// A Markdown span starting at the beginning of `s`, converted, with its length in `s`.
fn inline_span(s: &str) -> Option<(String, usize)> {
    let wrap = |mark: &str, inner: &str| {
        let mut out = String::from(mark);
        inline_into(inner, &mut out);
        out.push_str(mark);
        out
    };
    if let Some(r) = s.strip_prefix('`') {
        let end = r.find('`')?;
        let mut out = String::from("`");
        escape_into(&r[..end], &mut out);
        out.push('`');
        return Some((out, end + 2));
    }
    if let Some(r) = s.strip_prefix("**") {
        let end = r.find("**").filter(|&e| e > 0)?;
        return Some((wrap("*", &r[..end]), end + 4));
    }
    if let Some(r) = s.strip_prefix("~~") {
        let end = r.find("~~").filter(|&e| e > 0)?;
        return Some((wrap("~", &r[..end]), end + 4));
    }
    if let Some(r) = s.strip_prefix('*') {
        // `*x*` is italic only when hugging its text (`2 * 3 * 4` is not).
        let end = r.find('*')?;
        let inner = &r[..end];
        let hugs = !inner.is_empty()
            && !inner.starts_with(char::is_whitespace)
            && !inner.ends_with(char::is_whitespace);
        return hugs.then(|| (wrap("_", inner), end + 2));
    }
    if s.starts_with('[') {
        let close = s.find("](")?;
        let label = &s[1..close];
        let after = &s[close + 2..];
        let end = after.find(')')?;
        let url = &after[..end];
        if label.is_empty()
            || label.contains('[')
            || url.is_empty()
            || url.contains(char::is_whitespace)
        {
            return None;
        }
        let mut out = String::from("<");
        escape_into(url, &mut out);
        out.push('|');
        escape_into(&label.replace('|', "¦"), &mut out);
        out.push('>');
        return Some((out, close + 2 + end + 1));
    }
    None
}

fn escape_into(s: &str, out: &mut String) {
    s.chars().for_each(|c| escape_char(c, out));
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '&' => out.push_str("&amp;"),
        '<' => out.push_str("&lt;"),
        '>' => out.push_str("&gt;"),
        c => out.push(c),
    }
}

impl Channel for SlackChannel {
    fn kind(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_message_chars: MAX_MESSAGE_CHARS,
            markup: Markup::SlackMrkdwn,
            typing: false,
            media: true,
        }
    }

    /// Learns the bot user id with `auth.test` (retrying network failures), then stays
    /// `Connected` until shutdown.
    fn run<'a>(
        &'a self,
        _sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            http::check_then_hold(
                "slack",
                &shutdown,
                |st| self.set_state(st),
                || async {
                    let user_id = self.auth_test().await?;
                    // Set once: a second `run` keeps the id learned by the first.
                    let _ = self.bot_user_id.set(user_id);
                    info!(bot_user_id = self.bot_user_id(), "Slack token accepted");
                    Ok(())
                },
            )
            .await
        })
    }

    fn send<'a>(&'a self, msg: &'a Outbound) -> BoxFuture<'a, Result<String, ChannelError>> {
        Box::pin(async move {
            let body = PostMessage {
                channel: &msg.chat_id,
                text: to_mrkdwn(&msg.text),
                thread_ts: msg.thread.as_deref(),
            };
            let answer = self.call("chat.postMessage", &body).await?;
            let ts = answer.ts.unwrap_or_default();
            if ts.is_empty() {
                warn!("Slack accepted a message but answered without its ts");
            }
            Ok(ts)
        })
    }

    /// Bots have no typing indicator in the Events API.
    fn typing<'a>(&'a self, _chat_id: &'a str) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async { Ok(()) })
    }

    fn state(&self) -> ChannelState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Events handler.

#[derive(Clone)]
struct Hook {
    channel: Arc<SlackChannel>,
    sink: Arc<dyn InboundSink>,
}

async fn receive(
    State(hook): State<Hook>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, HookError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => HookError::TooLarge { limit: BODY_LIMIT },
        _ => HookError::BadRequest(e.body_text()),
    })?;
    hook.channel.check_signature(&headers, &body)?;
    let envelope: Envelope = serde_json::from_slice(&body).map_err(|e| {
        HookError::BadRequest(format!("the body is not a Slack event envelope: {e}"))
    })?;
    match envelope.kind.as_str() {
        "url_verification" => {
            let challenge = envelope.challenge.ok_or_else(|| {
                HookError::BadRequest("`challenge` is required, got nothing".into())
            })?;
            info!("Slack events URL verified");
            Ok(Json(Challenge { challenge }).into_response())
        }
        "event_callback" => {
            if let Some(inbound) = hook.channel.inbound(&envelope) {
                hook.sink
                    .accept(KIND, vec![inbound], None)
                    .await
                    .map_err(HookError::Sink)?;
                let retry = headers
                    .get("x-slack-retry-num")
                    .and_then(|v| v.to_str().ok());
                debug!(retry, "Slack event stored");
            }
            Ok(StatusCode::OK.into_response())
        }
        "app_rate_limited" => {
            warn!("Slack is dropping events for this app (more than 30 000 an hour)");
            Ok(StatusCode::OK.into_response())
        }
        other => {
            debug!(kind = other, "ignoring a Slack envelope");
            Ok(StatusCode::OK.into_response())
        }
    }
}

/// What an events request can fail with; [`IntoResponse`] is the one place these become
/// HTTP answers (`{"error": {"kind", "message"}}`).
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the event could not be stored; deliver it again later")]
    Sink(ChannelError),
}

impl HookError {
    fn kind(&self) -> &'static str {
        match self {
            HookError::BadRequest(_) => "invalid_request",
            HookError::Unauthorized(_) => "unauthorized",
            HookError::TooLarge { .. } => "payload_too_large",
            HookError::Sink(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            HookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HookError::Sink(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Forged or stale requests are worth a warning (nothing secret is in the text); a
    /// store failure is ours and logged with its cause; the rest are client noise.
    fn log(&self) {
        match self {
            HookError::Unauthorized(reason) => warn!(%reason, "refused a Slack events request"),
            HookError::Sink(cause) => error!(%cause, "could not store a Slack event"),
            HookError::BadRequest(_) | HookError::TooLarge { .. } => {
                debug!(reason = %self, "bad Slack events request");
            }
        }
    }
}

#[derive(Serialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Serialize)]
struct ErrorDetail {
    kind: &'static str,
    message: String,
}

impl IntoResponse for HookError {
    fn into_response(self) -> Response {
        self.log();
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind(),
                message: self.to_string(),
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

// ---------------------------------------------------------------------------------------------
// Wire formats.

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "type", default)]
    kind: String,
    challenge: Option<String>,
    /// Kept raw: events of other types have other shapes (`user` is an object in some).
    event: Option<serde_json::Value>,
    #[serde(default)]
    authorizations: Vec<Authorization>,
}

impl Envelope {
    /// The bot user this event was delivered for.
    fn bot_user_id(&self) -> Option<&str> {
        self.authorizations
            .iter()
            .find(|a| a.is_bot)
            .and_then(|a| a.user_id.as_deref())
    }
}

#[derive(Deserialize)]
struct Authorization {
    user_id: Option<String>,
    #[serde(default)]
    is_bot: bool,
}

#[derive(Deserialize)]
struct MessageEvent {
    subtype: Option<String>,
    user: Option<String>,
    bot_id: Option<String>,
    #[serde(default)]
    text: String,
    ts: Option<String>,
    channel: Option<String>,
    channel_type: Option<String>,
    thread_ts: Option<String>,
}

#[derive(Serialize)]
struct Challenge {
    challenge: String,
}

#[derive(Serialize)]
struct PostMessage<'a> {
    channel: &'a str,
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    thread_ts: Option<&'a str>,
}

/// The parts of a Web API answer we read.
#[derive(Deserialize)]
struct WebAnswer {
    #[serde(default)]
    ok: bool,
    error: Option<String>,
    ts: Option<String>,
    user_id: Option<String>,
}
