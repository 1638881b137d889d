//! A fake WhatsApp Cloud API: the Graph endpoints the adapter calls, and the test side acting
//! as Meta delivering signed webhooks.
//!
//! - Graph side: `POST /{version}/{phone_number_id}/messages` (text messages, and read
//!   receipts with a typing indicator) and `GET /{version}/{phone_number_id}`; the version
//!   segment is optional. The bearer token is checked (wrong → 401, Graph code 190) and text
//!   bodies over 4096 characters are refused (400, code 100), as the real API does.
//! - Meta side: [`FakeWhatsApp::deliver_text`] and friends build payloads in the shape Meta
//!   documents, sign them with `X-Hub-Signature-256` and post them to a webhook URL.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
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

/// The Graph version in [`FakeWhatsApp::base_url`].
pub const GRAPH_VERSION: &str = "v21.0";

/// The business account id in delivered payloads.
pub const BUSINESS_ACCOUNT_ID: &str = "102290129340398";

/// The number shown to users, in delivered payloads' metadata.
pub const DISPLAY_PHONE_NUMBER: &str = "15550783881";

const MAX_BODY_CHARS: usize = 4096;

/// A text message the bot sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentWhatsApp {
    /// The `wamid…` the fake answered with.
    pub id: String,
    pub to: String,
    pub body: String,
    /// `context.message_id`: the message this one answers.
    pub context_message_id: Option<String>,
    pub preview_url: bool,
}

/// A running fake Cloud API. Dropping it stops the server.
pub struct FakeWhatsApp {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    client: reqwest::Client,
}

struct Shared {
    access_token: String,
    phone_number_id: String,
    counter: AtomicU64,
    token_checks: AtomicU64,
    // std mutexes: each is held only to push, pop or clone, never across an `.await`.
    sent: Mutex<Vec<SentWhatsApp>>,
    typing: Mutex<Vec<String>>,
    failures: Mutex<VecDeque<Failure>>,
    /// The last payload delivered by the test side, for [`FakeWhatsApp::redeliver`].
    last_payload: Mutex<Option<Vec<u8>>>,
    sent_changed: Notify,
}

#[derive(Clone, Copy)]
struct Failure {
    status: u16,
    code: i64,
}

