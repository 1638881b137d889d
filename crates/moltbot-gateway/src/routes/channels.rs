//! Messaging channels over the API: status, sending a message, pairing requests.
//!
//! `moltbot channels status` and `moltbot message send` use these; the Control UI will too.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use moltbot_channels::{pairing, ChannelHub};
use moltbot_core::ChannelError;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn hub(state: &AppState) -> Result<&ChannelHub, ApiError> {
    state.inner.channels.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "no channel is enabled\nhint: set channels.<name>.enabled = true in the config".into(),
        )
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::Internal(e.to_string())
}

/// `GET /api/v1/channels`: each enabled channel's connection state and outbox counts.
pub async fn status(State(state): State<AppState>) -> Json<Value> {
    let channels = match &state.inner.channels {
        Some(hub) => serde_json::to_value(hub.status().await).unwrap_or(Value::Null),
        None => json!([]),
    };
    Json(json!({ "channels": channels }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SendBody {
    pub channel: String,
    /// The chat: a Telegram chat id, a WhatsApp phone number, a Discord or Slack channel id.
    pub to: String,
    pub text: String,
    /// Wait up to this many seconds for the platform to confirm (0: return once queued).
    #[serde(default = "default_wait")]
    pub wait_secs: u64,
}

fn default_wait() -> u64 {
    15
}

/// `POST /api/v1/channels/send`: queue a message (split if long) and, by default, wait for
/// delivery. Queued messages are delivered even if this request gives up waiting.
pub async fn send(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SendBody>,
) -> Result<Json<Value>, ApiError> {
    let hub = hub(&state)?;
    if hub.channel(&body.channel).is_none() {
        return Err(ApiError::BadRequest(format!(
            "`channel` must be an enabled channel ({}), got {:?}",
            state.config().channels.enabled().join(", "),
            body.channel
        )));
    }
    if body.to.trim().is_empty() {
        return Err(ApiError::BadRequest("`to` must not be empty".into()));
    }
    state
        .engine()
        .validate_message("text", &body.text)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    if body.wait_secs > 120 {
        return Err(ApiError::BadRequest(format!(
            "`wait_secs` must be between 0 and 120, got {}",
            body.wait_secs
        )));
    }
    let ids = hub
        .send_text(&body.channel, body.to.trim(), &body.text)
        .await
        .map_err(|e| match e {
            ChannelError::Rejected(m) => ApiError::BadRequest(m),
            other => internal(other),
        })?;
    let deadline = Instant::now() + Duration::from_secs(body.wait_secs);
    loop {
        let mut rows = Vec::with_capacity(ids.len());
        for id in &ids {
            if let Some(row) = hub.store().outbox_get(*id).await? {
                rows.push(row);
            }
        }
        let settled = rows.iter().all(|r| r.status != "pending");
        if settled || Instant::now() >= deadline {
            let status = if rows.iter().all(|r| r.status == "sent") {
                "sent"
            } else if rows.iter().any(|r| r.status == "failed") {
                "failed"
            } else {
                "queued"
            };
            let messages: Vec<Value> = rows
                .iter()
                .map(|r| {
                    json!({
                        "outbox_id": r.id,
                        "status": r.status,
                        "platform_id": r.platform_id,
                        "attempts": r.attempts,
                        "error": r.last_error,
                    })
                })
                .collect();
            return Ok(Json(json!({
                "channel": body.channel,
                "to": body.to,
                "status": status,
                "messages": messages,
            })));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `GET /api/v1/pairing`: codes waiting for approval and the approved senders.
pub async fn pairing_list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let store = state.engine().store();
    let requests = store.pairing_list(now_ms()).await?;
    let allowed = store.allowed_list().await?;
    Ok(Json(json!({ "requests": requests, "allowed": allowed })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    pub channel: String,
    pub code: String,
}

/// `POST /api/v1/pairing/approve`: allow the sender who holds `code`, and tell them.
pub async fn pairing_approve(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<ApproveBody>,
) -> Result<Json<Value>, ApiError> {
    const KNOWN: [&str; 4] = ["telegram", "whatsapp", "discord", "slack"];
    if !KNOWN.contains(&body.channel.as_str()) {
        return Err(ApiError::BadRequest(format!(
            "`channel` must be one of {}, got {:?}",
            KNOWN.join(", "),
            body.channel
        )));
    }
    let code = body.code.trim();
    if code.chars().count() != pairing::CODE_LEN {
        return Err(ApiError::BadRequest(format!(
            "`code` must be {} characters, got {:?}",
            pairing::CODE_LEN,
            code
        )));
    }
    let store = state.engine().store();
    let Some(req) = store.pairing_approve(&body.channel, code, now_ms()).await? else {
        return Err(ApiError::NotFound(format!(
            "no pending pairing request on `{}` with code {code} (expired or already used?)",
            body.channel
        )));
    };
    tracing::info!(channel = %req.channel, "pairing approved");
    if let Some(hub) = &state.inner.channels {
        if hub.channel(&req.channel).is_some() {
            if let Err(e) = hub
                .send_text(&req.channel, &req.chat_id, pairing::APPROVED_MESSAGE)
                .await
            {
                tracing::warn!(cause = %e, "cannot queue the approval notice");
            }
        }
    }
    Ok(Json(json!({
        "channel": req.channel,
        "sender_id": req.sender_id,
        "sender_name": req.sender_name,
        "approved": true,
    })))
}
