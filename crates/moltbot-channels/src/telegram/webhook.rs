//! Webhook mode: Telegram posts each `Update` to `POST /channels/telegram/webhook` with the
//! secret given to `setWebhook` in `X-Telegram-Bot-Api-Secret-Token`.
//!
//! The answer is 200 only once the sink has stored the message; anything else makes Telegram
//! deliver the update again later, so a failed store loses nothing.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use moltbot_core::InboundSink;
use serde::Serialize;
use std::sync::Arc;

use super::update::{self, Update};
use super::{TelegramChannel, KIND};
use crate::signature;

/// Where Telegram delivers updates.
pub const WEBHOOK_PATH: &str = "/channels/telegram/webhook";
/// The header carrying `secret_token` from `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
/// Largest update body accepted, in bytes.
pub const WEBHOOK_BODY_LIMIT: usize = 1024 * 1024;

#[derive(Clone)]
struct WebhookState {
    channel: Arc<TelegramChannel>,
    sink: Arc<dyn InboundSink>,
}

impl TelegramChannel {
    /// `POST /channels/telegram/webhook`, handing updates to `sink`. Mount it in the gateway
    /// when `channels.telegram.mode = "webhook"`.
    pub fn webhook_router(self: &Arc<Self>, sink: Arc<dyn InboundSink>) -> Router {
        let state = WebhookState {
            channel: self.clone(),
            sink,
        };
        Router::new()
            .route(WEBHOOK_PATH, post(receive))
            .layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT))
            .with_state(state)
    }
}

async fn receive(
    State(state): State<WebhookState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Ack>, WebhookError> {
    let Some(expected) = &state.channel.webhook_secret else {
        tracing::warn!(
            channel = KIND,
            "webhook delivery refused: no webhook_secret is configured"
        );
        return Err(WebhookError::Unauthorized(
            "channels.telegram.webhook_secret is not set, so no delivery can be verified",
        ));
    };
    let presented = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    if !presented.is_some_and(|p| signature::same_secret(p, expected.expose())) {
        tracing::warn!(
            channel = KIND,
            header_present = presented.is_some(),
            "webhook delivery refused: wrong or missing secret token"
        );
        return Err(WebhookError::Unauthorized(
            "missing or wrong X-Telegram-Bot-Api-Secret-Token",
        ));
    }
    let body = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => WebhookError::PayloadTooLarge,
        _ => WebhookError::BadRequest(r.body_text()),
    })?;
    let update: Update = serde_json::from_slice(&body)
        .map_err(|e| WebhookError::BadRequest(format!("the body is not a Telegram Update: {e}")))?;
    let me = state.channel.me().await.map_err(|e| {
        WebhookError::Internal(format!(
            "getMe failed: {}",
            moltbot_core::ChannelError::from(e)
        ))
    })?;
    let Some(inbound) = update::to_inbound(&update, me) else {
        tracing::debug!(
            channel = KIND,
            update_id = update.update_id,
            "ignored an update with no message text"
        );
        return Ok(Json(Ack { ok: true }));
    };
    state
        .sink
        .accept(KIND, vec![inbound], None)
        .await
        .map_err(|e| WebhookError::Internal(format!("cannot store the update: {e}")))?;
    Ok(Json(Ack { ok: true }))
}

#[derive(Serialize)]
struct Ack {
    ok: bool,
}

/// Why a delivery was refused; the one place these become HTTP answers.
#[derive(Debug, thiserror::Error)]
enum WebhookError {
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    BadRequest(String),
    #[error("the update is larger than the limit of {WEBHOOK_BODY_LIMIT} bytes")]
    PayloadTooLarge,
    /// The sink or `getMe` failed: Telegram should deliver again later.
    #[error("internal error")]
    Internal(String),
}

impl WebhookError {
    fn kind(&self) -> &'static str {
        match self {
            WebhookError::Unauthorized(_) => "unauthorized",
            WebhookError::BadRequest(_) => "invalid_request",
            WebhookError::PayloadTooLarge => "payload_too_large",
            WebhookError::Internal(_) => "internal",
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            WebhookError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            WebhookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WebhookError::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            WebhookError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
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

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        match &self {
            WebhookError::Internal(cause) => {
                tracing::error!(channel = KIND, %cause, "webhook delivery failed; Telegram will retry")
            }
            // Refusals were logged where they were decided; client mistakes are not logged.
            WebhookError::Unauthorized(_)
            | WebhookError::BadRequest(_)
            | WebhookError::PayloadTooLarge => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind(),
                message: self.to_string(),
            },
        };
        (self.status(), Json(body)).into_response()
    }
}
