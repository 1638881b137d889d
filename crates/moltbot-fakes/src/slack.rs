//! A fake Slack: the Web API methods the adapter calls, and the test side acting as Slack
//! delivering signed Events API requests.
//!
//! - Web API side: `POST /api/auth.test` and `POST /api/chat.postMessage` (JSON bodies). A
//!   wrong bearer token gets HTTP 200 with `{"ok": false, "error": "invalid_auth"}`, as Slack
//!   answers; injected rate limits get 429 with `Retry-After`.
//! - Slack side: [`FakeSlack::deliver_dm`], [`FakeSlack::deliver_mention`] and
//!   [`FakeSlack::deliver_event`] post `event_callback` envelopes in the shape Slack sends,
//!   signed with `X-Slack-Signature` over `v0:<timestamp>:<body>`.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The workspace id in answers and envelopes.
pub const TEAM_ID: &str = "T0FAKE0001";

/// The app id in envelopes.
pub const APP_ID: &str = "A0FAKE0001";

/// Slack refuses `text` longer than this with `msg_too_long`.
const MAX_TEXT_CHARS: usize = 40_000;

/// A message the bot posted with `chat.postMessage`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackPost {
    pub channel: String,
    pub text: String,
    pub thread_ts: Option<String>,
    /// The `ts` the fake answered with.
    pub ts: String,
}

/// One `message` or `app_mention` event the test side delivers. Build it with
/// [`FakeSlack::dm_event`], [`FakeSlack::channel_event`] or [`FakeSlack::mention_event`]
/// and adjust the fields (a thread, a bot id, a subtype) before delivering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlackEvent {
    /// `message` or `app_mention`.
    pub kind: String,
    pub user: String,
    pub channel: String,
    /// `im`, `channel`, `group` or `mpim`; Slack sends none with `app_mention`.
    pub channel_type: Option<String>,
    pub text: String,
    pub ts: String,
    pub thread_ts: Option<String>,
    pub bot_id: Option<String>,
    pub subtype: Option<String>,
    /// The envelope's `event_id`; a retry carries the same one.
    pub event_id: String,
}

/// A running fake Slack. Dropping it stops the server.
pub struct FakeSlack {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    client: reqwest::Client,
}

struct Shared {
    bot_token: String,
    bot_user_id: String,
    counter: AtomicU64,
    auth_tests: AtomicU64,
    // std mutexes: each is held only to push, pop or clone, never across an `.await`.
    sent: Mutex<Vec<SlackPost>>,
    failures: Mutex<VecDeque<PostFailure>>,
    sent_changed: Notify,
}

#[derive(Clone)]
enum PostFailure {
    RateLimited { retry_after_secs: u64 },
    Error(String),
}

