//! The methods of OpenClaw's gateway protocol that moltbot serves.

use super::frames::{res_err, res_ok, Req, RpcError};
use super::{now_ms, policy, protocol_version, Conn};
use crate::routes::chat::validate_session_id;
use moltbot_engine::{EngineError, Overrides, TurnEvent, TurnOutcome, TurnRequest};
use moltbot_store::StoredMessage;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub(super) const AGENT_ID: &str = "main";
const MAIN_KEY: &str = "main";

/// Methods we answer, advertised in `hello-ok`.
pub const METHODS: &[&str] = &[
    "health",
    "status",
    "agent",
    "agents.list",
    "chat.send",
    "chat.history",
    "chat.abort",
    "sessions.subscribe",
    "sessions.unsubscribe",
    "sessions.list",
    "sessions.describe",
    "sessions.reset",
    "sessions.delete",
    "models.list",
    "commands.list",
    "question.list",
    "plugin.approval.list",
];

const EVENTS: &[&str] = &[
    "connect.challenge",
    "tick",
    "chat",
    "session.message",
    "shutdown",
];

fn main_session_key() -> String {
    format!("agent:{AGENT_ID}:{MAIN_KEY}")
}

/// Check `connect` params: protocol range and the shared token. On failure, the error and
/// the close code (1002 protocol, 1008 auth).
pub fn connect(conn: &Conn, p: &Value) -> Result<Value, (RpcError, u16)> {
    let min = p.get("minProtocol").and_then(Value::as_u64);
    let max = p.get("maxProtocol").and_then(Value::as_u64);
    let (Some(min), Some(max)) = (min, max) else {
        return Err((
            RpcError::invalid(
                "invalid connect params: must have required properties 'minProtocol' and \
                 'maxProtocol'",
            ),
            1008,
        ));
    };
    let v = protocol_version();
    if !(min <= v && v <= max) {
        return Err((
            RpcError::invalid("protocol mismatch").with_details(json!({
                "code": "PROTOCOL_MISMATCH",
                "clientMinProtocol": min,
                "clientMaxProtocol": max,
                "expectedProtocol": v,
                "minimumProbeProtocol": 3,
            })),
            1002,
        ));
    }
    let auth = p.get("auth");
    let presented = auth
        .and_then(|a| a.get("token").or_else(|| a.get("password")))
        .and_then(Value::as_str);
    if let Err(e) = conn.state.inner.auth_limiter.check(conn.peer) {
        return Err((RpcError::invalid(e.to_string()), 1008));
    }
    if !conn.state.token_ok(presented) {
        conn.state.inner.auth_limiter.failed(conn.peer);
        let reason = if presented.is_some() {
            "token_mismatch"
        } else {
            "token_missing"
        };
        return Err((
            RpcError::invalid(format!(
                "unauthorized: gateway token {} (set OPENCLAW_GATEWAY_TOKEN or pass --token)",
                if presented.is_some() { "mismatch" } else { "missing" }
            ))
            .with_details(json!({
                "code": if presented.is_some() { "AUTH_TOKEN_MISMATCH" } else { "AUTH_TOKEN_MISSING" },
                "authReason": reason,
                "canRetryWithDeviceToken": false,
                "recommendedNextStep": "update_auth_credentials",
            })),
            1008,
        ));
    }
    let role = p.get("role").and_then(Value::as_str).unwrap_or("operator");
    let scopes = p
        .get("scopes")
        .filter(|s| s.is_array())
        .cloned()
        .unwrap_or_else(|| json!(["operator.admin"]));
    let policy = policy(&conn.state);
    let state = &conn.state;
    Ok(json!({
        "type": "hello-ok",
        "protocol": protocol_version(),
        "server": {
            "version": state.inner.version,
            "connId": conn.conn_id,
            "bootId": state.inner.boot_id,
        },
        "features": {"methods": METHODS, "events": EVENTS, "capabilities": []},
        "snapshot": {
            "presence": [],
            "health": {},
            "stateVersion": {"presence": 0, "health": 0},
            "uptimeMs": state.uptime_ms(),
            "sessionDefaults": {
                "defaultAgentId": AGENT_ID,
                "mainKey": MAIN_KEY,
                "mainSessionKey": main_session_key(),
                "scope": "per-sender",
            },
            "authMode": if state.inner.token.is_some() { "token" } else { "none" },
        },
        "auth": {"role": role, "scopes": scopes},
        "policy": policy,
    }))
}

