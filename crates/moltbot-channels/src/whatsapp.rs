//! WhatsApp Cloud API: messages arrive as webhook posts from Meta, replies go out through the
//! Graph API.
//!
//! - Receiving is webhook-only. [`WhatsAppChannel::webhook_router`] serves
//!   [`WEBHOOK_PATH`]: `GET` answers Meta's subscription check (`hub.verify_token`), `POST`
//!   checks `X-Hub-Signature-256` over the raw body, hands text messages to the sink and
//!   answers 200 only once they are stored (anything else makes Meta deliver again).
//! - [`Channel::run`] checks the access token once (`GET /{phone_number_id}`), then reports
//!   `Connected` until shutdown.
//! - [`Channel::send`] posts a text message, answering the user's message when `reply_to`
//!   is set. [`Channel::typing`] marks the chat's last message read and shows "typing…"
//!   (WhatsApp attaches the indicator to a received message, so it needs one).

use crate::http::{self, client, retry_after_header, shorten, transport_error};
use crate::signature::{same_secret, verify_hex};
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::future::BoxFuture;
use moltbot_core::channel::{Capabilities, Markup};
use moltbot_core::config::WhatsAppConfig;
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

const KIND: &str = "whatsapp";

/// Where Meta posts webhooks (the callback URL is `https://<host>` + this).
pub const WEBHOOK_PATH: &str = "/channels/whatsapp/webhook";

/// Meta's payloads are a few kilobytes; anything near this is not a webhook.
const BODY_LIMIT: usize = 1024 * 1024;