impl FakeSlack {
    /// A fake on `127.0.0.1:0` accepting `bot_token`, whose bot user is `bot_user_id`.
    ///
    /// # Panics
    /// If no loopback port can be bound (test code: failing loudly is the useful behaviour).
    pub async fn start(bot_token: &str, bot_user_id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake Slack API");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let shared = Arc::new(Shared {
            bot_token: bot_token.to_string(),
            bot_user_id: bot_user_id.to_string(),
            counter: AtomicU64::new(0),
            auth_tests: AtomicU64::new(0),
            sent: Mutex::new(Vec::new()),
            failures: Mutex::new(VecDeque::new()),
            sent_changed: Notify::new(),
        });
        let app = Router::new()
            .route("/api/auth.test", post(auth_test))
            .route("/api/chat.postMessage", post(post_message))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            // Ends only on an accept error; the task is aborted when the fake is dropped.
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            task,
            client: reqwest::Client::new(),
        }
    }

    /// `http://127.0.0.1:PORT/api`, the form `channels.slack.api_base` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn bot_user_id(&self) -> &str {
        &self.shared.bot_user_id
    }

    /// Messages posted so far, in order.
    pub fn sent(&self) -> Vec<SlackPost> {
        lock(&self.shared.sent).clone()
    }

    /// Wait until at least `n` messages were posted or `timeout` passed; what was posted by
    /// then.
    pub async fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<SlackPost> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let changed = self.shared.sent_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let sent = self.sent();
            if sent.len() >= n {
                return sent;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return self.sent();
            }
        }
    }

    /// `auth.test` calls received with the right token.
    pub fn auth_tests(&self) -> u64 {
        self.shared.auth_tests.load(Ordering::Relaxed)
    }

    /// Answer the next `n` posts with HTTP 429, `Retry-After: retry_after_secs` and
    /// `{"ok": false, "error": "ratelimited"}`.
    pub fn ratelimit_next_posts(&self, n: usize, retry_after_secs: u64) {
        let failure = PostFailure::RateLimited { retry_after_secs };
        lock(&self.shared.failures).extend(std::iter::repeat_n(failure, n));
    }

    /// Answer the next `n` posts with HTTP 200 and `{"ok": false, "error": error_code}`.
    pub fn fail_next_posts(&self, n: usize, error_code: &str) {
        let failure = PostFailure::Error(error_code.to_string());
        lock(&self.shared.failures).extend(std::iter::repeat_n(failure, n));
    }

    // -----------------------------------------------------------------------------------------
    // Slack's side.

    /// A fresh message timestamp (`1712345678.000100`), unique within this fake.
    pub fn next_ts(&self) -> String {
        let n = self.shared.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}.{:06}", unix_now(), n % 1_000_000)
    }

    /// A direct message from `user` in the DM channel `channel` (`D…`).
    pub fn dm_event(&self, user: &str, channel: &str, text: &str) -> SlackEvent {
        self.event("message", user, channel, Some("im"), text)
    }

    /// A message from `user` in the public channel `channel` (`C…`).
    pub fn channel_event(&self, user: &str, channel: &str, text: &str) -> SlackEvent {
        self.event("message", user, channel, Some("channel"), text)
    }

    /// An `app_mention` from `user` in `channel`: the text starts with `<@BOT>`.
    pub fn mention_event(&self, user: &str, channel: &str, text: &str) -> SlackEvent {
        let text = format!("<@{}> {text}", self.shared.bot_user_id);
        self.event("app_mention", user, channel, None, &text)
    }

    /// The `event_callback` envelope Slack posts for `event`.
    pub fn envelope(&self, event: &SlackEvent) -> Value {
        let mut inner = json!({
            "type": event.kind,
            "user": event.user,
            "text": event.text,
            "ts": event.ts,
            "team": TEAM_ID,
            "channel": event.channel,
            "event_ts": event.ts,
            "blocks": [{
                "type": "rich_text",
                "block_id": "fAkE1",
                "elements": [{"type": "rich_text_section",
                              "elements": [{"type": "text", "text": event.text}]}],
            }],
        });
        if event.bot_id.is_none() {
            inner["client_msg_id"] = json!(format!(
                "c0ffee00-0000-4000-8000-{:012}",
                ts_digits(&event.ts)
            ));
        }
        let optional = [
            ("channel_type", &event.channel_type),
            ("thread_ts", &event.thread_ts),
            ("bot_id", &event.bot_id),
            ("subtype", &event.subtype),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                inner[name] = json!(value);
            }
        }
        json!({
            "token": "XXYYZZfakeVerificationToken",
            "team_id": TEAM_ID,
            "context_team_id": TEAM_ID,
            "context_enterprise_id": null,
            "api_app_id": APP_ID,
            "event": inner,
            "type": "event_callback",
            "event_id": event.event_id,
            "event_time": unix_now(),
            "authorizations": [{
                "enterprise_id": null,
                "team_id": TEAM_ID,
                "user_id": self.shared.bot_user_id,
                "is_bot": true,
                "is_enterprise_install": false,
            }],
            "is_ext_shared_channel": false,
            "event_context": "4-eyJldCI6Im1lc3NhZ2UiLCJ0aWQiOiJUMEZBS0UwMDAxIn0",
        })
    }

    /// Deliver `event` to `url`, signed with `signing_secret`.
    pub async fn deliver_event(
        &self,
        url: &str,
        signing_secret: &str,
        event: &SlackEvent,
    ) -> reqwest::Response {
        self.post_signed(url, signing_secret, &self.envelope(event), None)
            .await
    }

    /// Deliver `event` again as Slack's retry number `retry_num` (after no 200 in 3 s).
    pub async fn deliver_event_retry(
        &self,
        url: &str,
        signing_secret: &str,
        event: &SlackEvent,
        retry_num: u32,
    ) -> reqwest::Response {
        self.post_signed(url, signing_secret, &self.envelope(event), Some(retry_num))
            .await
    }

    /// Deliver a direct message from `user` in the DM channel `channel`.
    pub async fn deliver_dm(
        &self,
        url: &str,
        signing_secret: &str,
        user: &str,
        channel: &str,
        text: &str,
    ) -> reqwest::Response {
        let event = self.dm_event(user, channel, text);
        self.deliver_event(url, signing_secret, &event).await
    }

    /// Deliver an `app_mention` from `user` in `channel` (text prefixed with `<@BOT>`).
    pub async fn deliver_mention(
        &self,
        url: &str,
        signing_secret: &str,
        user: &str,
        channel: &str,
        text: &str,
    ) -> reqwest::Response {
        let event = self.mention_event(user, channel, text);
        self.deliver_event(url, signing_secret, &event).await
    }

    /// The `url_verification` handshake Slack sends when the Request URL is saved.
    pub async fn deliver_url_verification(
        &self,
        url: &str,
        signing_secret: &str,
        challenge: &str,
    ) -> reqwest::Response {
        let body = json!({
            "token": "XXYYZZfakeVerificationToken",
            "challenge": challenge,
            "type": "url_verification",
        });
        self.post_signed(url, signing_secret, &body, None).await
    }

    /// Post `body` with the given timestamp header and, when given, signature header.
    ///
    /// # Panics
    /// If the events URL cannot be reached at all.
    pub async fn deliver_raw(
        &self,
        url: &str,
        body: impl Into<Vec<u8>>,
        timestamp: &str,
        signature: Option<&str>,
    ) -> reqwest::Response {
        self.post(url, body.into(), timestamp, signature, None)
            .await
    }

    fn event(
        &self,
        kind: &str,
        user: &str,
        channel: &str,
        channel_type: Option<&str>,
        text: &str,
    ) -> SlackEvent {
        let ts = self.next_ts();
        SlackEvent {
            kind: kind.to_string(),
            user: user.to_string(),
            channel: channel.to_string(),
            channel_type: channel_type.map(str::to_string),
            text: text.to_string(),
            event_id: format!("Ev0FAKE{:010}", ts_digits(&ts) % 10_000_000_000),
            ts,
            thread_ts: None,
            bot_id: None,
            subtype: None,
        }
    }

    async fn post_signed(
        &self,
        url: &str,
        signing_secret: &str,
        body: &Value,
        retry_num: Option<u32>,
    ) -> reqwest::Response {
        let body = body.to_string().into_bytes();
        let timestamp = unix_now().to_string();
        let signature = signature(signing_secret, &timestamp, &body);
        self.post(url, body, &timestamp, Some(&signature), retry_num)
            .await
    }

    async fn post(
        &self,
        url: &str,
        body: Vec<u8>,
        timestamp: &str,
        signature: Option<&str>,
        retry_num: Option<u32>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("user-agent", "Slackbot 1.0 (+https://api.slack.com/robots)")
            .header("x-slack-request-timestamp", timestamp)
            .body(body);
        if let Some(signature) = signature {
            request = request.header("x-slack-signature", signature);
        }
        if let Some(n) = retry_num {
            request = request
                .header("x-slack-retry-num", n.to_string())
                .header("x-slack-retry-reason", "http_timeout");
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("the events URL {url} cannot be reached: {e}"))
    }
}

