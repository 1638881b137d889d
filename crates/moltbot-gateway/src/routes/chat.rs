//! `POST /api/v1/chat` and the session routes.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use crate::turns::{spawn_turn, TurnStream};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moltbot_engine::{Overrides, TurnEvent, TurnRequest};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChatBody {
    /// Continue this session; a new id is made when absent.
    pub session_id: Option<String>,
    /// Who is talking (kept with the session).
    pub user: Option<String>,
    pub message: String,
    #[serde(default)]
    pub stream: bool,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
    pub beam_width: Option<u32>,
}

/// Decoding settings beyond OpenAI's (vLLM and llama.cpp's server take the same names);
/// the embedded model uses them, remote providers ignore what they do not know.
#[derive(Debug, Default, Deserialize)]
pub struct Decoding {
    pub top_k: Option<u32>,
    pub repetition_penalty: Option<f32>,
    pub beam_width: Option<u32>,
}

impl Decoding {
    pub fn validate(&self) -> Result<(), ApiError> {
        if let Some(k) = self.top_k {
            if k > 1000 {
                return Err(ApiError::BadRequest(format!(
                    "`top_k` must be between 0 (off) and 1000, got {k}"
                )));
            }
        }
        if let Some(r) = self.repetition_penalty {
            if !(r > 0.0 && r <= 2.0) {
                return Err(ApiError::BadRequest(format!(
                    "`repetition_penalty` must be greater than 0 and at most 2, got {r}"
                )));
            }
        }
        if let Some(w) = self.beam_width {
            if w > MAX_BEAM_WIDTH {
                return Err(ApiError::BadRequest(format!(
                    "`beam_width` must be between 0 (automatic) and {MAX_BEAM_WIDTH}, got {w}"
                )));
            }
        }
        Ok(())
    }
}

/// Widest beam search a request may ask for.
pub const MAX_BEAM_WIDTH: u32 = 8;

/// Session ids: 1–128 characters from `A-Za-z0-9_.:@-` (OpenClaw keys like
/// `agent:main:main` fit).
pub fn validate_session_id(field: &str, id: &str) -> Result<(), ApiError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_.:@-".contains(c);
    if id.is_empty() || id.len() > 128 || !id.chars().all(ok_char) {
        return Err(ApiError::BadRequest(format!(
            "`{field}` must be 1 to 128 characters from A-Z a-z 0-9 _ . : @ -, got {:?}",
            truncate(id, 64)
        )));
    }
    Ok(())
}

pub fn validate_sampling(
    max_tokens: Option<u32>,
    temperature: Option<f32>,
    top_p: Option<f32>,
) -> Result<(), ApiError> {
    if let Some(m) = max_tokens {
        if !(1..=32_768).contains(&m) {
            return Err(ApiError::BadRequest(format!(
                "`max_tokens` must be between 1 and 32768, got {m}"
            )));
        }
    }
    if let Some(t) = temperature {
        if !(0.0..=2.0).contains(&t) {
            return Err(ApiError::BadRequest(format!(
                "`temperature` must be between 0 and 2, got {t}"
            )));
        }
    }
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(ApiError::BadRequest(format!(
                "`top_p` must be greater than 0 and at most 1, got {p}"
            )));
        }
    }
    Ok(())
}

pub fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// The `Idempotency-Key` header of a chat request, checked: a retry with the same key in
/// the same session gets the first attempt's reply instead of a second turn.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().unwrap_or("");
    let ok = (1..=128).contains(&key.len())
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if !ok {
        return Err(ApiError::BadRequest(format!(
            "header `Idempotency-Key` must be 1 to 128 characters of letters, digits, '-', '_', \
             '.' or ':', got {} bytes",
            v.len()
        )));
    }
    Ok(Some(key.to_string()))
}

