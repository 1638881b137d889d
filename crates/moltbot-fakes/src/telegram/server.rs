//! The Bot API side of the fake: `/bot<TOKEN>/<method>` and what each method does to the
//! shared state.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Map, Value};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use super::{
    parse_markdown_v2, unix_now, ChatAction, ParsedText, SentMessage, Shared, Webhook,
    MAX_MESSAGE_CHARS,
};

/// Longest long poll Telegram allows, in seconds.
const MAX_POLL_SECS: i64 = 50;

pub(super) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/{bot}/{method}", any(handle))
        .with_state(shared)
}

/// Call parameters, from the query string and a JSON or form body.
struct Params(Map<String, Value>);

impl Params {
    fn read(query: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Result<Self, String> {
        let mut map = Map::new();
        for (k, v) in form_pairs(query.unwrap_or("")) {
            map.insert(k, Value::String(v));
        }
        let content_type = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if content_type.starts_with("application/json") {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(fields)) => map.extend(fields),
                Ok(Value::Null) => {}
                _ if body.is_empty() => {}
                _ => return Err("Bad Request: can't parse JSON object".to_string()),
            }
        } else if !body.is_empty() {
            let text = std::str::from_utf8(body)
                .map_err(|_| "Bad Request: request body is not UTF-8".to_string())?;
            for (k, v) in form_pairs(text) {
                map.insert(k, Value::String(v));
            }
        }
        Ok(Self(map))
    }

    fn int(&self, name: &str) -> Option<i64> {
        match self.0.get(name)? {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }

    /// A scalar as text (`chat_id` may be a number or `@name`).
    fn text(&self, name: &str) -> Option<String> {
        match self.0.get(name)? {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// An object parameter, given as JSON or (in forms) as JSON-encoded text.
    fn object(&self, name: &str) -> Option<Value> {
        match self.0.get(name)? {
            Value::Object(o) => Some(Value::Object(o.clone())),
            Value::String(s) => serde_json::from_str(s).ok(),
            _ => None,
        }
    }
}

fn form_pairs(s: &str) -> Vec<(String, String)> {
    s.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 3 <= b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(hi), Some(lo)) => {
                    out.push(hi * 16 + lo);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn error(status: u16, description: &str) -> Response {
    let body = json!({"ok": false, "error_code": status, "description": description});
    raw(status, body)
}

fn raw(status: u16, body: Value) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, Json(body)).into_response()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    Path((bot, method)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = bot.strip_prefix("bot") else {
        return error(404, "Not Found");
    };
    if token != shared.token {
        return error(401, "Unauthorized");
    }
    let method = method.to_ascii_lowercase();
    let injected = {
        let mut inner = shared.lock();
        *inner.calls.entry(method.clone()).or_default() += 1;
        inner
            .failures
            .get_mut(&method)
            .and_then(VecDeque::pop_front)
    };
    if let Some((status, body)) = injected {
        return raw(status, body);
    }
    let params = match Params::read(query.as_deref(), &headers, &body) {
        Ok(params) => params,
        Err(description) => return error(400, &description),
    };
    match method.as_str() {
        "getme" => ok(json!({
            "id": shared.bot_id,
            "is_bot": true,
            "first_name": "Fake Moltbot",
            "username": shared.bot_username,
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
        })),
        "getupdates" => get_updates(&shared, &params).await,
        "sendmessage" => send_message(&shared, &params),
        "sendchataction" => send_chat_action(&shared, &params),
        "setwebhook" => {
            let url = params.text("url").unwrap_or_default();
            let webhook = (!url.is_empty()).then(|| Webhook {
                url,
                secret_token: params.text("secret_token"),
            });
            shared.lock().webhook = webhook;
            shared.updates_changed.notify_waiters();
            ok(json!(true))
        }
        "deletewebhook" => {
            let mut inner = shared.lock();
            inner.webhook = None;
            if params.text("drop_pending_updates").as_deref() == Some("true")
                || params.0.get("drop_pending_updates") == Some(&json!(true))
            {
                inner.pending.clear();
            }
            ok(json!(true))
        }
        "getwebhookinfo" => {
            let inner = shared.lock();
            let url = inner.webhook.as_ref().map(|w| w.url.clone());
            ok(json!({
                "url": url.unwrap_or_default(),
                "has_custom_certificate": false,
                "pending_update_count": inner.pending.len(),
            }))
        }
        _ => error(404, "Not Found"),
    }
}

const WEBHOOK_CONFLICT: &str = "Conflict: can't use getUpdates method while webhook is active; \
                                use deleteWebhook to delete the webhook first";
const POLL_CONFLICT: &str = "Conflict: terminated by other getUpdates request; make sure that \
                             only one bot instance is running";

async fn get_updates(shared: &Shared, params: &Params) -> Response {
    let offset = params.int("offset");
    let limit = params.int("limit").unwrap_or(100).clamp(1, 100) as usize;
    let timeout = params.int("timeout").unwrap_or(0).clamp(0, MAX_POLL_SECS) as u64;
    let generation = {
        let mut inner = shared.lock();
        inner.last_get_updates = Some(Value::Object(params.0.clone()));
        if inner.webhook.is_some() {
            return error(409, WEBHOOK_CONFLICT);
        }
        match offset {
            Some(o) if o > 0 => {
                inner.pending.retain(|u| update_id(u) >= o);
                inner.confirmed_offset = inner.confirmed_offset.max(o);
            }
            // A negative offset keeps only the last -o updates.
            Some(o) if o < 0 => {
                let keep = o.unsigned_abs() as usize;
                let drop = inner.pending.len().saturating_sub(keep);
                inner.pending.drain(..drop);
            }
            _ => {}
        }
        inner.poll_generation += 1;
        inner.poll_generation
    };
    // An older poll still waiting is told it lost, as Telegram does.
    shared.updates_changed.notify_waiters();

    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        let changed = shared.updates_changed.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        {
            let inner = shared.lock();
            if inner.poll_generation != generation {
                return error(409, POLL_CONFLICT);
            }
            if inner.webhook.is_some() {
                return error(409, WEBHOOK_CONFLICT);
            }
            let batch: Vec<Value> = inner.pending.iter().take(limit).cloned().collect();
            if !batch.is_empty() || Instant::now() >= deadline {
                return ok(Value::Array(batch));
            }
        }
        // On timeout the loop looks once more and answers with what is there.
        let _ = tokio::time::timeout_at(deadline, changed).await;
    }
}

fn update_id(update: &Value) -> i64 {
    update.get("update_id").and_then(Value::as_i64).unwrap_or(0)
}

fn send_message(shared: &Shared, params: &Params) -> Response {
    let Some(chat_id) = params.text("chat_id").filter(|c| !c.is_empty()) else {
        return error(400, "Bad Request: chat_id is empty");
    };
    let text = params.text("text").unwrap_or_default();
    if text.is_empty() {
        return error(400, "Bad Request: message text is empty");
    }
    let parse_mode = params.text("parse_mode").filter(|p| !p.is_empty());
    let reject_markdown = shared.lock().reject_markdown;
    let parsed = match parse_mode.as_deref() {
        None => ParsedText {
            text: text.clone(),
            entities: Vec::new(),
        },
        Some(_) if reject_markdown => {
            return error(
                400,
                "Bad Request: can't parse entities: Can't find end of the entity starting at byte offset 0",
            );
        }
        Some(mode) if mode.eq_ignore_ascii_case("MarkdownV2") => match parse_markdown_v2(&text) {
            Ok(parsed) => parsed,
            Err(e) => return error(400, &format!("Bad Request: can't parse entities: {e}")),
        },
        // Legacy Markdown and HTML are accepted without checking.
        Some(mode)
            if mode.eq_ignore_ascii_case("Markdown") || mode.eq_ignore_ascii_case("HTML") =>
        {
            ParsedText {
                text: text.clone(),
                entities: Vec::new(),
            }
        }
        Some(_) => return error(400, "Bad Request: unsupported parse_mode"),
    };
    if parsed.text.trim().is_empty() {
        return error(400, "Bad Request: message text is empty");
    }
    if parsed.text.chars().count() > MAX_MESSAGE_CHARS {
        return error(400, "Bad Request: message is too long");
    }
    let reply_to = params
        .object("reply_parameters")
        .and_then(|r| r.get("message_id").and_then(Value::as_i64))
        .or_else(|| params.int("reply_to_message_id"));
    let message_id = {
        let mut inner = shared.lock();
        inner.last_message_id += 1;
        let message_id = inner.last_message_id;
        inner.sent.push(SentMessage {
            message_id,
            chat_id: chat_id.clone(),
            text,
            parse_mode,
            rendered: parsed.text.clone(),
            entities: parsed.entities,
            reply_to,
            message_thread_id: params.int("message_thread_id"),
            params: Value::Object(params.0.clone()),
        });
        message_id
    };
    shared.sent_changed.notify_waiters();
    let chat_type = if chat_id.starts_with('-') {
        "supergroup"
    } else {
        "private"
    };
    let chat_id_value = chat_id
        .parse::<i64>()
        .map(Value::from)
        .unwrap_or_else(|_| Value::from(chat_id));
    ok(json!({
        "message_id": message_id,
        "from": {"id": shared.bot_id, "is_bot": true, "first_name": "Fake Moltbot", "username": shared.bot_username},
        "chat": {"id": chat_id_value, "type": chat_type},
        "date": unix_now(),
        "text": parsed.text,
    }))
}

fn send_chat_action(shared: &Shared, params: &Params) -> Response {
    let Some(chat_id) = params.text("chat_id").filter(|c| !c.is_empty()) else {
        return error(400, "Bad Request: chat_id is empty");
    };
    let Some(action) = params.text("action").filter(|a| !a.is_empty()) else {
        return error(400, "Bad Request: action is empty");
    };
    shared.lock().actions.push(ChatAction { chat_id, action });
    ok(json!(true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_decoded() {
        assert_eq!(
            form_pairs("offset=5&allowed_updates=%5B%22message%22%5D&t=a+b"),
            vec![
                ("offset".to_string(), "5".to_string()),
                ("allowed_updates".to_string(), "[\"message\"]".to_string()),
                ("t".to_string(), "a b".to_string()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
    }
}
