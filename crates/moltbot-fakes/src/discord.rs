//! A fake Discord: REST under `/api/v10` and a gateway WebSocket at `/gateway`, both on
//! one loopback port, speaking the real wire formats closely enough for the adapter.
//!
//! The gateway follows the real protocol: `Hello` (op 10) with a heartbeat interval, then
//! `Identify` (op 2; a wrong token closes with 4004) or `Resume` (op 6; a known session gets
//! the dispatches after the given sequence number replayed and then `RESUMED`, an unknown one
//! gets `Invalid Session` op 9 `d: false`), heartbeats (op 1) answered with op 11, and every
//! dispatch (op 0) numbered with `s`. Each session keeps a log of everything dispatched to
//! it, so messages pushed while no socket is connected are delivered on resume, as Discord
//! does within its resume window. A client closing with 1000 or 1001 ends its session, as
//! on Discord.
//!
//! Messages pushed before any session was identified are held and dispatched right after
//! the first `READY` (Discord would not deliver them at all; holding them keeps tests free
//! of ordering races).
//!
//! The test side pushes messages ([`FakeDiscord::push_dm`],
//! [`FakeDiscord::push_guild_message`], [`FakeDiscord::push_event`]), breaks connections
//! ([`FakeDiscord::drop_connections`], [`FakeDiscord::send_reconnect`]), injects rate limits
//! and reads what the bot sent and how it spoke to the gateway.

use axum::body::Bytes;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio_util::sync::CancellationToken;

/// Discord's default heartbeat interval, in milliseconds.
const DEFAULT_HEARTBEAT_MS: u64 = 41_250;
/// `MESSAGE_CONTENT`, the privileged intent [`FakeDiscord::disallow_message_content`] refuses.
const MESSAGE_CONTENT_INTENT: u64 = 1 << 15;

/// A message the bot sent through `POST /channels/{id}/messages`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    pub channel_id: String,
    pub content: String,
    /// `message_reference.message_id`, when the bot replied to a message.
    pub reply_to: Option<String>,
}

/// A fake Discord listening on `127.0.0.1:0`; it stops when dropped.
pub struct FakeDiscord {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

/// What the test side tells live gateway connections.
#[derive(Debug, Clone, Copy)]
enum Command {
    /// Close the TCP connection without a close frame.
    Drop,
    /// Send op 7 Reconnect.
    Reconnect,
}

struct Shared {
    token: String,
    bot_user_id: String,
    gateway_url: String,
    heartbeat_ms: AtomicU64,
    ack_heartbeats: AtomicBool,
    disallow_message_content: AtomicBool,
    identifies: AtomicU64,
    resumes: AtomicU64,
    heartbeats: AtomicU64,
    /// Bumped whenever a session log grows, so connections flush what is new.
    changed: watch::Sender<u64>,
    commands: broadcast::Sender<Command>,
    stop: CancellationToken,
    // A std mutex: held only to read or append a few values, never across an `.await`.
    state: Mutex<FakeState>,
}

#[derive(Default)]
struct FakeState {
    next_id: u64,
    next_connection: u64,
    /// Session id → every dispatch payload sent in it; a payload's `s` is its index + 1.
    sessions: HashMap<String, Vec<Value>>,
    /// Session id → the connection currently serving it.
    owners: HashMap<String, u64>,
    /// The most recently identified session: where pushed events go.
    current: Option<String>,
    /// Events pushed before any session existed: `(t, d)`.
    pending: Vec<(String, Value)>,
    sent: Vec<SentMessage>,
    typing: Vec<String>,
    /// Sends still to be answered with 429, and the `retry_after` they carry.
    rate_limited_sends: u32,
    rate_limit_secs: f64,
    /// The next successful send reports an exhausted bucket resetting after this long.
    exhaust_bucket_secs: Option<f64>,
}

impl FakeState {
    fn snowflake(&mut self) -> String {
        self.next_id += 1;
        (1_200_000_000_000_000_000u64 + self.next_id).to_string()
    }

