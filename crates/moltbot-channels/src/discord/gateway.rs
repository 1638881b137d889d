//! The Discord gateway: one WebSocket that delivers messages as dispatches.
//!
//! A connection goes: Hello (op 10, the heartbeat interval) → heartbeats (op 1, answered by
//! op 11) every interval, the first after `interval × random` → Identify (op 2) for a new
//! session or Resume (op 6) for a known one → dispatches (op 0) numbered by `s`. The server
//! may ask for an immediate heartbeat (op 1), a reconnect (op 7), or declare the session
//! invalid (op 9; `d` says whether it can be resumed).
//!
//! Reconnects resume whenever a session is known, so Discord replays what was dispatched
//! meanwhile; the sink drops the duplicates by message id. The session (id, resume URL, our
//! user id, last sequence number) is the cursor [`CURSOR_KEY`], saved with every accepted
//! message, so it also survives a restart.
//!
//! Shutdown closes the socket with [`CLOSE_RESUMABLE`] (4000), not 1000: Discord ends the
//! session on 1000/1001, and keeping it lets the next start resume and receive what arrived
//! while we were down (within Discord's resume window).

use super::{inbound_from_message, DiscordChannel, KIND};
use futures::{SinkExt, StreamExt};
use moltbot_core::channel::Cursor;
use moltbot_core::{ChannelError, ChannelState, InboundSink};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout, Instant};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// `GUILD_MESSAGES | DIRECT_MESSAGES | MESSAGE_CONTENT`.
const INTENTS: u64 = (1 << 9) | (1 << 12) | (1 << 15);
/// The sink cursor holding the [`Session`] as JSON.
pub(super) const CURSOR_KEY: &str = "gateway_session";
/// The close code we leave with: anything but 1000/1001 keeps the session resumable.
const CLOSE_RESUMABLE: u16 = 4000;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
const HELLO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long closing politely may take before the socket is just dropped.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);
const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Sane bounds on the heartbeat interval a server announces (Discord's is 41.25 s).
const MIN_HEARTBEAT: Duration = Duration::from_millis(50);
const MAX_HEARTBEAT: Duration = Duration::from_secs(600);

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What resuming needs; saved as the [`CURSOR_KEY`] cursor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Session {
    session_id: String,
    resume_gateway_url: String,
    /// Our bot's user id: `READY` is not sent again on resume, and mentions are matched
    /// against it.
    user_id: String,
    /// The last sequence number whose message (if any) is stored.
    seq: Option<u64>,
}

/// How one connection ended.
enum Outcome {
    /// `shutdown` fired.
    Shutdown,
    /// Reconnect now and resume (op 7, a resumable op 9, a missed heartbeat ACK).
    Resume(String),
    /// The session is gone: identify afresh, after a random 1–5 s if `wait` (op 9 `false`,
    /// as Discord asks).
    Fresh { wait: bool, why: String },
    /// The connection failed: reconnect with backoff and resume if a session is known.
    Failed(String),
    /// Cannot recover: stop and return this.
    Fatal(ChannelError),
}

pub(super) async fn run(
    channel: &DiscordChannel,
    sink: Arc<dyn InboundSink>,
    shutdown: CancellationToken,
) -> Result<(), ChannelError> {
    channel.set_state(ChannelState::Connecting);
    let session = load_session(sink.as_ref()).await;
    let mut gateway = Gateway {
        channel,
        sink,
        shutdown,
        seq: session.as_ref().and_then(|s| s.seq),
        session,
        gateway_url: channel.gateway_url.clone(),
        ready: false,
    };
    let result = gateway.run().await;
    channel.set_state(match &result {
        Ok(()) => ChannelState::Stopped,
        Err(e) => ChannelState::Error {
            detail: e.to_string(),
        },
    });
    result
}

/// A saved session, if there is a usable one. A store failure here is not fatal: the
/// adapter identifies afresh (messages sent while it was down are then not replayed).
async fn load_session(sink: &dyn InboundSink) -> Option<Session> {
    match sink.cursor(KIND, CURSOR_KEY).await {
        Ok(Some(value)) if !value.is_empty() => match serde_json::from_str::<Session>(&value) {
            Ok(s) if !s.session_id.is_empty() && !s.resume_gateway_url.is_empty() => Some(s),
            _ => {
                tracing::warn!(
                    channel = KIND,
                    "saved gateway session unreadable, identifying"
                );
                None
            }
        },
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(channel = KIND, cause = %e, "cannot read the saved gateway session");
            None
        }
    }
}

