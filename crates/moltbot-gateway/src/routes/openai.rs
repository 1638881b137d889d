//! The OpenAI-compatible API: `POST /v1/chat/completions` (plain and SSE streaming) and
//! `GET /v1/models`, so any OpenAI client library works against moltbot unchanged.
//!
//! Sessions: with an `x-moltbot-session-id` (or OpenClaw's `x-openclaw-session-key`)
//! header, or the OpenAI `user` field, the request is a turn of a persistent session: only its
//! last user message is new, history comes from our store. Without either, the request is
//! stateless and the caller's messages go to the model as they are.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::routes::chat::{validate_sampling, validate_session_id, Decoding};
use crate::state::AppState;
use crate::turns::{spawn_with, TurnStream};
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moltbot_core::{ChatMessage, Role};
use moltbot_engine::{Overrides, TurnEvent, TurnOutcome, TurnRequest};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::{SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

#[derive(Debug, Deserialize)]
pub struct CompletionBody {
    pub model: Option<String>,
    pub messages: Vec<InMessage>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub max_tokens: Option<u32>,
    pub max_completion_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    pub stop: Option<Stop>,
    pub n: Option<u32>,
    pub user: Option<String>,
    #[serde(flatten)]
    pub decoding: Decoding,
}

#[derive(Debug, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
pub struct InMessage {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
    pub tool_call_id: Option<String>,
    #[serde(default)]
    pub tool_calls: Vec<InToolCall>,
}

/// An assistant message's earlier tool call, as clients send the history back.
#[derive(Debug, Deserialize)]
pub struct InToolCall {
    pub id: String,
    pub function: InFunction,
}

#[derive(Debug, Deserialize)]
pub struct InFunction {
    pub name: String,
    #[serde(default)]
    pub arguments: String,
}

/// `content` is a string or a list of typed parts; we read the text parts.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

impl Content {
    fn text(&self) -> String {
        match self {
            Content::Text(t) => t.clone(),
            Content::Parts(parts) => parts
                .iter()
                .filter(|p| p.kind == "text")
                .filter_map(|p| p.text.as_deref())
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn convert_messages(body: &CompletionBody) -> Result<Vec<ChatMessage>, ApiError> {
    if body.messages.is_empty() {
        return Err(ApiError::BadRequest(
            "`messages` must hold at least 1 message, got 0".into(),
        ));
    }
    body.messages
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let role = Role::parse(&m.role).ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "`messages[{i}].role` must be one of system, developer, user, assistant, \
                     tool; got {:?}",
                    m.role
                ))
            })?;
            Ok(ChatMessage {
                role,
                content: m.content.as_ref().map(Content::text).unwrap_or_default(),
                tool_call_id: m.tool_call_id.clone(),
                tool_calls: m
                    .tool_calls
                    .iter()
                    .map(|c| moltbot_core::ToolCall {
                        id: c.id.clone(),
                        name: c.function.name.clone(),
                        arguments: c.function.arguments.clone(),
                    })
                    .collect(),
            })
        })
        .collect()
}