    /// Append a dispatch to `session`'s log, numbering it.
    fn append(&mut self, session: &str, t: &str, d: Value) {
        if let Some(log) = self.sessions.get_mut(session) {
            let s = log.len() as u64 + 1;
            log.push(json!({"op": 0, "t": t, "s": s, "d": d}));
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        let expected = format!("Bot {}", self.token);
        headers.get(header::AUTHORIZATION).map(|v| v.as_bytes()) == Some(expected.as_bytes())
    }

    /// Dispatch `t`/`d` to the current session (or hold it until there is one).
    fn dispatch(&self, t: &str, d: Value) {
        {
            let mut state = self.state();
            match state.current.clone() {
                Some(session) => state.append(&session, t, d),
                None => state.pending.push((t.to_string(), d)),
            }
        }
        self.changed.send_modify(|v| *v += 1);
    }
}

impl FakeDiscord {
    /// Start a fake that accepts `token` (REST `Authorization: Bot <token>` and the gateway
    /// `Identify`/`Resume` token).
    pub async fn start(token: &str) -> Self {
        // Binding port 0 on loopback only fails if the machine has no loopback interface;
        // a fake is test code, so failing loudly is the useful behaviour.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake Discord");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let shared = Arc::new(Shared {
            token: token.to_string(),
            bot_user_id: "1100000000000000001".to_string(),
            gateway_url: format!("ws://{addr}/gateway"),
            heartbeat_ms: AtomicU64::new(DEFAULT_HEARTBEAT_MS),
            ack_heartbeats: AtomicBool::new(true),
            disallow_message_content: AtomicBool::new(false),
            identifies: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            heartbeats: AtomicU64::new(0),
            changed: watch::channel(0).0,
            commands: broadcast::channel(16).0,
            stop: CancellationToken::new(),
            state: Mutex::new(FakeState::default()),
        });
        let app = router(shared.clone());
        let stop = shared.stop.clone();
        tokio::spawn(async move {
            // Serving ends when the fake is dropped (graceful shutdown on `stop`).
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
        });
        Self { addr, shared }
    }

    /// `http://127.0.0.1:PORT/api/v10`, the form `channels.discord.api_base` takes.
    pub fn api_base(&self) -> String {
        format!("http://{}/api/v10", self.addr)
    }

    /// `ws://127.0.0.1:PORT/gateway` (also what `GET /gateway/bot` answers).
    pub fn gateway_url(&self) -> String {
        self.shared.gateway_url.clone()
    }

    /// The bot's own user id, as sent in `READY`.
    pub fn bot_user_id(&self) -> String {
        self.shared.bot_user_id.clone()
    }

    /// The heartbeat interval announced in the next `Hello` (default 41.25 s).
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        let ms = u64::try_from(interval.as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        self.shared.heartbeat_ms.store(ms, Ordering::Relaxed);
    }

    /// Stop (or resume) answering heartbeats with op 11, to make a connection look zombied.
    pub fn set_ack_heartbeats(&self, ack: bool) {
        self.shared.ack_heartbeats.store(ack, Ordering::Relaxed);
    }

    /// Close identifies asking for the `MESSAGE_CONTENT` intent with 4014 (the intent is not
    /// enabled for the application in the developer portal).
    pub fn disallow_message_content(&self) {
        self.shared
            .disallow_message_content
            .store(true, Ordering::Relaxed);
    }

    /// A direct message from a user; returns its message id.
    pub fn push_dm(
        &self,
        channel_id: &str,
        author_id: &str,
        username: &str,
        content: &str,
    ) -> String {
        let id = self.shared.state().snowflake();
        self.push_event(
            "MESSAGE_CREATE",
            json!({
                "id": id,
                "type": 0,
                "channel_id": channel_id,
                "author": {"id": author_id, "username": username, "global_name": null},
                "content": content,
                "timestamp": "2025-01-01T00:00:00.000000+00:00",
                "mentions": [],
                "mention_roles": [],
                "attachments": [],
                "tts": false,
            }),
        );
        id
    }

    /// A message in a guild channel mentioning the users in `mentions`; returns its id.
    pub fn push_guild_message(
        &self,
        guild_id: &str,
        channel_id: &str,
        author_id: &str,
        content: &str,
        mentions: &[&str],
    ) -> String {
        let id = self.shared.state().snowflake();
        let mentions: Vec<Value> = mentions
            .iter()
            .map(|m| json!({"id": m, "username": format!("user{m}")}))
            .collect();
        self.push_event(
            "MESSAGE_CREATE",
            json!({
                "id": id,
                "type": 0,
                "guild_id": guild_id,
                "channel_id": channel_id,
                "author": {"id": author_id, "username": format!("user{author_id}"), "global_name": null},
                "member": {"roles": []},
                "content": content,
                "timestamp": "2025-01-01T00:00:00.000000+00:00",
                "mentions": mentions,
                "mention_roles": [],
                "attachments": [],
                "tts": false,
            }),
        );
        id
    }