pub async fn chat(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    ApiJson(body): ApiJson<ChatBody>,
) -> Result<Response, ApiError> {
    let key = idempotency_key(&headers)?;
    let session_id = match body.session_id {
        Some(id) => {
            validate_session_id("session_id", &id)?;
            id
        }
        None => uuid::Uuid::new_v4().to_string(),
    };
    // Scoped to the session: the same key in another session is another turn.
    let turn_id = key.map(|k| format!("idem:{session_id}:{k}"));
    if let Some(u) = &body.user {
        if u.chars().count() > 256 {
            return Err(ApiError::BadRequest(format!(
                "`user` must be at most 256 characters, got {}",
                u.chars().count()
            )));
        }
    }
    validate_sampling(body.max_tokens, body.temperature, body.top_p)?;
    let decoding = Decoding {
        top_k: body.top_k,
        repetition_penalty: body.repetition_penalty,
        beam_width: body.beam_width,
    };
    decoding.validate()?;
    state.engine().validate_message("message", &body.message)?;
    let permit = state.admit()?;
    let req = TurnRequest {
        turn_id,
        session_id,
        run_id: None,
        user: body.user,
        message: body.message,
        channel: "http",
        origin: None,
        overrides: Overrides {
            max_tokens: body.max_tokens,
            temperature: body.temperature,
            top_p: body.top_p,
            seed: body.seed,
            top_k: decoding.top_k,
            repetition_penalty: decoding.repetition_penalty,
            beam_width: decoding.beam_width,
            ..Overrides::default()
        },
    };
    if !body.stream {
        // Run inside the turn tracker so shutdown waits for it; if the client goes away the
        // handler future is dropped and generation stops with it.
        let engine = state.engine().clone();
        let out = state
            .inner
            .turns
            .track_future(engine.turn(req, None, CancellationToken::new()))
            .await?;
        drop(permit);
        return Ok(Json(out).into_response());
    }
    let TurnStream {
        mut events,
        result,
        guard,
    } = spawn_turn(&state, req, permit);
    let stream = async_stream::stream! {
        let _cancel_on_drop = guard;
        while let Some(event) = events.recv().await {
            let event = match event {
                TurnEvent::Delta(text) => {
                    Event::default().event("delta").data(json!({"text": text}).to_string())
                }
                TurnEvent::Tool(tool) => Event::default().event("tool").data(json!(tool).to_string()),
            };
            yield Ok::<_, std::convert::Infallible>(event);
        }
        let done = match result.await {
            Ok(Ok(out)) => Event::default().event("done").data(json!(out).to_string()),
            Ok(Err(e)) => error_event(ApiError::from(e)),
            Err(join) => error_event(ApiError::Internal(join.to_string())),
        };
        yield Ok(done);
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An SSE `error` event; the error is logged and counted once here.
fn error_event(e: ApiError) -> Event {
    e.log();
    Event::default()
        .event("error")
        .data(json!({"error": {"kind": e.kind(), "message": e.public_message()}}).to_string())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    pub limit: Option<usize>,
    pub offset: Option<usize>,
}

pub async fn list_sessions(
    State(state): State<AppState>,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = crate::extract::query(q)?;
    let limit = q.limit.unwrap_or(50);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and 1000, got {limit}"
        )));
    }
    let offset = q.offset.unwrap_or(0);
    let (rows, total) = state.engine().store().list_sessions(limit, offset).await?;
    Ok(
        Json(json!({"sessions": rows, "total": total, "limit": limit, "offset": offset}))
            .into_response(),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShowQuery {
    pub limit: Option<usize>,
}

pub async fn get_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<ShowQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let q = crate::extract::query(q)?;
    validate_session_id("id", &id)?;
    let limit = q.limit.unwrap_or(256).clamp(1, 10_000);
    let store = state.engine().store();
    let Some(row) = store.session(&id).await? else {
        return Err(ApiError::NotFound(format!("no session with id {id:?}")));
    };
    let messages = store.recent_messages(&id, limit).await?;
    Ok(Json(json!({"session": row, "messages": messages})).into_response())
}

pub async fn delete_session(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    validate_session_id("id", &id)?;
    if state.engine().reset_session(&id).await? {
        Ok(Json(json!({"deleted": true, "id": id})).into_response())
    } else {
        Err(ApiError::NotFound(format!("no session with id {id:?}")))
    }
}
