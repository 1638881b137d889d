//! OpenClaw's gateway protocol v4 over WebSocket, so OpenClaw's CLI, TUI and apps can drive
//! moltbot. See `shared/openclaw-protocol.md` for the wire facts.
//!
//! One connection = one reader loop (this file) + one writer task that owns the socket's
//! sink and numbers events. Long requests (`chat.send`, `agent`) run in their own tasks
//! and send their frames through the writer's queue.

mod frames;
mod methods;

use crate::state::AppState;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use frames::{parse_req, res_err, res_ok, RpcError, PROTOCOL_VERSION};
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use frames::Code;

/// Largest frame accepted before `connect` succeeds.
const PRE_AUTH_MAX_BYTES: usize = 64 * 1024;
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(15);
/// A peer that does not take a frame within this time is dropped, so a client that stops
/// reading cannot hold a turn (and its session) forever.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames queued for one connection before it counts as stalled.
const OUT_QUEUE: usize = 256;

/// Largest frame after `connect`: the request body limit, and never below the pre-auth one.
/// (OpenClaw's own gateway allows 25 MiB for attachments; moltbot takes text only, and the
/// socket's limit is fixed at upgrade time, before anyone has authenticated.)
fn max_payload(state: &AppState) -> usize {
    state
        .config()
        .gateway
        .max_body_bytes
        .max(PRE_AUTH_MAX_BYTES)
}

pub fn upgrade(state: AppState, ws: WebSocketUpgrade, peer: Option<std::net::IpAddr>) -> Response {
    let max = max_payload(&state);
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            metrics::gauge!("moltbot_ws_connections").increment(1.0);
            serve(state, socket, peer).await;
            metrics::gauge!("moltbot_ws_connections").decrement(1.0);
        })
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// What the reader and request tasks hand to the writer.
pub(crate) enum Out {
    Frame(Value),
    Event(&'static str, Value),
    Close(u16, &'static str),
}

/// Per-connection state shared with request tasks.
pub(crate) struct Conn {
    pub state: AppState,
    pub out: mpsc::Sender<Out>,
    pub conn_id: String,
    /// Runs in flight on this connection, by run id, so `chat.abort` can stop them.
    pub runs: Mutex<HashMap<String, (String, CancellationToken)>>,
    pub closed: CancellationToken,
    /// Set by `sessions.subscribe`: forward other clients' turns as `chat` events.
    pub subscribed: std::sync::atomic::AtomicBool,
    /// The last runs this connection started (finished ones too), so the relay never
    /// echoes a connection's own run back to it, however late it reads the event.
    pub own_runs: Mutex<std::collections::VecDeque<String>>,
    /// The client's address, for the limit on failed token checks.
    pub peer: Option<std::net::IpAddr>,
}

impl Conn {
    pub fn remember_run(&self, run_id: &str) {
        let mut own = self.own_runs.lock().unwrap_or_else(|p| p.into_inner());
        if own.len() == 64 {
            own.pop_front();
        }
        own.push_back(run_id.to_string());
    }

    fn is_own_run(&self, run_id: &str) -> bool {
        self.own_runs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|r| r == run_id)
    }
}

impl Conn {
    /// Queue a frame; gives up when the connection closes (a stalled peer is closed by the
    /// writer's timeout, which ends this wait too).
    async fn push(&self, out: Out) {
        tokio::select! {
            _ = self.out.send(out) => {}
            () = self.closed.cancelled() => {}
        }
    }

    pub async fn send(&self, v: Value) {
        self.push(Out::Frame(v)).await;
    }

    pub async fn event(&self, name: &'static str, payload: Value) {
        self.push(Out::Event(name, payload)).await;
    }
}

async fn serve(state: AppState, socket: WebSocket, peer: Option<std::net::IpAddr>) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Out>(OUT_QUEUE);
    let closed = CancellationToken::new();
    let conn = Arc::new(Conn {
        state: state.clone(),
        out: tx.clone(),
        conn_id: uuid::Uuid::new_v4().to_string(),
        runs: Mutex::new(HashMap::new()),
        closed: closed.clone(),
        subscribed: std::sync::atomic::AtomicBool::new(false),
        own_runs: Mutex::new(std::collections::VecDeque::new()),
        peer,
    });