/// Answer one request. Quick methods answer inline; runs are spawned.
pub async fn dispatch(conn: Arc<Conn>, req: Req) {
    let id = req.id.clone();
    let result = match req.method.as_str() {
        "connect" => Err(RpcError::invalid("already connected")),
        "health" => health(&conn).await,
        "status" => status(&conn),
        "agents.list" => Ok(agents_list()),
        "agent" | "chat.send" => {
            // Validation errors answer at once; the run itself continues in a task.
            match start_run(&conn, &req) {
                Ok(()) => return,
                Err(e) => Err(e),
            }
        }
        "chat.history" => chat_history(&conn, &req.params).await,
        "chat.abort" => Ok(chat_abort(&conn, &req.params)),
        "sessions.subscribe" => {
            conn.subscribed
                .store(true, std::sync::atomic::Ordering::Relaxed);
            Ok(json!({"subscribed": true}))
        }
        "sessions.unsubscribe" => {
            conn.subscribed
                .store(false, std::sync::atomic::Ordering::Relaxed);
            Ok(json!({"subscribed": false}))
        }
        "sessions.list" => sessions_list(&conn, &req.params).await,
        "sessions.describe" => sessions_describe(&conn, &req.params).await,
        "sessions.reset" | "sessions.delete" => sessions_reset(&conn, &req.params).await,
        "models.list" => Ok(models_list(&conn)),
        "commands.list" => Ok(json!({"commands": []})),
        "question.list" => Ok(json!({"questions": []})),
        "plugin.approval.list" => Ok(json!([])),
        other => Err(RpcError::invalid(format!("unknown method: {other}"))),
    };
    match result {
        Ok(payload) => conn.send(res_ok(&id, payload)).await,
        Err(e) => conn.send(res_err(&id, &e)).await,
    }
}

/// A store failure as an RPC error: logged here, generic for the client.
fn internal(e: impl std::fmt::Display) -> RpcError {
    let e = crate::ApiError::Internal(e.to_string());
    e.log();
    RpcError::unavailable(e.public_message(), Some(1000))
}

fn str_param<'a>(p: &'a Value, name: &str) -> Option<&'a str> {
    p.get(name).and_then(Value::as_str)
}

/// The session a request names: `sessionKey`, else the agent's main session.
fn session_key(p: &Value) -> Result<String, RpcError> {
    let key = match str_param(p, "sessionKey").or_else(|| str_param(p, "key")) {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => {
            let agent = str_param(p, "agentId").unwrap_or(AGENT_ID);
            format!("agent:{agent}:{MAIN_KEY}")
        }
    };
    validate_session_id("sessionKey", &key).map_err(|e| RpcError::invalid(e.to_string()))?;
    Ok(key)
}

async fn session_rows(conn: &Conn, limit: usize) -> Result<(Vec<Value>, i64), RpcError> {
    let (rows, total) = conn
        .state
        .engine()
        .store()
        .list_sessions(limit, 0)
        .await
        .map_err(internal)?;
    let (model, _) = conn.state.engine().model().describe();
    let rows = rows.into_iter().map(|r| session_json(&r, &model)).collect();
    Ok((rows, total))
}

fn session_json(r: &moltbot_store::SessionRow, model: &str) -> Value {
    let (provider, model_name) = model.split_once('/').unwrap_or(("moltbot", model));
    json!({
        "key": r.id,
        "sessionId": r.id,
        "updatedAt": r.updated_at,
        "kind": "direct",
        "agentId": AGENT_ID,
        "model": model_name,
        "modelProvider": provider,
        "displayName": r.title,
        "status": "idle",
    })
}