    /// Dispatch any event (`t`, `d`) as it is: for payloads the helpers above do not build
    /// (a bot author, a reply to the bot).
    pub fn push_event(&self, t: &str, d: Value) {
        self.shared.dispatch(t, d);
    }

    /// Close every gateway socket abruptly (no close frame), as a network failure would.
    /// Sessions stay resumable.
    pub fn drop_connections(&self) {
        // An error only means no socket is connected.
        let _ = self.shared.commands.send(Command::Drop);
    }

    /// Send op 7 Reconnect on every gateway socket.
    pub fn send_reconnect(&self) {
        let _ = self.shared.commands.send(Command::Reconnect);
    }

    /// Messages the bot sent, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.shared.state().sent.clone()
    }

    /// Wait until at least `n` messages were sent or `timeout` passed; returns what was sent.
    pub async fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let deadline = Instant::now() + timeout;
        loop {
            let sent = self.sent();
            if sent.len() >= n || Instant::now() >= deadline {
                return sent;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Channel ids of the `POST /channels/{id}/typing` calls, in order.
    pub fn typing_calls(&self) -> Vec<String> {
        self.shared.state().typing.clone()
    }

    /// Answer the next `n` sends with 429 carrying `retry_after` seconds.
    pub fn rate_limit_next_sends(&self, n: u32, retry_after_secs: f64) {
        let mut state = self.shared.state();
        state.rate_limited_sends = n;
        state.rate_limit_secs = retry_after_secs;
    }

    /// Have the next successful send report `X-RateLimit-Remaining: 0` with
    /// `X-RateLimit-Reset-After: reset_after_secs`.
    pub fn exhaust_bucket_on_next_send(&self, reset_after_secs: f64) {
        self.shared.state().exhaust_bucket_secs = Some(reset_after_secs);
    }

    /// `Identify` payloads received (including refused ones).
    pub fn identify_count(&self) -> u64 {
        self.shared.identifies.load(Ordering::Relaxed)
    }

    /// `Resume` payloads received (including unknown sessions).
    pub fn resume_count(&self) -> u64 {
        self.shared.resumes.load(Ordering::Relaxed)
    }

    /// Heartbeats (op 1) received.
    pub fn heartbeats_received(&self) -> u64 {
        self.shared.heartbeats.load(Ordering::Relaxed)
    }
}

impl Drop for FakeDiscord {
    fn drop(&mut self) {
        self.shared.stop.cancel();
    }
}

fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/api/v10/gateway/bot", get(gateway_bot))
        .route("/api/v10/channels/{id}/messages", post(create_message))
        .route("/api/v10/channels/{id}/typing", post(trigger_typing))
        .route("/gateway", get(gateway))
        .with_state(shared)
}

// ---------------------------------------------------------------------------------------------
// REST

fn discord_error(status: StatusCode, message: &str, code: u32) -> Response {
    (status, Json(json!({"message": message, "code": code}))).into_response()
}

fn unauthorized() -> Response {
    discord_error(StatusCode::UNAUTHORIZED, "401: Unauthorized", 0)
}

async fn gateway_bot(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !shared.authorized(&headers) {
        return unauthorized();
    }
    Json(json!({
        "url": shared.gateway_url,
        "shards": 1,
        "session_start_limit": {
            "total": 1000,
            "remaining": 999,
            "reset_after": 14_400_000,
            "max_concurrency": 1,
        },
    }))
    .into_response()
}