    // Writer: the only owner of the sink; numbers events per connection from 1.
    let writer_closed = closed.clone();
    let writer = tokio::spawn(async move {
        let mut seq: u64 = 0;
        loop {
            let out = tokio::select! {
                out = rx.recv() => match out {
                    Some(out) => out,
                    None => break,
                },
                () = writer_closed.cancelled() => break,
            };
            let msg = match out {
                Out::Frame(v) => Message::Text(Utf8Bytes::from(v.to_string())),
                Out::Event(name, payload) => {
                    seq += 1;
                    let v = json!({"type": "event", "event": name, "payload": payload, "seq": seq});
                    Message::Text(Utf8Bytes::from(v.to_string()))
                }
                Out::Close(code, reason) => {
                    let close = Message::Close(Some(CloseFrame {
                        code,
                        reason: Utf8Bytes::from_static(reason),
                    }));
                    let _ = tokio::time::timeout(WRITE_TIMEOUT, sink.send(close)).await;
                    break;
                }
            };
            match tokio::time::timeout(WRITE_TIMEOUT, sink.send(msg)).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::debug!("websocket peer stopped reading; closing the connection");
                    break;
                }
            }
        }
        writer_closed.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), sink.close()).await;
    });

    let nonce = uuid::Uuid::new_v4().to_string();
    conn.push(Out::Event(
        "connect.challenge",
        json!({"nonce": nonce, "ts": now_ms(), "capabilities": ["model-catalog-snapshot"]}),
    ))
    .await;

    // Handshake: the first request must be `connect`, within the timeout.
    let authed = tokio::select! {
        r = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&conn, &mut stream)) => {
            matches!(r, Ok(true))
        }
        () = state.inner.shutdown.cancelled() => false,
    };
    if authed {
        run_session(&conn, &mut stream).await;
    }
    // Stop this connection's runs, then let the writer flush what is queued (a close
    // frame) and end.
    for (_, (_, cancel)) in conn.runs.lock().unwrap_or_else(|p| p.into_inner()).drain() {
        cancel.cancel();
    }
    drop(tx);
    drop(conn);
    let flushed = tokio::time::timeout(Duration::from_secs(2), writer).await;
    if flushed.is_err() {
        closed.cancel();
    }
}

/// Read until a valid `connect`; answer `hello-ok` or an error and a close code.
async fn handshake(conn: &Arc<Conn>, stream: &mut futures::stream::SplitStream<WebSocket>) -> bool {
    while let Some(msg) = stream.next().await {
        let text = match msg {
            Ok(Message::Text(t)) => t,
            Ok(Message::Binary(_)) => {
                conn.push(Out::Close(1003, "binary frames are not supported"))
                    .await;
                return false;
            }
            Ok(Message::Close(_)) | Err(_) => return false,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
        };
        if text.len() > PRE_AUTH_MAX_BYTES {
            conn.push(Out::Close(1009, "frame too large before connect"))
                .await;
            return false;
        }
        let req = match parse_req(&text) {
            Ok(r) => r,
            Err((id, e)) => {
                if let Some(id) = id {
                    conn.send(res_err(&id, &e)).await;
                }
                conn.push(Out::Close(1008, "invalid handshake")).await;
                return false;
            }
        };
        if req.method != "connect" {
            let e = RpcError::invalid("invalid handshake: first request must be connect");
            conn.send(res_err(&req.id, &e)).await;
            conn.push(Out::Close(1008, "invalid handshake")).await;
            return false;
        }
        return match methods::connect(conn, &req.params) {
            Ok(hello) => {
                conn.send(res_ok(&req.id, hello)).await;
                true
            }
            Err((e, close_code)) => {
                conn.send(res_err(&req.id, &e)).await;
                let reason = if close_code == 1002 {
                    "protocol mismatch"
                } else {
                    "unauthorized"
                };
                conn.push(Out::Close(close_code, reason)).await;
                false
            }
        };
    }
    false
}