async fn health(conn: &Conn) -> Result<Value, RpcError> {
    let started = std::time::Instant::now();
    let (recent, count) = session_rows(conn, 10).await?;
    let now = now_ms() as i64;
    let recent: Vec<Value> = recent
        .iter()
        .map(|r| {
            let updated = r["updatedAt"].as_i64().unwrap_or(now);
            json!({"key": r["key"], "updatedAt": updated, "age": now - updated})
        })
        .collect();
    let store = conn.state.engine().store();
    let path = match store.path() {
        Some(p) => p.display().to_string(),
        None => store.backend_name().to_string(),
    };
    let sessions = json!({"path": path, "count": count, "recent": recent});
    Ok(json!({
        "ok": true,
        "ts": now,
        "durationMs": started.elapsed().as_millis() as u64,
        "defaultAgentId": AGENT_ID,
        "agents": [{
            "agentId": AGENT_ID,
            "isDefault": true,
            "heartbeat": {"enabled": false},
            "sessions": sessions,
        }],
        "sessions": sessions,
        "channels": {},
        "channelOrder": [],
        "channelLabels": {},
    }))
}

fn status(conn: &Conn) -> Result<Value, RpcError> {
    let (model, model_state) = conn.state.engine().model().describe();
    Ok(json!({
        "ok": true,
        "version": conn.state.inner.version,
        "uptimeMs": conn.state.uptime_ms(),
        "model": model,
        "modelState": model_state,
    }))
}

fn agents_list() -> Value {
    json!({
        "defaultId": AGENT_ID,
        "mainKey": MAIN_KEY,
        "scope": "per-sender",
        "agents": [{"id": AGENT_ID, "name": "moltbot", "kind": "agent"}],
    })
}

fn models_list(conn: &Conn) -> Value {
    let (model, _) = conn.state.engine().model().describe();
    let (provider, name) = model.split_once('/').unwrap_or(("moltbot", &model));
    json!({"models": [{"id": model, "name": name, "provider": provider}]})
}

fn message_json(m: &StoredMessage) -> Value {
    match m.role {
        moltbot_core::Role::Assistant => json!({
            "role": "assistant",
            "content": [{"type": "text", "text": m.content}],
            "timestamp": m.created_at,
            "stopReason": "stop",
            "model": m.model,
        }),
        other => json!({
            "role": other.as_str(),
            "content": m.content,
            "timestamp": m.created_at,
        }),
    }
}

async fn chat_history(conn: &Conn, p: &Value) -> Result<Value, RpcError> {
    let key = session_key(p)?;
    let limit = p.get("limit").and_then(Value::as_u64).unwrap_or(200);
    if !(1..=10_000).contains(&limit) {
        return Err(RpcError::invalid(format!(
            "invalid chat.history params: `limit` must be between 1 and 10000, got {limit}"
        )));
    }
    let store = conn.state.engine().store();
    let messages = store
        .recent_messages(&key, limit as usize)
        .await
        .map_err(internal)?;
    let total = store
        .session(&key)
        .await
        .map_err(internal)?
        .map(|s| s.message_count)
        .unwrap_or(0);
    Ok(json!({
        "sessionKey": key,
        "sessionId": key,
        "messages": messages.iter().map(message_json).collect::<Vec<_>>(),
        "hasMore": total > messages.len() as i64,
        "totalMessages": total,
    }))
}

fn chat_abort(conn: &Conn, p: &Value) -> Value {
    let key = str_param(p, "sessionKey").map(str::to_string);
    let run_id = str_param(p, "runId");
    let runs = conn.runs.lock().unwrap_or_else(|e| e.into_inner());
    let mut aborted = Vec::new();
    for (id, (session, cancel)) in runs.iter() {
        let matches = match run_id {
            Some(r) => r == id,
            None => key.as_deref() == Some(session.as_str()),
        };
        if matches {
            cancel.cancel();
            aborted.push(id.clone());
        }
    }
    json!({"ok": true, "aborted": !aborted.is_empty(), "runIds": aborted})
}

