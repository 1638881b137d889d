//! The Anthropic Messages side: `POST /v1/messages`, plain and streamed as named events
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`).

use crate::{pieces, sse, Answer, FakeToolCall, Shared, ARGUMENT_PIECES, TEXT_PIECES};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use std::sync::Arc;

pub(crate) fn anthropic_router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/messages", post(anthropic_messages))
        .with_state(shared)
}

fn anthropic_error(status: u16, message: &str, retry_after: Option<HeaderValue>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let kind = match status.as_u16() {
        401 => "authentication_error",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        400..=499 => "invalid_request_error",
        _ => "api_error",
    };
    let body = json!({"type": "error", "error": {"type": kind, "message": message}});
    let mut response = (status, Json(body)).into_response();
    if let Some(v) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, v);
    }
    response
}

async fn anthropic_messages(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let n = shared.arrive(headers.clone(), body.clone());
    shared.pause().await;
    let Some(key) = headers.get("x-api-key") else {
        return anthropic_error(401, "x-api-key header is required", None);
    };
    if let Some(expected) = &shared.config.api_key {
        if key.as_bytes() != expected.as_bytes() {
            return anthropic_error(401, "invalid x-api-key", None);
        }
    }
    if !headers.contains_key("anthropic-version") {
        return anthropic_error(400, "anthropic-version header is required", None);
    }
    if n <= shared.config.fail_first {
        let message = format!("injected failure {n} of {}", shared.config.fail_first);
        return anthropic_error(
            shared.config.fail_status,
            &message,
            shared.retry_after_header(),
        );
    }
    let request: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return anthropic_error(400, &format!("the body is not JSON: {e}"), None),
    };
    if !request["max_tokens"].is_u64() {
        return anthropic_error(400, "max_tokens: field required", None);
    }
    let Some(messages) = request["messages"].as_array() else {
        return anthropic_error(400, "messages: field required", None);
    };
    if messages.iter().any(|m| m["role"] == "system") {
        return anthropic_error(
            400,
            "messages: unexpected role \"system\"; use the top-level `system` field",
            None,
        );
    }
    let answer = Answer::new(&shared.config, n, &request, Some(&request["system"]));
    if request["stream"] == true {
        let (events, first_content) = anthropic_events(&answer);
        sse(shared, events, first_content)
    } else {
        Json(anthropic_message(&answer)).into_response()
    }
}

fn anthropic_stop_reason(answer: &Answer) -> &'static str {
    if answer.tool_call.is_some() {
        "tool_use"
    } else if answer.truncated {
        "max_tokens"
    } else {
        "end_turn"
    }
}

/// With a tool call, Claude usually says a few words first; the fake does the same so that
/// clients see a tool_use block whose index is not 0.
fn anthropic_preamble(call: &FakeToolCall) -> String {
    format!("Calling {}.", call.name)
}

fn anthropic_message(answer: &Answer) -> Value {
    let content = match &answer.tool_call {
        Some(call) => {
            let input: Value = serde_json::from_str(&call.arguments).unwrap_or(json!({}));
            json!([
                {"type": "text", "text": anthropic_preamble(call)},
                {"type": "tool_use", "id": format!("toolu_fake_{}", answer.n),
                 "name": call.name, "input": input},
            ])
        }
        None => json!([{"type": "text", "text": answer.text}]),
    };
    json!({
        "id": format!("msg_fake_{}", answer.n),
        "type": "message",
        "role": "assistant",
        "model": answer.model,
        "content": content,
        "stop_reason": anthropic_stop_reason(answer),
        "stop_sequence": null,
        "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": answer.completion_tokens},
    })
}

/// The named events of a streamed message, and where content starts.
fn anthropic_events(answer: &Answer) -> (Vec<Event>, usize) {
    let event = |name: &str, body: Value| Event::default().event(name).data(body.to_string());
    let mut events = vec![
        event(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": format!("msg_fake_{}", answer.n),
                "type": "message",
                "role": "assistant",
                "model": answer.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": {"input_tokens": answer.prompt_tokens, "output_tokens": 1},
            }}),
        ),
        event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0,
                   "content_block": {"type": "text", "text": ""}}),
        ),
        event("ping", json!({"type": "ping"})),
    ];
    let first_content = events.len();
    let text = match &answer.tool_call {
        Some(call) => anthropic_preamble(call),
        None => answer.text.clone(),
    };
    for piece in pieces(&text, TEXT_PIECES) {
        events.push(event(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0,
                   "delta": {"type": "text_delta", "text": piece}}),
        ));
    }
    events.push(event(
        "content_block_stop",
        json!({"type": "content_block_stop", "index": 0}),
    ));
    if let Some(call) = &answer.tool_call {
        events.push(event(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {
                "type": "tool_use", "id": format!("toolu_fake_{}", answer.n),
                "name": call.name, "input": {},
            }}),
        ));
        for piece in std::iter::once("").chain(pieces(&call.arguments, ARGUMENT_PIECES)) {
            events.push(event(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": 1,
                       "delta": {"type": "input_json_delta", "partial_json": piece}}),
            ));
        }
        events.push(event(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ));
    }
    events.push(event(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": anthropic_stop_reason(answer), "stop_sequence": null},
               "usage": {"output_tokens": answer.completion_tokens}}),
    ));
    events.push(event("message_stop", json!({"type": "message_stop"})));
    (events, first_content)
}