impl FakeWhatsApp {
    /// A fake on `127.0.0.1:0` accepting `access_token` for `phone_number_id`.
    ///
    /// # Panics
    /// If no loopback port can be bound (test code: failing loudly is the useful behaviour).
    pub async fn start(access_token: &str, phone_number_id: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake WhatsApp API");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let shared = Arc::new(Shared {
            access_token: access_token.to_string(),
            phone_number_id: phone_number_id.to_string(),
            counter: AtomicU64::new(0),
            token_checks: AtomicU64::new(0),
            sent: Mutex::new(Vec::new()),
            typing: Mutex::new(Vec::new()),
            failures: Mutex::new(VecDeque::new()),
            last_payload: Mutex::new(None),
            sent_changed: Notify::new(),
        });
        let app = Router::new().fallback(graph).with_state(shared.clone());
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

    /// `http://127.0.0.1:PORT/v21.0`, the form `channels.whatsapp.api_base` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/{GRAPH_VERSION}", self.addr)
    }

    pub fn phone_number_id(&self) -> &str {
        &self.shared.phone_number_id
    }

    /// Text messages sent so far, in order.
    pub fn sent(&self) -> Vec<SentWhatsApp> {
        lock(&self.shared.sent).clone()
    }

    /// Wait until at least `n` messages were sent or `timeout` passed; what was sent by then.
    pub async fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<SentWhatsApp> {
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

    /// Message ids marked read with a typing indicator, in order.
    pub fn typing_indicators(&self) -> Vec<String> {
        lock(&self.shared.typing).clone()
    }

    /// `GET /{phone_number_id}` requests received (the adapter's token check).
    pub fn token_checks(&self) -> u64 {
        self.shared.token_checks.load(Ordering::Relaxed)
    }

    /// Answer the next `n` text sends with HTTP `http_status` and Graph error `graph_code`.
    pub fn fail_next_sends(&self, n: usize, http_status: u16, graph_code: i64) {
        let failure = Failure {
            status: http_status,
            code: graph_code,
        };
        lock(&self.shared.failures).extend(std::iter::repeat_n(failure, n));
    }

    /// Answer the next `n` text sends with 429 and code 130429 ("Rate limit hit").
    pub fn rate_limit_next_sends(&self, n: usize) {
        self.fail_next_sends(n, 429, 130_429);
    }

    // -----------------------------------------------------------------------------------------
    // Meta's side.

    /// A text message from `from` (named `name`) as Meta posts it; its `wamid…` id and the
    /// payload. `reply_to` fills `context` (the user answered one of our messages).
    pub fn text_payload(
        &self,
        from: &str,
        name: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> (String, Value) {
        let id = self.next_id();
        let mut message = json!({
            "from": from,
            "id": id,
            "timestamp": unix_now().to_string(),
            "text": {"body": text},
            "type": "text",
        });
        if let Some(replied) = reply_to {
            message["context"] = json!({"from": DISPLAY_PHONE_NUMBER, "id": replied});
        }
        let value = json!({
            "messaging_product": "whatsapp",
            "metadata": self.metadata(),
            "contacts": [{"profile": {"name": name}, "wa_id": from}],
            "messages": [message],
        });
        (id, self.envelope(value))
    }

    /// A status callback (`sent`, `delivered`, `read` or `failed`) for a message we sent.
    pub fn status_payload(&self, message_id: &str, recipient: &str, status: &str) -> Value {
        let mut entry = json!({
            "id": message_id,
            "status": status,
            "timestamp": unix_now().to_string(),
            "recipient_id": recipient,
            "conversation": {
                "id": "f2d6b0c6a1e14b0f8a4c2d9e0b7a5c31",
                "origin": {"type": "service"},
            },
            "pricing": {"billable": true, "pricing_model": "CBP", "category": "service"},
        });
        if status == "failed" {
            entry["errors"] = json!([{
                "code": 131047,
                "title": "Re-engagement message",
                "message": "Re-engagement message",
                "error_data": {"details": "Message failed to send because more than 24 hours \
                    have passed since the customer last replied to this number."},
            }]);
        }
        let value = json!({
            "messaging_product": "whatsapp",
            "metadata": self.metadata(),
            "statuses": [entry],
        });
        self.envelope(value)
    }

    /// Post a text message from `from` to `webhook_url`, signed with `app_secret`; its
    /// `wamid…` id and the webhook's answer.
    pub async fn deliver_text(
        &self,
        webhook_url: &str,
        app_secret: &str,
        from: &str,
        name: &str,
        text: &str,
    ) -> (String, reqwest::Response) {
        let (id, payload) = self.text_payload(from, name, text, None);
        (
            id,
            self.deliver_payload(webhook_url, app_secret, &payload)
                .await,
        )
    }

    /// Post `payload`, signed with `app_secret`; it becomes what [`Self::redeliver`] repeats.
    pub async fn deliver_payload(
        &self,
        webhook_url: &str,
        app_secret: &str,
        payload: &Value,
    ) -> reqwest::Response {
        let body = payload.to_string().into_bytes();
        *lock(&self.shared.last_payload) = Some(body.clone());
        let signature = signature(app_secret, &body);
        self.deliver_raw(webhook_url, body, Some(signature)).await
    }

    /// Post the last delivered payload again, byte for byte, as Meta does when it got no 200.
    ///
    /// # Panics
    /// If nothing was delivered before.
    pub async fn redeliver(&self, webhook_url: &str, app_secret: &str) -> reqwest::Response {
        let body = lock(&self.shared.last_payload)
            .clone()
            .expect("redeliver needs an earlier delivery");
        let signature = signature(app_secret, &body);
        self.deliver_raw(webhook_url, body, Some(signature)).await
    }

    /// Post a status callback for `message_id`, signed with `app_secret`.
    pub async fn deliver_status(
        &self,
        webhook_url: &str,
        app_secret: &str,
        message_id: &str,
        recipient: &str,
        status: &str,
    ) -> reqwest::Response {
        let payload = self.status_payload(message_id, recipient, status);
        self.deliver_payload(webhook_url, app_secret, &payload)
            .await
    }

    /// Post `body` as it is, with `X-Hub-Signature-256: <signature>` when given.
    ///
    /// # Panics
    /// If the webhook cannot be reached at all.
    pub async fn deliver_raw(
        &self,
        webhook_url: &str,
        body: impl Into<Vec<u8>>,
        signature: Option<String>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .post(webhook_url)
            .header("content-type", "application/json")
            .header("user-agent", "facebookexternalua")
            .body(body.into());
        if let Some(signature) = signature {
            request = request.header("x-hub-signature-256", signature);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("the webhook at {webhook_url} cannot be reached: {e}"))
    }

    fn next_id(&self) -> String {
        let n = self.shared.counter.fetch_add(1, Ordering::Relaxed) + 1;
        format!("wamid.HBgLMTU1NTAxMDAwMDAVAgASGBQz{n:016X}AA==")
    }

    fn metadata(&self) -> Value {
        json!({
            "display_phone_number": DISPLAY_PHONE_NUMBER,
            "phone_number_id": self.shared.phone_number_id,
        })
    }

    fn envelope(&self, value: Value) -> Value {
        json!({
            "object": "whatsapp_business_account",
            "entry": [{
                "id": BUSINESS_ACCOUNT_ID,
                "changes": [{"value": value, "field": "messages"}],
            }],
        })
    }
}

impl Drop for FakeWhatsApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `sha256=<hex>`: the `X-Hub-Signature-256` Meta sends for `body`.
pub fn signature(app_secret: &str, body: &[u8]) -> String {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let mut mac = Hmac::<Sha256>::new_from_slice(app_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------------------------
// Graph side.

fn graph_error(status: u16, code: i64, message: &str) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    let body = json!({"error": {
        "message": message,
        "type": "OAuthException",
        "code": code,
        "fbtrace_id": "AZx1fakeTrace0123",
    }});
    (status, Json(body)).into_response()
}

/// Every Graph request: `[/{version}]/{id}` and `[/{version}]/{id}/messages`.
async fn graph(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let mut segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let versioned = segments.first().is_some_and(|s| {
        s.strip_prefix('v')
            .is_some_and(|v| !v.is_empty() && v.chars().all(|c| c.is_ascii_digit() || c == '.'))
    });
    if versioned {
        segments.remove(0);
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if token != Some(shared.access_token.as_str()) {
        return graph_error(
            401,
            190,
            "Invalid OAuth access token - Cannot parse access token",
        );
    }
    match (method, segments.as_slice()) {
        (Method::GET, [id]) if *id == shared.phone_number_id => {
            shared.token_checks.fetch_add(1, Ordering::Relaxed);
            Json(json!({
                "verified_name": "Moltbot Test",
                "code_verification_status": "VERIFIED",
                "display_phone_number": "+1 555-078-3881",
                "quality_rating": "GREEN",
                "platform_type": "CLOUD_API",
                "throughput": {"level": "STANDARD"},
                "id": id,
            }))
            .into_response()
        }
        (Method::POST, [id, "messages"]) if *id == shared.phone_number_id => {
            post_message(&shared, &body)
        }
        (_, [id, ..]) => graph_error(
            400,
            100,
            &format!(
                "Unsupported request. Object with ID '{id}' does not exist, cannot be loaded \
                 due to missing permissions, or does not support this operation."
            ),
        ),
        (_, []) => graph_error(400, 100, "Unsupported request: no object id in the path"),
    }
}

fn post_message(shared: &Shared, body: &[u8]) -> Response {
    let Ok(request) = serde_json::from_slice::<Value>(body) else {
        return graph_error(
            400,
            100,
            "(#100) The parameter messaging_product is required.",
        );
    };
    if request["messaging_product"] != "whatsapp" {
        return graph_error(
            400,
            100,
            "(#100) The parameter messaging_product is required.",
        );
    }
    if request["status"] == "read" {
        let Some(id) = request["message_id"].as_str() else {
            return graph_error(400, 100, "(#100) The parameter message_id is required.");
        };
        if request["typing_indicator"]["type"] == "text" {
            lock(&shared.typing).push(id.to_string());
        }
        return Json(json!({"success": true})).into_response();
    }
    if request["type"] != "text" {
        return graph_error(400, 100, "(#100) Only text messages are faked.");
    }
    let Some(to) = request["to"].as_str().filter(|to| !to.is_empty()) else {
        return graph_error(400, 100, "(#100) The parameter to is required.");
    };
    let Some(text) = request["text"]["body"].as_str() else {
        return graph_error(400, 100, "(#100) The parameter text['body'] is required.");
    };
    if text.chars().count() > MAX_BODY_CHARS {
        return graph_error(
            400,
            100,
            "(#100) Param text['body'] must be at most 4096 characters long.",
        );
    }
    if let Some(failure) = lock(&shared.failures).pop_front() {
        let message = match failure.code {
            130_429 => "(#130429) Rate limit hit".to_string(),
            code => format!("(#{code}) Injected failure"),
        };
        return graph_error(failure.status, failure.code, &message);
    }
    let n = shared.counter.fetch_add(1, Ordering::Relaxed) + 1;
    let id = format!("wamid.HBgLMTU1NTAxMDAwMDAVAgARGBI{n:016X}AA==");
    lock(&shared.sent).push(SentWhatsApp {
        id: id.clone(),
        to: to.to_string(),
        body: text.to_string(),
        context_message_id: request["context"]["message_id"]
            .as_str()
            .map(str::to_string),
        preview_url: request["text"]["preview_url"] == true,
    });
    shared.sent_changed.notify_waiters();
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": id}],
    }))
    .into_response()
}