async fn sessions_list(conn: &Conn, p: &Value) -> Result<Value, RpcError> {
    let limit = p
        .get("limit")
        .and_then(Value::as_u64)
        .unwrap_or(100)
        .clamp(1, 1000);
    let (rows, total) = session_rows(conn, limit as usize).await?;
    let (model, _) = conn.state.engine().model().describe();
    let (provider, name) = model.split_once('/').unwrap_or(("moltbot", &model));
    Ok(json!({
        "ts": now_ms(),
        "count": rows.len(),
        "sessions": rows,
        "defaults": {
            "modelProvider": provider,
            "model": name,
            "contextTokens": conn.state.config().model.local.context_size,
        },
        "totalCount": total,
        "hasMore": total > limit as i64,
    }))
}

async fn sessions_describe(conn: &Conn, p: &Value) -> Result<Value, RpcError> {
    let key = session_key(p)?;
    let row = conn
        .state
        .engine()
        .store()
        .session(&key)
        .await
        .map_err(internal)?;
    let (model, _) = conn.state.engine().model().describe();
    Ok(json!({"session": row.map(|r| session_json(&r, &model))}))
}

async fn sessions_reset(conn: &Conn, p: &Value) -> Result<Value, RpcError> {
    let key = session_key(p)?;
    let existed = conn
        .state
        .engine()
        .reset_session(&key)
        .await
        .map_err(internal)?;
    Ok(json!({"ok": true, "key": key, "reset": existed}))
}

/// Validate and start `chat.send` or `agent`; the run answers by itself.
fn start_run(conn: &Arc<Conn>, req: &Req) -> Result<(), RpcError> {
    let p = &req.params;
    let method = req.method.as_str();
    let message = str_param(p, "message").ok_or_else(|| {
        RpcError::invalid(format!(
            "invalid {method} params: must have required property 'message'"
        ))
    })?;
    let run_id = str_param(p, "idempotencyKey").ok_or_else(|| {
        RpcError::invalid(format!(
            "invalid {method} params: must have required property 'idempotencyKey'"
        ))
    })?;
    conn.state
        .engine()
        .validate_message("message", message)
        .map_err(|e| RpcError::invalid(format!("invalid {method} params: {e}")))?;
    let key = session_key(p)?;
    {
        let runs = conn.runs.lock().unwrap_or_else(|e| e.into_inner());
        if runs.contains_key(run_id) {
            return Err(
                RpcError::invalid("in_flight: a run with this idempotencyKey is running")
                    .with_details(json!({"status": "in_flight", "runId": run_id})),
            );
        }
    }
    let permit = conn
        .state
        .admit()
        .map_err(|e| RpcError::unavailable(e.to_string(), Some(1000)))?;
    let cancel = conn.closed.child_token();
    conn.runs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(run_id.to_string(), (key.clone(), cancel.clone()));
    conn.remember_run(run_id);
    let turn = TurnRequest {
        turn_id: None,
        session_id: key.clone(),
        run_id: Some(run_id.to_string()),
        user: None,
        message: message.to_string(),
        channel: "ws",
        origin: None,
        overrides: Overrides::default(),
    };
    let run = Run {
        conn: conn.clone(),
        id: req.id.clone(),
        run_id: run_id.to_string(),
        key,
        agent: method == "agent",
    };
    conn.state.inner.turns.spawn(async move {
        run.execute(turn, cancel).await;
        drop(permit);
    });
    Ok(())
}

struct Run {
    conn: Arc<Conn>,
    id: Value,
    run_id: String,
    key: String,
    /// `agent` answers with a final `res`; `chat.send` answers with `chat` events.
    agent: bool,
}

impl Run {
    fn chat_event(&self, seq: u64, state: &str, text: &str) -> Value {
        super::chat_payload(&self.run_id, &self.key, seq, state, text)
    }