impl Drop for FakeSlack {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `v0=<hex>`: the `X-Slack-Signature` Slack sends for `body` at `timestamp`.
pub fn signature(signing_secret: &str, timestamp: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(signing_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(b"v0:");
    mac.update(timestamp.as_bytes());
    mac.update(b":");
    mac.update(body);
    format!("v0={}", hex::encode(mac.finalize().into_bytes()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The digits of a `ts` as a number, for ids derived from it.
fn ts_digits(ts: &str) -> u64 {
    ts.chars().filter(char::is_ascii_digit).fold(0u64, |n, c| {
        n.wrapping_mul(10).wrapping_add(u64::from(c as u8 - b'0'))
    })
}

// ---------------------------------------------------------------------------------------------
// Web API side.

fn slack_error(error: &str) -> Response {
    Json(json!({"ok": false, "error": error})).into_response()
}

/// The bearer token, if it is the bot's.
fn authorized(shared: &Shared, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        == Some(shared.bot_token.as_str())
}

async fn auth_test(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if !authorized(&shared, &headers) {
        return slack_error("invalid_auth");
    }
    shared.auth_tests.fetch_add(1, Ordering::Relaxed);
    Json(json!({
        "ok": true,
        "url": "https://moltbot-test.slack.com/",
        "team": "Moltbot Test",
        "user": "moltbot",
        "team_id": TEAM_ID,
        "user_id": shared.bot_user_id,
        "bot_id": "B0FAKE0001",
        "is_enterprise_install": false,
    }))
    .into_response()
}

async fn post_message(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&shared, &headers) {
        return slack_error("invalid_auth");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return slack_error("invalid_json");
    };
    let Some(channel) = request["channel"].as_str().filter(|c| !c.is_empty()) else {
        return slack_error("channel_not_found");
    };
    let text = request["text"].as_str().unwrap_or_default();
    if text.is_empty() {
        return slack_error("no_text");
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return slack_error("msg_too_long");
    }
    let failure = lock(&shared.failures).pop_front();
    match failure {
        Some(PostFailure::RateLimited { retry_after_secs }) => {
            let retry_after = [(header::RETRY_AFTER, retry_after_secs.to_string())];
            let body = Json(json!({"ok": false, "error": "ratelimited"}));
            return (StatusCode::TOO_MANY_REQUESTS, retry_after, body).into_response();
        }
        Some(PostFailure::Error(code)) => return slack_error(&code),
        None => {}
    }
    let ts = {
        let n = shared.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{}.{:06}", unix_now(), n % 1_000_000)
    };
    let thread_ts = request["thread_ts"].as_str().map(str::to_string);
    lock(&shared.sent).push(SlackPost {
        channel: channel.to_string(),
        text: text.to_string(),
        thread_ts: thread_ts.clone(),
        ts: ts.clone(),
    });
    shared.sent_changed.notify_waiters();
    let mut message = json!({
        "type": "message",
        "subtype": null,
        "text": text,
        "ts": ts,
        "user": shared.bot_user_id,
        "bot_id": "B0FAKE0001",
    });
    if let Some(thread_ts) = thread_ts {
        message["thread_ts"] = json!(thread_ts);
    }
    Json(json!({"ok": true, "channel": channel, "ts": ts, "message": message})).into_response()
}
