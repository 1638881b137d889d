//! The OpenAI chat-completions side: `POST /v1/chat/completions` (plain and streamed as
//! `chat.completion.chunk` events ending in `data: [DONE]`) and `GET /v1/models`.

use crate::{pieces, sse, unix_now, Answer, Shared, ARGUMENT_PIECES, TEXT_PIECES};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn openai_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(openai_chat))
        .route("/v1/models", get(openai_models))
        .with_state(shared)
}

fn openai_error(status: u16, message: &str, retry_after: Option<HeaderValue>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        401 => "invalid_api_key",
        429 => "rate_limit_exceeded",
        400..=499 => "invalid_request_error",
        _ => "server_error",
    };
    let body = json!({"error": {"message": message, "type": kind, "code": null}});
    let mut response = (status, Json(body)).into_response();
    if let Some(v) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

async fn openai_models(State(shared): State<Arc<Shared>>) -> Response {
    let data: Vec<Value> = shared
        .config
        .models
        .iter()
        .map(|id| json!({"id": id, "object": "model", "created": 0, "owned_by": "moltbot-fakes"}))
        .collect();
    Json(json!({"object": "list", "data": data})).into_response()
}

async fn openai_chat(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = shared.arrive(headers.clone(), body.clone());
    shared.pause().await;
    if let Some(key) = &shared.config.api_key {
        let expected = format!("Bearer {key}");
        if headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) != Some(expected.as_bytes()) {
            return openai_error(401, "missing or wrong API key", None);
        }
    }
    if n <= shared.config.fail_first {
        let message = format!("injected failure {n} of {}", shared.config.fail_first);
        return openai_error(
            shared.config.fail_status,
            &message,
            shared.retry_after_header(),
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return openai_error(400, &format!("the body is not JSON: {e}"), None),
    };
    if !request["messages"].is_array() {
        return openai_error(400, "`messages` must be an array", None);
    }
    let answer = Answer::new(&shared.config, n, &request, None);
    if request["stream"] == true {
        let include_usage = request["stream_options"]["include_usage"] == true;
        let (events, first_content) = openai_events(&answer, include_usage);
        sse(shared, events, first_content)
    } else {
        Json(openai_completion(&answer)).into_response()
    }
}

fn openai_finish(answer: &Answer) -> &'static str {
    if answer.tool_call.is_some() {
        "tool_calls"
    } else if answer.truncated {
        "length"
    } else {
        "stop"
    }
}

fn openai_usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.prompt_tokens,
        "completion_tokens": answer.completion_tokens,
        "total_tokens": answer.prompt_tokens + answer.completion_tokens,
    })
}

fn openai_completion(answer: &Answer) -> Value {
    let message = match &answer.tool_call {
        Some(call) => json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [{
                "id": format!("call_fake_{}", answer.n),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }],
        }),
        None => json!({"role": "assistant", "content": answer.text}),
    };
    json!({
        "id": format!("chatcmpl-fake-{}", answer.n),
        "object": "chat.completion",
        "created": unix_now(),
        "model": answer.model,
        "choices": [{"index": 0, "message": message, "finish_reason": openai_finish(answer)}],
        "usage": openai_usage(answer),
    })
}

/// The `chat.completion.chunk` events of a streamed answer, and where content starts.
fn openai_events(answer: &Answer, include_usage: bool) -> (Vec<Event>, usize) {
    let id = format!("chatcmpl-fake-{}", answer.n);
    let created = unix_now();
    let chunk = |delta: Value, finish: Value| {
        let body = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": answer.model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        });
        Event::default().data(body.to_string())
    };

    let mut events = vec![chunk(
        json!({"role": "assistant", "content": ""}),
        Value::Null,
    )];
    let first_content = events.len();
    match &answer.tool_call {
        Some(call) => {
            events.push(chunk(
                json!({"tool_calls": [{
                    "index": 0,
                    "id": format!("call_fake_{}", answer.n),
                    "type": "function",
                    "function": {"name": call.name, "arguments": ""},
                }]}),
                Value::Null,
            ));
            for piece in pieces(&call.arguments, ARGUMENT_PIECES) {
                events.push(chunk(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}),
                    Value::Null,
                ));
            }
        }
        None => {
            for piece in pieces(&answer.text, TEXT_PIECES) {
                events.push(chunk(json!({"content": piece}), Value::Null));
            }
        }
    }
    events.push(chunk(json!({}), json!(openai_finish(answer))));
    if include_usage {
        let body = json!({
            "id": id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": answer.model,
            "choices": [],
            "usage": openai_usage(answer),
        });
        events.push(Event::default().data(body.to_string()));
    }
    events.push(Event::default().data("[DONE]"));
    (events, first_content)
}