    async fn execute(self, turn: TurnRequest, cancel: CancellationToken) {
        let started = now_ms();
        let ack = if self.agent {
            json!({"runId": self.run_id, "status": "accepted", "sessionKey": self.key,
                   "agentId": AGENT_ID, "acceptedAt": started})
        } else {
            json!({"runId": self.run_id, "status": "started"})
        };
        self.conn.send(res_ok(&self.id, ack)).await;

        let (tx, mut rx) = mpsc::channel::<TurnEvent>(64);
        let engine = self.conn.state.engine().clone();
        let turn_cancel = cancel.clone();
        let task = tokio::spawn(async move { engine.turn(turn, Some(tx), turn_cancel).await });
        let mut seq = 0u64;
        let mut so_far = String::new();
        while let Some(event) = rx.recv().await {
            seq += 1;
            match event {
                TurnEvent::Delta(d) => {
                    so_far.push_str(&d);
                    let mut ev = self.chat_event(seq, "delta", &so_far);
                    ev["deltaText"] = json!(d);
                    self.conn.event("chat", ev).await;
                }
                TurnEvent::Tool(tool) => {
                    let ev = super::tool_payload(&self.run_id, &self.key, seq, &tool);
                    self.conn.event("agent", ev).await;
                }
            }
        }
        let result: Result<TurnOutcome, EngineError> = match task.await {
            Ok(r) => r,
            Err(join) => Err(EngineError::NotReady(join.to_string())),
        };
        seq += 1;
        let aborted = cancel.is_cancelled();
        // The error as the client sees it: kind for the TUI, a public message (logged once).
        let result = result.map_err(|e| {
            let kind = match &e {
                EngineError::Model(moltbot_core::ModelError::Timeout(_)) => "timeout",
                EngineError::Model(moltbot_core::ModelError::RateLimited { .. }) => "rate_limit",
                _ => "unknown",
            };
            let api = crate::ApiError::from(e);
            if !aborted {
                api.log();
            }
            (kind, api.public_message())
        });
        match &result {
            Ok(out) => {
                let mut ev = self.chat_event(seq, "final", &out.reply);
                ev["stopReason"] = json!(out.finish_reason.as_str());
                ev["message"]["stopReason"] = json!(out.finish_reason.as_str());
                ev["message"]["model"] = json!(out.model);
                self.conn.event("chat", ev).await;
            }
            Err(_) if aborted => {
                let mut ev = self.chat_event(seq, "aborted", &so_far);
                ev["errorMessage"] = json!("aborted");
                self.conn.event("chat", ev).await;
            }
            Err((kind, message)) => {
                let mut ev = self.chat_event(seq, "error", &so_far);
                ev["errorMessage"] = json!(message);
                ev["errorKind"] = json!(kind);
                self.conn.event("chat", ev).await;
            }
        }
        if self.agent {
            let final_payload = match &result {
                Ok(out) => {
                    let (provider, model) =
                        out.model.split_once('/').unwrap_or(("moltbot", &out.model));
                    json!({
                        "runId": self.run_id,
                        "status": "ok",
                        "summary": "completed",
                        "result": {
                            "payloads": [{"text": out.reply, "mediaUrl": null}],
                            "meta": {
                                "durationMs": out.latency_ms as u64,
                                "agentMeta": {
                                    "sessionId": self.key,
                                    "provider": provider,
                                    "model": model,
                                    "usage": {
                                        "input": out.usage.prompt_tokens,
                                        "output": out.usage.completion_tokens,
                                    },
                                },
                            },
                        },
                    })
                }
                Err((_, message)) => json!({
                    "runId": self.run_id,
                    "status": if aborted { "aborted" } else { "error" },
                    "summary": message,
                    "error": message,
                }),
            };
            self.conn.send(res_ok(&self.id, final_payload)).await;
        }
        self.conn
            .runs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.run_id);
    }
}