async fn create_message(
    State(shared): State<Arc<Shared>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !shared.authorized(&headers) {
        return unauthorized();
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return discord_error(StatusCode::BAD_REQUEST, "400: Bad Request", 50109);
    };
    let content = request["content"].as_str().unwrap_or_default().to_string();
    if content.is_empty() {
        return discord_error(
            StatusCode::BAD_REQUEST,
            "Cannot send an empty message",
            50006,
        );
    }
    let mut state = shared.state();
    if state.rate_limited_sends > 0 {
        state.rate_limited_sends -= 1;
        let secs = state.rate_limit_secs;
        drop(state);
        let body =
            json!({"message": "You are being rate limited.", "retry_after": secs, "global": false});
        let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
        let h = response.headers_mut();
        h.insert(header::RETRY_AFTER, HeaderValue::from(secs.ceil() as u64));
        insert(h, "x-ratelimit-limit", "5");
        insert(h, "x-ratelimit-remaining", "0");
        insert(h, "x-ratelimit-reset-after", &format!("{secs:.3}"));
        insert(h, "x-ratelimit-scope", "user");
        return response;
    }
    let reply_to = request["message_reference"]["message_id"]
        .as_str()
        .map(str::to_string);
    state.sent.push(SentMessage {
        channel_id: channel_id.clone(),
        content: content.clone(),
        reply_to: reply_to.clone(),
    });
    let id = state.snowflake();
    let (remaining, reset_after) = match state.exhaust_bucket_secs.take() {
        Some(secs) => ("0".to_string(), format!("{secs:.3}")),
        None => ("4".to_string(), "1.000".to_string()),
    };
    drop(state);
    let message = json!({
        "id": id,
        "type": if reply_to.is_some() { 19 } else { 0 },
        "channel_id": channel_id,
        "author": {"id": shared.bot_user_id, "username": "moltbot", "bot": true},
        "content": content,
        "timestamp": "2025-01-01T00:00:00.000000+00:00",
        "mentions": [],
        "message_reference": reply_to.map(|m| json!({"message_id": m, "channel_id": channel_id})),
    });
    let mut response = Json(message).into_response();
    let h = response.headers_mut();
    insert(h, "x-ratelimit-limit", "5");
    insert(h, "x-ratelimit-remaining", &remaining);
    insert(h, "x-ratelimit-reset-after", &reset_after);
    insert(h, "x-ratelimit-bucket", "fake-bucket");
    response
}

fn insert(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

async fn trigger_typing(
    State(shared): State<Arc<Shared>>,
    Path(channel_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if !shared.authorized(&headers) {
        return unauthorized();
    }
    shared.state().typing.push(channel_id);
    StatusCode::NO_CONTENT.into_response()
}

// ---------------------------------------------------------------------------------------------
// Gateway

async fn gateway(State(shared): State<Arc<Shared>>, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| async move {
        let stop = shared.stop.clone();
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = Connection::new(shared, socket).run() => {}
        }
    })
}

/// One gateway socket.
struct Connection {
    shared: Arc<Shared>,
    socket: WebSocket,
    id: u64,
    /// The session this socket identified or resumed, once it has.
    session: Option<String>,
    /// Sequence number of the last dispatch written to this socket.
    sent_up_to: u64,
}

/// Why a connection ends.
struct Closed;

impl Connection {
    fn new(shared: Arc<Shared>, socket: WebSocket) -> Self {
        let id = {
            let mut state = shared.state();
            state.next_connection += 1;
            state.next_connection
        };
        Self {
            shared,
            socket,
            id,
            session: None,
            sent_up_to: 0,
        }
    }

    async fn run(mut self) {
        let mut commands = self.shared.commands.subscribe();
        let mut changed = self.shared.changed.subscribe();
        let interval = self.shared.heartbeat_ms.load(Ordering::Relaxed);
        let hello = json!({"op": 10, "s": null, "t": null, "d": {"heartbeat_interval": interval}});
        if self.send(&hello).await.is_err() {
            return;
        }
        loop {
            let step = tokio::select! {
                received = self.socket.recv() => match received {
                    Some(Ok(message)) => self.receive(message).await,
                    _ => Err(Closed),
                },
                Ok(()) = changed.changed() => self.flush().await,
                command = commands.recv() => match command {
                    Ok(Command::Drop) | Err(broadcast::error::RecvError::Closed) => Err(Closed),
                    Ok(Command::Reconnect) => {
                        self.send(&json!({"op": 7, "s": null, "t": null, "d": null})).await
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => Ok(()),
                },
            };
            if step.is_err() {
                return;
            }
        }
    }

    async fn send(&mut self, payload: &Value) -> Result<(), Closed> {
        let text = payload.to_string();
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| Closed)
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), Closed> {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.socket.send(Message::Close(Some(frame))).await;
        Err(Closed)
    }