struct Gateway<'a> {
    channel: &'a DiscordChannel,
    sink: Arc<dyn InboundSink>,
    shutdown: CancellationToken,
    /// The session to resume, once identified.
    session: Option<Session>,
    /// The last sequence number received (sent in heartbeats and Resume).
    seq: Option<u64>,
    /// Where to identify: from config or `GET /gateway/bot`, asked once.
    gateway_url: Option<String>,
    /// The current connection got `READY` or `RESUMED`.
    ready: bool,
}

impl Gateway<'_> {
    async fn run(&mut self) -> Result<(), ChannelError> {
        let mut backoff = MIN_BACKOFF;
        loop {
            self.ready = false;
            let outcome = self.connect().await;
            if self.ready {
                backoff = MIN_BACKOFF;
            }
            let wait = match outcome {
                Outcome::Shutdown => return Ok(()),
                Outcome::Fatal(e) => {
                    tracing::error!(channel = KIND, cause = %e, "discord gateway stopped");
                    return Err(e);
                }
                // Straight back after a connection that worked; a server that asks to
                // reconnect before we are even ready gets the backoff like any failure.
                Outcome::Resume(why) if self.ready => {
                    tracing::info!(channel = KIND, why, "reconnecting to resume");
                    self.channel.set_state(ChannelState::Connecting);
                    Duration::ZERO
                }
                Outcome::Fresh { wait, why } => {
                    tracing::info!(
                        channel = KIND,
                        why,
                        "gateway session ended, identifying anew"
                    );
                    self.forget_session().await;
                    self.channel.set_state(ChannelState::Connecting);
                    if wait {
                        Duration::from_millis(rand::random_range(1000..=5000))
                    } else {
                        Duration::ZERO
                    }
                }
                Outcome::Resume(detail) | Outcome::Failed(detail) => {
                    tracing::warn!(
                        channel = KIND,
                        cause = %detail,
                        retry_in_s = backoff.as_secs(),
                        "discord gateway connection failed"
                    );
                    self.channel.set_state(ChannelState::Error { detail });
                    let wait = backoff;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    wait
                }
            };
            if !wait.is_zero() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => return Ok(()),
                    _ = tokio::time::sleep(wait) => {}
                }
            }
        }
    }

    /// One connection, from connecting to its end.
    async fn connect(&mut self) -> Outcome {
        let url = match self.url().await {
            Ok(url) => url,
            Err(_) if self.shutdown.is_cancelled() => return Outcome::Shutdown,
            Err(e @ ChannelError::Unauthorized(_)) => return Outcome::Fatal(e),
            Err(e) => return Outcome::Failed(e.to_string()),
        };
        let connecting = timeout(CONNECT_TIMEOUT, tokio_tungstenite::connect_async(url));
        let mut socket = tokio::select! {
            _ = self.shutdown.cancelled() => return Outcome::Shutdown,
            connected = connecting => match connected {
                Ok(Ok((socket, _response))) => socket,
                Ok(Err(e)) => return Outcome::Failed(format!("cannot connect to the gateway: {e}")),
                Err(_) => return Outcome::Failed("connecting to the gateway timed out".into()),
            },
        };
        let outcome = self.converse(&mut socket).await;
        if !matches!(outcome, Outcome::Fatal(_)) {
            // Best effort: the socket is dropped right after either way.
            let frame = CloseFrame {
                code: CloseCode::from(CLOSE_RESUMABLE),
                reason: "moltbot reconnecting or shutting down".into(),
            };
            let _ = timeout(CLOSE_TIMEOUT, socket.close(Some(frame))).await;
        }
        if matches!(outcome, Outcome::Shutdown) {
            // Persist how far we got so the next start replays less.
            self.save_session().await;
        }
        outcome
    }

    /// Resume where the session lives; identify on the configured or advertised URL.
    async fn url(&mut self) -> Result<String, ChannelError> {
        if let Some(session) = &self.session {
            return Ok(with_query(&session.resume_gateway_url));
        }
        if let Some(url) = &self.gateway_url {
            return Ok(with_query(url));
        }
        let url = tokio::select! {
            _ = self.shutdown.cancelled() => {
                return Err(ChannelError::Transient("shutting down".into()));
            }
            url = self.channel.rest.gateway_url() => url?,
        };
        self.gateway_url = Some(url.clone());
        Ok(with_query(&url))
    }

    /// Hello, Identify or Resume, then heartbeats and dispatches until the connection ends.
    async fn converse(&mut self, socket: &mut Socket) -> Outcome {
        let hello = tokio::select! {
            _ = self.shutdown.cancelled() => return Outcome::Shutdown,
            hello = timeout(HELLO_TIMEOUT, next_payload(socket)) => match hello {
                Ok(Ok(payload)) => payload,
                Ok(Err(outcome)) => return outcome,
                Err(_) => return Outcome::Failed("no Hello from the gateway".into()),
            },
        };
        let Some(interval_ms) = hello["d"]["heartbeat_interval"]
            .as_u64()
            .filter(|_| hello["op"] == 10)
        else {
            return Outcome::Failed(format!("expected Hello (op 10), got op {}", hello["op"]));
        };
        let interval = Duration::from_millis(interval_ms).clamp(MIN_HEARTBEAT, MAX_HEARTBEAT);
        if let Err(outcome) = self.hello_back(socket).await {
            return outcome;
        }

        let mut next_beat = Instant::now() + interval.mul_f64(rand::random::<f64>());
        let mut awaiting_ack = false;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return Outcome::Shutdown,
                _ = sleep_until(next_beat) => {
                    if awaiting_ack {
                        // A zombied connection: Discord asks to drop it and resume.
                        return Outcome::Resume("no heartbeat ACK since the last heartbeat".into());
                    }
                    if let Err(outcome) = self.heartbeat(socket).await {
                        return outcome;
                    }
                    awaiting_ack = true;
                    next_beat = Instant::now() + interval;
                }
                payload = next_payload(socket) => {
                    let payload = match payload {
                        Ok(payload) => payload,
                        Err(outcome) => return outcome,
                    };
                    let step = match payload["op"].as_u64() {
                        Some(0) => self.dispatch(payload).await,
                        Some(1) => self.heartbeat(socket).await,
                        Some(7) => Err(Outcome::Resume("the gateway asked to reconnect".into())),
                        Some(9) if payload["d"] == true && self.session.is_some() => {
                            Err(Outcome::Resume("invalid session, resumable".into()))
                        }
                        Some(9) => Err(Outcome::Fresh {
                            wait: true,
                            why: "invalid session".into(),
                        }),
                        Some(11) => {
                            awaiting_ack = false;
                            Ok(())
                        }
                        _ => Ok(()),
                    };
                    if let Err(outcome) = step {
                        return outcome;
                    }
                }
            }
        }
    }

    /// Resume a known session, or identify.
    async fn hello_back(&self, socket: &mut Socket) -> Result<(), Outcome> {
        let token = self.channel.token.expose();
        // These payloads hold the token: they are sent and never logged.
        let payload = match &self.session {
            Some(session) => json!({
                "op": 6,
                "d": {"token": token, "session_id": session.session_id, "seq": self.seq},
            }),
            None => json!({
                "op": 2,
                "d": {
                    "token": token,
                    "intents": INTENTS,
                    "properties": {
                        "os": std::env::consts::OS,
                        "browser": "moltbot",
                        "device": "moltbot",
                    },
                },
            }),
        };
        send(socket, &payload).await
    }

    async fn heartbeat(&self, socket: &mut Socket) -> Result<(), Outcome> {
        send(socket, &json!({"op": 1, "d": self.seq})).await
    }

    /// Handle an op 0 dispatch.
    async fn dispatch(&mut self, payload: Value) -> Result<(), Outcome> {
        let previous_seq = self.seq;
        if let Some(s) = payload["s"].as_u64() {
            self.seq = Some(s);
        }
        let d = &payload["d"];
        match payload["t"].as_str().unwrap_or_default() {
            "READY" => {
                let session_id = d["session_id"].as_str().unwrap_or_default();
                let user_id = d["user"]["id"].as_str().unwrap_or_default();
                if session_id.is_empty() || user_id.is_empty() {
                    return Err(Outcome::Failed(
                        "READY without a session id or user id".into(),
                    ));
                }
                let resume_gateway_url = d["resume_gateway_url"]
                    .as_str()
                    .filter(|u| !u.is_empty())
                    .map(str::to_string)
                    .or_else(|| self.gateway_url.clone())
                    .unwrap_or_default();
                self.session = Some(Session {
                    session_id: session_id.to_string(),
                    resume_gateway_url,
                    user_id: user_id.to_string(),
                    seq: self.seq,
                });
                self.connected("identified").await;
            }
            "RESUMED" => self.connected("resumed").await,
            "MESSAGE_CREATE" => {
                let user_id = self.session.as_ref().map(|s| s.user_id.as_str());
                let Some(inbound) = inbound_from_message(d, user_id.unwrap_or_default()) else {
                    return Ok(());
                };
                // Stored inline, in dispatch order: the sink answers once the message is
                // durable (a local transaction), well within a heartbeat interval.
                let cursor = self.cursor();
                if let Err(e) = self.sink.accept(KIND, vec![inbound], cursor).await {
                    // Not stored: resume from before this message so Discord sends it again.
                    self.seq = previous_seq;
                    return Err(Outcome::Failed(format!("cannot store a message: {e}")));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn connected(&mut self, how: &str) {
        self.ready = true;
        self.channel.set_state(ChannelState::Connected);
        tracing::info!(channel = KIND, how, "discord gateway connected");
        self.save_session().await;
    }

    /// The session with the current sequence number, as a cursor.
    fn cursor(&self) -> Option<Cursor> {
        let mut session = self.session.clone()?;
        session.seq = self.seq;
        // Serializing a struct of strings and a number cannot fail.
        let value = serde_json::to_string(&session).ok()?;
        Some(Cursor {
            key: CURSOR_KEY.to_string(),
            value,
        })
    }

    async fn save_session(&self) {
        let Some(cursor) = self.cursor() else { return };
        if let Err(e) = self.sink.save_cursor(KIND, cursor).await {
            // Only costs a replay (or a fresh identify) after a restart.
            tracing::warn!(channel = KIND, cause = %e, "cannot save the gateway session");
        }
    }

    async fn forget_session(&mut self) {
        self.session = None;
        self.seq = None;
        let cursor = Cursor {
            key: CURSOR_KEY.to_string(),
            value: String::new(),
        };
        if let Err(e) = self.sink.save_cursor(KIND, cursor).await {
            tracing::warn!(channel = KIND, cause = %e, "cannot clear the gateway session");
        }
    }
}

async fn send(socket: &mut Socket, payload: &Value) -> Result<(), Outcome> {
    socket
        .send(Message::text(payload.to_string()))
        .await
        .map_err(|e| Outcome::Failed(format!("gateway send failed: {e}")))
}

/// The next JSON payload, skipping control frames; a close or an error ends the
/// connection with the matching outcome.
async fn next_payload(socket: &mut Socket) -> Result<Value, Outcome> {
    loop {
        match socket.next().await {
            Some(Ok(Message::Text(text))) => {
                return serde_json::from_str(&text).map_err(|e| {
                    Outcome::Failed(format!("gateway sent a payload that is not JSON: {e}"))
                });
            }
            Some(Ok(Message::Close(frame))) => {
                let code = frame.map(|f| u16::from(f.code));
                return Err(closed(code));
            }
            // We ask for JSON without compression, so binary frames are not ours to read;
            // pings are answered by tungstenite.
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(Outcome::Failed(format!("gateway connection failed: {e}"))),
            None => return Err(Outcome::Failed("gateway closed the connection".into())),
        }
    }
}

/// What a close code from Discord means for us.
fn closed(code: Option<u16>) -> Outcome {
    let rejected = |what: &str| {
        Outcome::Fatal(ChannelError::Rejected(format!(
            "Discord closed the gateway with {} ({what})",
            code.unwrap_or_default()
        )))
    };
    match code {
        Some(4004) => Outcome::Fatal(ChannelError::Unauthorized(
            "Discord closed the gateway with 4004 (authentication failed); \
             hint: check channels.discord.bot_token, it may have been reset"
                .into(),
        )),
        Some(4010) => rejected("invalid shard"),
        Some(4011) => rejected("sharding required; this adapter runs one shard"),
        Some(4012) => rejected("invalid API version"),
        Some(4013) => rejected("invalid intents"),
        Some(4014) => rejected(
            "disallowed intents; hint: enable the Message Content intent for this application \
             in the Discord developer portal, under Bot → Privileged Gateway Intents",
        ),
        Some(4007) => Outcome::Fresh {
            wait: false,
            why: "invalid sequence number on resume (4007)".into(),
        },
        Some(4009) => Outcome::Fresh {
            wait: false,
            why: "session timed out (4009)".into(),
        },
        Some(code) => Outcome::Failed(format!("gateway closed with code {code}")),
        None => Outcome::Failed("gateway closed without a code".into()),
    }
}

/// `url` with `v=10&encoding=json` added where missing.
fn with_query(url: &str) -> String {
    let mut url = url.trim().to_string();
    for (key, value) in [("v", "10"), ("encoding", "json")] {
        let has = url
            .split_once('?')
            .is_some_and(|(_, q)| q.split('&').any(|p| p.split('=').next() == Some(key)));
        if !has {
            url.push(if url.contains('?') { '&' } else { '?' });
            url.push_str(&format!("{key}={value}"));
        }
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_is_added_once() {
        assert_eq!(
            with_query("wss://gateway.discord.gg"),
            "wss://gateway.discord.gg?v=10&encoding=json"
        );
        assert_eq!(
            with_query("wss://gateway.discord.gg/?v=10&encoding=json"),
            "wss://gateway.discord.gg/?v=10&encoding=json"
        );
        assert_eq!(with_query("ws://h/g?v=9"), "ws://h/g?v=9&encoding=json");
    }

    #[test]
    fn close_codes_map_to_outcomes() {
        assert!(matches!(
            closed(Some(4004)),
            Outcome::Fatal(ChannelError::Unauthorized(_))
        ));
        match closed(Some(4014)) {
            Outcome::Fatal(ChannelError::Rejected(detail)) => {
                assert!(detail.contains("Message Content intent"), "{detail}")
            }
            _ => panic!("4014 must be fatal"),
        }
        assert!(matches!(
            closed(Some(4009)),
            Outcome::Fresh { wait: false, .. }
        ));
        assert!(matches!(closed(Some(4000)), Outcome::Failed(_)));
        assert!(matches!(closed(None), Outcome::Failed(_)));
    }

    #[test]
    fn intents_are_guild_and_direct_messages_with_content() {
        assert_eq!(INTENTS, 512 + 4096 + 32768);
    }
}