/// The Cloud API refuses text bodies longer than this.
const MAX_MESSAGE_CHARS: usize = 4096;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Graph answers rarely carry `Retry-After`; its throughput limits lift within seconds.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Graph error codes meaning "slow down": app-level limit (4), account throughput (80007,
/// 130429), spam rate limit (131048), pair rate limit to one user (131056).
const RATE_LIMIT_CODES: [i64; 5] = [4, 80007, 130429, 131048, 131056];

/// Graph's code for an invalid or expired access token.
const INVALID_TOKEN_CODE: i64 = 190;

/// The indicator lasts 25 s or until we answer; the hub repeats `typing` every few seconds,
/// so only every this often is a request sent.
const TYPING_REFRESH: Duration = Duration::from_secs(20);

/// Chats whose last message id is remembered for the typing indicator; past this the memory
/// starts over (an old chat then just shows no indicator).
const TYPING_CHATS_MAX: usize = 10_000;

/// The WhatsApp Cloud API adapter.
pub struct WhatsAppChannel {
    http: reqwest::Client,
    /// Graph base including the version, without a trailing slash.
    api_base: String,
    phone_number_id: String,
    access_token: Secret,
    verify_token: Secret,
    app_secret: Secret,
    // std mutexes: each is held only to read or replace a value, never across an `.await`.
    state: Mutex<ChannelState>,
    /// Per chat, the last message received: the typing indicator is attached to it.
    last_received: Mutex<HashMap<String, TypingTarget>>,
}

struct TypingTarget {
    message_id: String,
    shown_at: Option<Instant>,
}

impl WhatsAppChannel {
    /// An adapter for `cfg`. Fails when a credential is missing (config validation normally
    /// catches that first): without the app secret no webhook could be trusted.
    pub fn new(cfg: &WhatsAppConfig) -> Result<Self, ChannelError> {
        if cfg.phone_number_id.trim().is_empty() {
            return Err(ChannelError::Rejected(
                "channels.whatsapp.phone_number_id is required, got nothing".into(),
            ));
        }
        Ok(Self {
            http: client(REQUEST_TIMEOUT)?,
            api_base: cfg.api_base.trim_end_matches('/').to_string(),
            phone_number_id: cfg.phone_number_id.trim().to_string(),
            access_token: required(&cfg.access_token, "access_token")?,
            verify_token: required(&cfg.verify_token, "verify_token")?,
            app_secret: required(&cfg.app_secret, "app_secret")?,
            state: Mutex::new(ChannelState::Connecting),
            last_received: Mutex::new(HashMap::new()),
        })
    }

    /// The webhook routes ([`WEBHOOK_PATH`]), delivering to `sink`. Mount it on the public
    /// listener; Meta must reach it over HTTPS.
    pub fn webhook_router(self: &Arc<Self>, sink: Arc<dyn InboundSink>) -> Router {
        let hook = Hook {
            channel: self.clone(),
            sink,
        };
        Router::new()
            .route(WEBHOOK_PATH, get(verify_subscription).post(receive))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(hook)
    }

    fn set_state(&self, state: ChannelState) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    fn check_signature(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), HookError> {
        let Some(value) = headers.get("x-hub-signature-256") else {
            return Err(HookError::Unauthorized(
                "the X-Hub-Signature-256 header is required, got nothing",
            ));
        };
        let presented = value
            .to_str()
            .ok()
            .and_then(|v| v.trim().strip_prefix("sha256="))
            .unwrap_or_default();
        if verify_hex(self.app_secret.expose().as_bytes(), &[body], presented) {
            Ok(())
        } else {
            Err(HookError::Unauthorized(
                "X-Hub-Signature-256 does not match the body signed with the app secret",
            ))
        }
    }

    /// The text messages of a webhook payload addressed to our phone number.
    fn inbound(&self, payload: &Payload) -> Vec<Inbound> {
        if payload.object != "whatsapp_business_account" {
            debug!(object = %payload.object, "ignoring a webhook for another object");
            return Vec::new();
        }
        let mut batch = Vec::new();
        for change in payload.entry.iter().flat_map(|e| &e.changes) {
            if change.field != "messages" {
                debug!(field = %change.field, "ignoring a webhook change");
                continue;
            }
            let value = &change.value;
            if value.metadata.phone_number_id != self.phone_number_id {
                debug!("ignoring a webhook change for another phone number id");
                continue;
            }
            for status in &value.statuses {
                log_status(status);
            }
            for message in &value.messages {
                let Some(text) = message.text.as_ref().filter(|_| message.kind == "text") else {
                    debug!(kind = %message.kind, "ignoring a non-text WhatsApp message");
                    continue;
                };
                if message.id.is_empty() || message.from.is_empty() {
                    debug!("ignoring a WhatsApp message without id or sender");
                    continue;
                }
                let sender_name = value
                    .contacts
                    .iter()
                    .find(|c| c.wa_id == message.from)
                    .and_then(|c| c.profile.name.clone());
                batch.push(Inbound {
                    channel: KIND.to_string(),
                    external_id: message.id.clone(),
                    chat_id: message.from.clone(),
                    sender_id: message.from.clone(),
                    sender_name,
                    text: text.body.clone(),
                    is_group: false,
                    // Cloud API chats are one-to-one: every message is addressed to us.
                    mentioned: true,
                    reply_to: Some(message.id.clone()),
                    thread: None,
                });
            }
        }
        batch
    }

    fn remember_received(&self, batch: &[Inbound]) {
        let mut chats = self
            .last_received
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if chats.len() >= TYPING_CHATS_MAX {
            chats.clear();
        }
        for m in batch {
            chats.insert(
                m.chat_id.clone(),
                TypingTarget {
                    message_id: m.external_id.clone(),
                    shown_at: None,
                },
            );
        }
    }

    /// The message to attach a typing indicator to, unless one was shown recently.
    fn typing_target(&self, chat_id: &str) -> Option<String> {
        let mut chats = self
            .last_received
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let target = chats.get_mut(chat_id)?;
        if target
            .shown_at
            .is_some_and(|at| at.elapsed() < TYPING_REFRESH)
        {
            return None;
        }
        target.shown_at = Some(Instant::now());
        Some(target.message_id.clone())
    }

    fn messages_url(&self) -> String {
        format!("{}/{}/messages", self.api_base, self.phone_number_id)
    }

    /// Send a Graph request with our token; the parsed JSON answer on success.
    async fn call(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<serde_json::Value, ChannelError> {
        let response = request
            .bearer_auth(self.access_token.expose())
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status();
        let retry_after = retry_after_header(response.headers());
        let body = response.bytes().await.map_err(transport_error)?;
        if status.is_success() {
            // A 2xx means Graph took the request: an odd body must not make the hub send
            // again, so it reads as an empty answer.
            return Ok(serde_json::from_slice(&body).unwrap_or_default());
        }
        Err(self.graph_error(status, retry_after, &body))
    }

    /// Map a failed Graph answer to a [`ChannelError`], by error code first, then status.
    fn graph_error(
        &self,
        status: reqwest::StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
    ) -> ChannelError {
        let graph = serde_json::from_slice::<GraphErrorBody>(body)
            .ok()
            .map(|b| b.error);
        let code = graph.as_ref().and_then(|g| g.code);
        let detail = match &graph {
            Some(g) => format!(
                "HTTP {}: Graph error {} ({}){}: {}",
                status.as_u16(),
                code.map_or_else(|| "without code".to_string(), |c| c.to_string()),
                g.kind.as_deref().unwrap_or("unknown type"),
                g.error_subcode
                    .map(|s| format!(", subcode {s}"))
                    .unwrap_or_default(),
                shorten(g.message.as_deref().unwrap_or("no message"), 300),
            ),
            None => format!(
                "HTTP {}: {}",
                status.as_u16(),
                shorten(&String::from_utf8_lossy(body), 300)
            ),
        };
        let detail = self.redact(detail);
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || code.is_some_and(|c| RATE_LIMIT_CODES.contains(&c))
        {
            ChannelError::RateLimited {
                retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            }
        } else if status == reqwest::StatusCode::UNAUTHORIZED || code == Some(INVALID_TOKEN_CODE) {
            ChannelError::Unauthorized(detail)
        } else if graph.as_ref().and_then(|g| g.is_transient) == Some(true) {
            ChannelError::Transient(detail)
        } else if status.is_client_error() {
            ChannelError::Rejected(detail)
        } else {
            ChannelError::Transient(detail)
        }
    }

    /// Graph does not echo tokens, but an error text is logged and stored: make sure.
    fn redact(&self, mut text: String) -> String {
        for secret in [&self.access_token, &self.app_secret, &self.verify_token] {
            if text.contains(secret.expose()) {
                text = text.replace(secret.expose(), "***");
            }
        }
        text
    }

    /// `GET /{phone_number_id}`: proves the token works for this number.
    async fn check_token(&self) -> Result<(), ChannelError> {
        let url = format!("{}/{}", self.api_base, self.phone_number_id);
        self.call(self.http.get(url).query(&[("fields", "id")]))
            .await
            .map(drop)
    }
}

fn required(value: &Option<Secret>, field: &str) -> Result<Secret, ChannelError> {
    value.clone().filter(|s| !s.is_empty()).ok_or_else(|| {
        ChannelError::Unauthorized(format!(
            "channels.whatsapp.{field} is required, got nothing"
        ))
    })
}

fn log_status(status: &Status) {
    if status.status == "failed" {
        for e in &status.errors {
            warn!(
                message_id = %status.id,
                code = e.code,
                title = %e.title,
                "WhatsApp could not deliver a sent message"
            );
        }
    } else {
        debug!(message_id = %status.id, status = %status.status, "WhatsApp status callback");
    }
}

/// 1 s doubling up to a minute, plus up to a quarter of jitter so restarts do not stampede.
impl Channel for WhatsAppChannel {
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

    /// Webhook-only: checks the token once (retrying network failures), then stays
    /// `Connected` until shutdown.
    fn run<'a>(
        &'a self,
        _sink: Arc<dyn InboundSink>,
        shutdown: CancellationToken,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            http::check_then_hold(
                "whatsapp",
                &shutdown,
                |st| self.set_state(st),
                || self.check_token(),
            )
            .await
        })
    }

    fn send<'a>(&'a self, msg: &'a Outbound) -> BoxFuture<'a, Result<String, ChannelError>> {
        Box::pin(async move {
            let body = SendText {
                messaging_product: "whatsapp",
                recipient_type: "individual",
                to: &msg.chat_id,
                kind: "text",
                text: TextBody {
                    preview_url: false,
                    body: &msg.text,
                },
                context: msg.reply_to.as_deref().map(|id| Context { message_id: id }),
            };
            let answer = self
                .call(self.http.post(self.messages_url()).json(&body))
                .await?;
            let id = answer["messages"][0]["id"].as_str().unwrap_or_default();
            if id.is_empty() {
                warn!("WhatsApp accepted a message but answered without its id");
            }
            Ok(id.to_string())
        })
    }

    /// Marks the chat's last received message read and shows "typing…" under it for up to
    /// 25 s. Without a received message (after a restart) there is nothing to attach it to,
    /// and nothing is sent.
    fn typing<'a>(&'a self, chat_id: &'a str) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let Some(message_id) = self.typing_target(chat_id) else {
                return Ok(());
            };
            let body = ReadWithTyping {
                messaging_product: "whatsapp",
                status: "read",
                message_id: &message_id,
                typing_indicator: TypingIndicator { kind: "text" },
            };
            self.call(self.http.post(self.messages_url()).json(&body))
                .await
                .map(drop)
        })
    }

    fn state(&self) -> ChannelState {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook handlers.

#[derive(Clone)]
struct Hook {
    channel: Arc<WhatsAppChannel>,
    sink: Arc<dyn InboundSink>,
}

/// Meta's subscription check: echo `hub.challenge` when `hub.verify_token` is ours.
async fn verify_subscription(
    State(hook): State<Hook>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, HookError> {
    let Query(params) = query.map_err(|e| HookError::BadRequest(e.body_text()))?;
    let param = |name: &'static str| {
        params
            .get(name)
            .filter(|v| !v.is_empty())
            .ok_or(HookError::MissingParam(name))
    };
    let mode = param("hub.mode")?;
    if mode != "subscribe" {
        return Err(HookError::BadRequest(format!(
            "`hub.mode` must be \"subscribe\", got {:?}",
            shorten(mode, 40)
        )));
    }
    let token = param("hub.verify_token")?;
    let challenge = param("hub.challenge")?;
    if !same_secret(token, hook.channel.verify_token.expose()) {
        return Err(HookError::WrongVerifyToken);
    }
    info!("WhatsApp webhook subscription verified");
    let content_type = [(header::CONTENT_TYPE, "text/plain; charset=utf-8")];
    Ok((content_type, challenge.clone()).into_response())
}

/// A signed notification: store its text messages, then answer 200.
async fn receive(
    State(hook): State<Hook>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, HookError> {
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => HookError::TooLarge { limit: BODY_LIMIT },
        _ => HookError::BadRequest(e.body_text()),
    })?;
    hook.channel.check_signature(&headers, &body)?;
    let payload: Payload = serde_json::from_slice(&body).map_err(|e| {
        HookError::BadRequest(format!("the body is not a WhatsApp webhook payload: {e}"))
    })?;
    let batch = hook.channel.inbound(&payload);
    if batch.is_empty() {
        return Ok(StatusCode::OK);
    }
    let count = batch.len();
    hook.channel.remember_received(&batch);
    hook.sink
        .accept(KIND, batch, None)
        .await
        .map_err(HookError::Sink)?;
    debug!(messages = count, "WhatsApp webhook stored");
    Ok(StatusCode::OK)
}