fn session_from(headers: &HeaderMap, body: &CompletionBody) -> Result<Option<String>, ApiError> {
    for name in ["x-moltbot-session-id", "x-openclaw-session-key"] {
        if let Some(v) = headers.get(name) {
            let v = v
                .to_str()
                .map_err(|_| ApiError::BadRequest(format!("`{name}` header must be ASCII")))?;
            validate_session_id(name, v)?;
            return Ok(Some(v.to_string()));
        }
    }
    match &body.user {
        Some(u) if !u.is_empty() => {
            let id = format!("openai:{u}");
            validate_session_id("user", &id)?;
            Ok(Some(id))
        }
        _ => Ok(None),
    }
}

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CompletionBody>,
) -> Result<Response, ApiError> {
    let messages = convert_messages(&body)?;
    if let Some(n) = body.n {
        if n != 1 {
            return Err(ApiError::BadRequest(format!("`n` must be 1, got {n}")));
        }
    }
    let max_tokens = body.max_completion_tokens.or(body.max_tokens);
    validate_sampling(max_tokens, body.temperature, body.top_p)?;
    body.decoding.validate()?;
    let overrides = Overrides {
        top_k: body.decoding.top_k,
        repetition_penalty: body.decoding.repetition_penalty,
        beam_width: body.decoding.beam_width,
        max_tokens,
        temperature: body.temperature,
        top_p: body.top_p,
        seed: body.seed,
        stop: match &body.stop {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s.clone()],
            Some(Stop::Many(v)) => v.clone(),
        },
    };
    let session = session_from(&headers, &body)?;
    let last_user = messages.iter().rev().find(|m| m.role == Role::User);
    if session.is_some() && last_user.is_none() {
        return Err(ApiError::BadRequest(
            "`messages` must contain a user message for a session turn".into(),
        ));
    }
    // User messages get the same limits as any turn; other roles are bounded by the body
    // limit (empty assistant and tool messages are legal in OpenAI transcripts).
    for (i, m) in messages
        .iter()
        .enumerate()
        .filter(|(_, m)| m.role == Role::User)
    {
        state
            .engine()
            .validate_message(&format!("messages[{i}].content"), &m.content)?;
    }
    let permit = state.admit()?;
    let model_name = body.model.clone().unwrap_or_else(|| "moltbot".to_string());
    let id = format!("chatcmpl-{}", uuid::Uuid::new_v4().simple());
    let created = now_secs();
    let include_usage = body
        .stream_options
        .as_ref()
        .is_some_and(|o| o.include_usage);

    let run = move |engine: moltbot_engine::Engine,
                    tx: Option<tokio::sync::mpsc::Sender<TurnEvent>>,
                    cancel: CancellationToken| async move {
        match session {
            Some(session_id) => {
                let message = messages
                    .iter()
                    .rev()
                    .find(|m| m.role == Role::User)
                    .map(|m| m.content.clone())
                    .unwrap_or_default();
                engine
                    .turn(
                        TurnRequest {
                            turn_id: None,
                            session_id,
                            run_id: None,
                            user: body.user,
                            message,
                            channel: "openai",
                            origin: None,
                            overrides,
                        },
                        tx,
                        cancel,
                    )
                    .await
            }
            None => engine.complete(messages, &overrides, tx, cancel).await,
        }
    };

    if !body.stream {
        let engine = state.engine().clone();
        let out = state
            .inner
            .turns
            .track_future(run(engine, None, CancellationToken::new()))
            .await?;
        drop(permit);
        return Ok(Json(completion_json(&id, created, &model_name, &out)).into_response());
    }

    let TurnStream {
        mut events,
        result,
        guard,
    } = spawn_with(&state, permit, CancellationToken::new(), move |e, tx, c| {
        run(e, Some(tx), c)
    });
    let stream = async_stream::stream! {
        let _cancel_on_drop = guard;
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": id, "object": "chat.completion.chunk", "created": created,
                "model": model_name,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
        };
        yield Ok::<_, std::convert::Infallible>(Event::default().data(
            chunk(json!({"role": "assistant", "content": ""}), Value::Null).to_string(),
        ));
        while let Some(event) = events.recv().await {
            // Tools run on our side; an OpenAI client sees only their outcome in the text
            // (sending them as `tool_calls` would ask the client to run them).
            if let TurnEvent::Delta(text) = event {
                yield Ok(Event::default().data(chunk(json!({"content": text}), Value::Null).to_string()));
            }
        }
        match result.await {
            Ok(Ok(out)) => {
                let mut last = chunk(json!({}), json!(out.finish_reason.as_str()));
                // The same extension field as the plain response, on the finishing chunk.
                if let Some(route) = &out.route {
                    last["route"] = json!(route);
                }
                yield Ok(Event::default().data(last.to_string()));
                if include_usage {
                    yield Ok(Event::default().data(json!({
                        "id": id, "object": "chat.completion.chunk", "created": created,
                        "model": model_name, "choices": [], "usage": usage_json(&out),
                    }).to_string()));
                }
            }
            Ok(Err(e)) => yield Ok(error_event(ApiError::from(e))),
            Err(join) => yield Ok(error_event(ApiError::Internal(join.to_string()))),
        }
        yield Ok(Event::default().data("[DONE]"));
    };
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// An error chunk in OpenAI's shape; the error is logged and counted once here.
fn error_event(e: ApiError) -> Event {
    e.log();
    Event::default().data(
        json!({"error": {"message": e.public_message(), "type": e.kind(), "kind": e.kind()}})
            .to_string(),
    )
}

fn usage_json(out: &TurnOutcome) -> Value {
    json!({
        "prompt_tokens": out.usage.prompt_tokens,
        "completion_tokens": out.usage.completion_tokens,
        "total_tokens": out.usage.prompt_tokens + out.usage.completion_tokens,
    })
}

fn completion_json(id: &str, created: u64, model: &str, out: &TurnOutcome) -> Value {
    let mut v = json!({
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": out.reply},
            "logprobs": null,
            "finish_reason": out.finish_reason.as_str(),
        }],
        "usage": usage_json(out),
    });
    if !out.session_id.is_empty() {
        v["session_id"] = json!(out.session_id);
    }
    // An extension field: OpenAI clients ignore it, ours read the route and citations.
    if let Some(route) = &out.route {
        v["route"] = json!(route);
    }
    v
}

fn model_entries(state: &AppState) -> Vec<Value> {
    let (underlying, _) = state.engine().model().describe();
    let created = now_secs();
    ["moltbot", "openclaw", "openclaw/default"]
        .into_iter()
        .map(str::to_string)
        .chain(std::iter::once(underlying))
        .map(|id| json!({"id": id, "object": "model", "created": created, "owned_by": "moltbot"}))
        .collect()
}

pub async fn list_models(State(state): State<AppState>) -> Json<Value> {
    Json(json!({"object": "list", "data": model_entries(&state)}))
}

pub async fn get_model(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    model_entries(&state)
        .into_iter()
        .find(|m| m["id"] == id.as_str())
        .map(Json)
        .ok_or_else(|| ApiError::NotFound(format!("no model with id {id:?}")))
}