    async fn receive(&mut self, message: Message) -> Result<(), Closed> {
        let text = match message {
            Message::Text(text) => text,
            Message::Close(frame) => {
                // Closing with 1000/1001 ends the session on Discord; other codes keep it
                // resumable.
                let code = frame.map(|f| f.code).unwrap_or(1005);
                if matches!(code, 1000 | 1001) {
                    if let Some(session) = &self.session {
                        let mut state = self.shared.state();
                        state.sessions.remove(session);
                        state.owners.remove(session);
                    }
                }
                return Err(Closed);
            }
            _ => return Ok(()),
        };
        let Ok(payload) = serde_json::from_str::<Value>(&text) else {
            return self.close(4002, "Error while decoding payload.").await;
        };
        let token_ok = |d: &Value| d["token"].as_str() == Some(self.shared.token.as_str());
        match payload["op"].as_u64() {
            Some(1) => {
                self.shared.heartbeats.fetch_add(1, Ordering::Relaxed);
                if self.shared.ack_heartbeats.load(Ordering::Relaxed) {
                    self.send(&json!({"op": 11, "s": null, "t": null, "d": null}))
                        .await?;
                }
                Ok(())
            }
            Some(2) => {
                self.shared.identifies.fetch_add(1, Ordering::Relaxed);
                let d = &payload["d"];
                if !token_ok(d) {
                    return self.close(4004, "Authentication failed.").await;
                }
                if self.session.is_some() {
                    return self.close(4005, "Already authenticated.").await;
                }
                let intents = d["intents"].as_u64().unwrap_or(0);
                if intents & MESSAGE_CONTENT_INTENT != 0
                    && self.shared.disallow_message_content.load(Ordering::Relaxed)
                {
                    return self.close(4014, "Disallowed intent(s).").await;
                }
                self.identify();
                self.flush().await
            }
            Some(6) => {
                self.shared.resumes.fetch_add(1, Ordering::Relaxed);
                let d = &payload["d"];
                if !token_ok(d) {
                    return self.close(4004, "Authentication failed.").await;
                }
                let session = d["session_id"].as_str().unwrap_or_default().to_string();
                let seq = d["seq"].as_u64().unwrap_or(0);
                if self.resume(&session, seq) {
                    self.flush().await
                } else {
                    self.send(&json!({"op": 9, "s": null, "t": null, "d": false}))
                        .await
                }
            }
            _ => self.close(4001, "Unknown opcode.").await,
        }
    }

    /// Start a session: log `READY`, then whatever was pushed before any session existed.
    fn identify(&mut self) {
        let mut state = self.shared.state();
        let session = format!("fake-session-{}", state.snowflake());
        state.sessions.insert(session.clone(), Vec::new());
        state.owners.insert(session.clone(), self.id);
        state.current = Some(session.clone());
        let ready = json!({
            "v": 10,
            "user": {
                "id": self.shared.bot_user_id,
                "username": "moltbot",
                "discriminator": "0",
                "global_name": null,
                "bot": true,
            },
            "guilds": [],
            "session_id": session,
            "resume_gateway_url": self.shared.gateway_url,
            "application": {"id": self.shared.bot_user_id, "flags": 0},
        });
        state.append(&session, "READY", ready);
        for (t, d) in std::mem::take(&mut state.pending) {
            state.append(&session, &t, d);
        }
        self.session = Some(session);
        self.sent_up_to = 0;
    }

    /// Take over a known session from `seq` on, logging `RESUMED` after the events to
    /// replay. False for an unknown session.
    fn resume(&mut self, session: &str, seq: u64) -> bool {
        let mut state = self.shared.state();
        if !state.sessions.contains_key(session) {
            return false;
        }
        state.owners.insert(session.to_string(), self.id);
        state.current = Some(session.to_string());
        state.append(session, "RESUMED", json!({}));
        self.session = Some(session.to_string());
        self.sent_up_to = seq;
        true
    }

    /// Write the dispatches of this socket's session it has not written yet.
    async fn flush(&mut self) -> Result<(), Closed> {
        let Some(session) = &self.session else {
            return Ok(());
        };
        let pending: Vec<Value> = {
            let state = self.shared.state();
            if state.owners.get(session) != Some(&self.id) {
                // Another socket resumed this session: Discord drops the old one.
                return Err(Closed);
            }
            let log = state.sessions.get(session).map(Vec::as_slice);
            let from = usize::try_from(self.sent_up_to).unwrap_or(usize::MAX);
            log.unwrap_or_default().iter().skip(from).cloned().collect()
        };
        for payload in pending {
            self.send(&payload).await?;
            self.sent_up_to += 1;
        }
        Ok(())
    }
}