/// What a webhook request can fail with; [`IntoResponse`] is the one place these become
/// HTTP answers (`{"error": {"kind", "message"}}`).
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("query parameter `{0}` is required, got nothing")]
    MissingParam(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("`hub.verify_token` does not match the configured verify token")]
    WrongVerifyToken,
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("request body is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the message could not be stored; deliver it again later")]
    Sink(ChannelError),
}

impl HookError {
    fn kind(&self) -> &'static str {
        match self {
            HookError::MissingParam(_) | HookError::BadRequest(_) => "invalid_request",
            HookError::WrongVerifyToken => "forbidden",
            HookError::Unauthorized(_) => "unauthorized",
            HookError::TooLarge { .. } => "payload_too_large",
            HookError::Sink(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            HookError::MissingParam(_) | HookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            HookError::WrongVerifyToken => StatusCode::FORBIDDEN,
            HookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            HookError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            HookError::Sink(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Forged or misconfigured requests are worth a warning (nothing secret is in the
    /// text); a store failure is ours and logged with its cause; the rest are client noise.
    fn log(&self) {
        match self {
            HookError::WrongVerifyToken | HookError::Unauthorized(_) => {
                warn!(reason = %self, "refused a WhatsApp webhook request");
            }
            HookError::Sink(cause) => error!(%cause, "could not store a WhatsApp webhook"),
            HookError::MissingParam(_) | HookError::BadRequest(_) | HookError::TooLarge { .. } => {
                debug!(reason = %self, "bad WhatsApp webhook request");
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
// Wire formats. Webhook fields are defaulted: Meta adds fields and change kinds over time, and
// an unexpected shape must be ignored, not answered with an error Meta retries for days.

#[derive(Deserialize)]
struct Payload {
    #[serde(default)]
    object: String,
    #[serde(default)]
    entry: Vec<Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    changes: Vec<Change>,
}

#[derive(Deserialize)]
struct Change {
    #[serde(default)]
    field: String,
    #[serde(default)]
    value: ChangeValue,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct ChangeValue {
    metadata: Metadata,
    contacts: Vec<Contact>,
    messages: Vec<Message>,
    statuses: Vec<Status>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Metadata {
    phone_number_id: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Contact {
    wa_id: String,
    profile: Profile,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Profile {
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Message {
    from: String,
    id: String,
    #[serde(rename = "type")]
    kind: String,
    text: Option<Text>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Text {
    body: String,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct Status {
    id: String,
    status: String,
    errors: Vec<StatusError>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct StatusError {
    code: i64,
    title: String,
}

#[derive(Deserialize)]
struct GraphErrorBody {
    error: GraphError,
}

#[derive(Deserialize)]
struct GraphError {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<i64>,
    error_subcode: Option<i64>,
    is_transient: Option<bool>,
}

#[derive(Serialize)]
struct SendText<'a> {
    messaging_product: &'static str,
    recipient_type: &'static str,
    to: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    text: TextBody<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    context: Option<Context<'a>>,
}

#[derive(Serialize)]
struct TextBody<'a> {
    preview_url: bool,
    body: &'a str,
}

#[derive(Serialize)]
struct Context<'a> {
    message_id: &'a str,
}

#[derive(Serialize)]
struct ReadWithTyping<'a> {
    messaging_product: &'static str,
    status: &'static str,
    message_id: &'a str,
    typing_indicator: TypingIndicator,
}

#[derive(Serialize)]
struct TypingIndicator {
    #[serde(rename = "type")]
    kind: &'static str,
}