async fn run_session(conn: &Arc<Conn>, stream: &mut futures::stream::SplitStream<WebSocket>) {
    let tick_ms = conn.state.config().gateway.tick_interval_ms;
    let mut tick = tokio::time::interval(Duration::from_millis(tick_ms));
    tick.tick().await; // the first tick fires at once; skip it
    let shutdown = conn.state.inner.shutdown.clone();
    let mut watched = conn.state.engine().subscribe();
    let mut relay = Relay::default();
    loop {
        tokio::select! {
            ev = watched.recv() => match ev {
                Ok(ev) => {
                    if conn.subscribed.load(std::sync::atomic::Ordering::Relaxed) {
                        relay.forward(conn, ev).await;
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::debug!(skipped = n, "websocket watcher fell behind");
                    relay.runs.clear();
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {}
            },
            msg = stream.next() => {
                let text = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                    Some(Ok(Message::Binary(_))) => {
                        conn.push(Out::Close(1003, "binary frames are not supported")).await;
                        return;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                };
                match parse_req(&text) {
                    Ok(req) => methods::dispatch(conn.clone(), req).await,
                    Err((Some(id), e)) => conn.send(res_err(&id, &e)).await,
                    Err((None, e)) => tracing::debug!(error = %e.message, "dropping unreadable frame"),
                }
            }
            // A tick is dropped, not queued, when the peer is behind: it is only a keepalive.
            _ = tick.tick() => {
                let _ = conn.out.try_send(Out::Event("tick", json!({"ts": now_ms()})));
            }
            () = shutdown.cancelled() => {
                conn.event("shutdown", json!({"reason": "gateway shutting down"})).await;
                conn.push(Out::Close(1012, "service restart")).await;
                return;
            }
            () = conn.closed.cancelled() => return,
        }
    }
}

/// Turns other clients run (HTTP, another WebSocket, a channel), relayed to a subscribed
/// connection as OpenClaw `chat` events, so a TUI shows the whole conversation.
#[derive(Default)]
struct Relay {
    /// Per foreign run: the event sequence so far and the reply text so far.
    runs: HashMap<String, (u64, String)>,
}

impl Relay {
    async fn forward(&mut self, conn: &Conn, ev: moltbot_engine::SessionEvent) {
        use moltbot_engine::SessionEventKind as K;
        if conn.is_own_run(&ev.run_id) {
            return;
        }
        if let K::User(text) = &ev.kind {
            // OpenClaw's `session.message`: the TUI shows it as the user's line of the turn.
            let payload = json!({
                "sessionKey": ev.session_id,
                "sessionId": ev.session_id,
                "agentId": "main",
                "runId": ev.run_id,
                "messageId": format!("{}:user", ev.run_id),
                "updatedAt": now_ms(),
                "message": {"role": "user", "content": text, "timestamp": now_ms()},
            });
            conn.event("session.message", payload).await;
            return;
        }
        let entry = self.runs.entry(ev.run_id.clone()).or_default();
        entry.0 += 1;
        let seq = entry.0;
        if let K::Tool(tool) = &ev.kind {
            conn.event("agent", tool_payload(&ev.run_id, &ev.session_id, seq, tool))
                .await;
            return;
        }
        let (state, text, extra) = match ev.kind {
            K::User(_) | K::Tool(_) => return,
            K::Delta(d) => {
                entry.1.push_str(&d);
                ("delta", entry.1.clone(), json!({"deltaText": d}))
            }
            K::Final {
                reply,
                finish_reason,
                ..
            } => (
                "final",
                reply,
                json!({"stopReason": finish_reason.as_str()}),
            ),
            K::Failed(_) => (
                "error",
                std::mem::take(&mut entry.1),
                json!({"errorMessage": "the turn failed", "errorKind": "unknown"}),
            ),
        };
        if state != "delta" {
            self.runs.remove(&ev.run_id);
        }
        let mut payload = chat_payload(&ev.run_id, &ev.session_id, seq, state, &text);
        if let (Some(p), Some(x)) = (payload.as_object_mut(), extra.as_object()) {
            for (k, v) in x {
                p.insert(k.clone(), v.clone());
            }
        }
        conn.event("chat", payload).await;
    }
}

/// An OpenClaw `chat` event payload: one step (`delta`, `final`, …) of a run, with the
/// assistant's text so far.
pub(crate) fn chat_payload(
    run_id: &str,
    session_key: &str,
    seq: u64,
    state: &str,
    text: &str,
) -> Value {
    json!({
        "runId": run_id,
        "sessionKey": session_key,
        "agentId": methods::AGENT_ID,
        "seq": seq,
        "state": state,
        "message": {
            "role": "assistant",
            "content": [{"type": "text", "text": text}],
            "timestamp": now_ms(),
        },
    })
}

/// An OpenClaw `agent` event on the `tool` stream: a tool call starting or its result.
pub(crate) fn tool_payload(
    run_id: &str,
    session_key: &str,
    seq: u64,
    tool: &moltbot_engine::ToolEvent,
) -> Value {
    use moltbot_engine::ToolPhase;
    let data = match &tool.phase {
        ToolPhase::Start { arguments } => json!({
            "phase": "start",
            "name": tool.name,
            "toolCallId": tool.call_id,
            "args": serde_json::from_str::<Value>(arguments).unwrap_or_else(|_| json!(arguments)),
        }),
        ToolPhase::Result { ok, output, .. } => json!({
            "phase": "result",
            "name": tool.name,
            "toolCallId": tool.call_id,
            "isError": !ok,
            "result": output,
        }),
    };
    json!({
        "runId": run_id,
        "sessionKey": session_key,
        "agentId": methods::AGENT_ID,
        "seq": seq,
        "stream": "tool",
        "ts": now_ms(),
        "data": data,
    })
}

/// Limits advertised in `hello-ok`.
pub(crate) fn policy(state: &AppState) -> Value {
    let max = max_payload(state);
    json!({
        "maxPayload": max,
        "maxBufferedBytes": max * 2,
        "tickIntervalMs": state.config().gateway.tick_interval_ms,
    })
}

pub(crate) fn protocol_version() -> u64 {
    PROTOCOL_VERSION
}
