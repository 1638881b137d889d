//! A fake Telegram Bot API server: a real HTTP server on loopback speaking
//! `/bot<TOKEN>/<method>`, with a test side to queue user messages and read what the bot sent.
//!
//! # Layout
//! - [`FakeTelegram`] (here): the server and its test-side API.
//! - `server` (private): the `/bot<TOKEN>/<method>` routes.
//! - [`markdown_v2`]: Telegram's MarkdownV2 parser, so `sendMessage` refuses badly escaped
//!   text the way Telegram does.
//!
//! Methods (case-insensitive, like Telegram's; parameters as JSON, form or query):
//! `getMe`, `getUpdates` (long polling, `offset` confirms, `limit`, 409 while a webhook is
//! set or when a newer `getUpdates` call takes over), `sendMessage` (4096-character limit,
//! MarkdownV2 validation), `sendChatAction`, `setWebhook`, `deleteWebhook`,
//! `getWebhookInfo`. A wrong token gets 401; failures can be injected per method.
//!
//! Nothing sleeps: long polls wait on a [`Notify`] that every new update wakes.

use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

pub mod markdown_v2;
mod server;

pub use markdown_v2::{parse_markdown_v2, MessageEntity, ParsedText};

/// Telegram's limit for a message, in characters after entity parsing.
pub const MAX_MESSAGE_CHARS: usize = 4096;

/// A message the bot sent.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: String,
    /// The text as sent, with its markup.
    pub text: String,
    pub parse_mode: Option<String>,
    /// What the user sees: the text after markup parsing.
    pub rendered: String,
    /// Entities found by the MarkdownV2 parser.
    pub entities: Vec<MessageEntity>,
    /// `reply_parameters.message_id` (or the older `reply_to_message_id`).
    pub reply_to: Option<i64>,
    pub message_thread_id: Option<i64>,
    /// All parameters of the call.
    pub params: Value,
}

/// A `sendChatAction` call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatAction {
    pub chat_id: String,
    pub action: String,
}

/// What `setWebhook` registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Webhook {
    pub url: String,
    pub secret_token: Option<String>,
}

/// A running fake Telegram. Dropping it stops the server.
pub struct FakeTelegram {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    token: String,
    bot_id: i64,
    bot_username: String,
    // A std mutex: held only while reading or changing the state, never across an `.await`.
    inner: Mutex<Inner>,
    /// Woken when updates arrive, a webhook is set, or a newer poll takes over.
    updates_changed: Notify,
    /// Woken when the bot sends a message.
    sent_changed: Notify,
}

#[derive(Default)]
struct Inner {
    pending: VecDeque<Value>,
    last_update_id: i64,
    last_message_id: i64,
    confirmed_offset: i64,
    /// Bumped by every `getUpdates`; an older poll still waiting gets 409.
    poll_generation: u64,
    sent: Vec<SentMessage>,
    actions: Vec<ChatAction>,
    /// Injected answers per lower-case method name, used once each.
    failures: HashMap<String, VecDeque<(u16, Value)>>,
    reject_markdown: bool,
    webhook: Option<Webhook>,
    /// Calls per lower-case method name, including failed ones.
    calls: HashMap<String, u64>,
    last_get_updates: Option<Value>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl FakeTelegram {
    /// Start a fake that accepts `token` (`"123:ABC"`; the number before `:` is the bot id,
    /// as with real tokens). The bot's username is `moltbot_test_bot`.
    pub async fn start(token: &str) -> Self {
        // Binding port 0 on loopback only fails without a loopback interface; a fake is test
        // code, so failing loudly is the useful behaviour.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake Telegram");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let bot_id = token
            .split(':')
            .next()
            .and_then(|id| id.parse().ok())
            .unwrap_or(1000);
        let shared = Arc::new(Shared {
            token: token.to_string(),
            bot_id,
            bot_username: "moltbot_test_bot".to_string(),
            inner: Mutex::new(Inner::default()),
            updates_changed: Notify::new(),
            sent_changed: Notify::new(),
        });
        let app = server::router(shared.clone());
        let task = tokio::spawn(async move {
            // Serving ends only with an accept error; the task is aborted on drop.
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// The `api_base` to configure: `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn token(&self) -> &str {
        &self.shared.token
    }

    pub fn bot_id(&self) -> i64 {
        self.shared.bot_id
    }

    /// Without the `@`.
    pub fn bot_username(&self) -> &str {
        &self.shared.bot_username
    }

    // -----------------------------------------------------------------------------------------
    // Users writing to the bot.

    /// Queue a direct message from user `from_id` in private chat `chat_id`; returns its
    /// `update_id`.
    pub fn push_message(&self, chat_id: i64, from_id: i64, text: &str) -> i64 {
        let update = self.private_message_update(chat_id, from_id, text);
        self.push_update(update)
    }

    /// Queue a message in supergroup `chat_id`. Mentions (`@name`) and commands (`/cmd`,
    /// `/cmd@bot`) get their entities, as Telegram adds them.
    pub fn push_group_message(&self, chat_id: i64, from_id: i64, text: &str) -> i64 {
        let update = self.group_message_update(chat_id, from_id, text);
        self.push_update(update)
    }

    /// Queue any update; an `update_id` is assigned if it has none. Returns the id.
    pub fn push_update(&self, mut update: Value) -> i64 {
        let id = {
            let mut inner = self.shared.lock();
            let id = match update.get("update_id").and_then(Value::as_i64) {
                Some(id) => id,
                None => {
                    let id = inner.last_update_id + 1;
                    update["update_id"] = json!(id);
                    id
                }
            };
            inner.last_update_id = inner.last_update_id.max(id);
            inner.pending.push_back(update);
            id
        };
        self.shared.updates_changed.notify_waiters();
        id
    }

    /// An update with a direct message and fresh ids, not queued (for [`Self::post_webhook`]).
    pub fn private_message_update(&self, chat_id: i64, from_id: i64, text: &str) -> Value {
        let chat = json!({"id": chat_id, "type": "private", "first_name": user_name(from_id)});
        self.message_update(chat, from_id, text)
    }

    /// An update with a supergroup message and fresh ids, not queued.
    pub fn group_message_update(&self, chat_id: i64, from_id: i64, text: &str) -> Value {
        let chat = json!({"id": chat_id, "type": "supergroup", "title": "Fake group"});
        self.message_update(chat, from_id, text)
    }

    fn message_update(&self, chat: Value, from_id: i64, text: &str) -> Value {
        let (update_id, message_id) = {
            let mut inner = self.shared.lock();
            inner.last_update_id += 1;
            inner.last_message_id += 1;
            (inner.last_update_id, inner.last_message_id)
        };
        let mut message = json!({
            "message_id": message_id,
            "from": {
                "id": from_id,
                "is_bot": false,
                "first_name": user_name(from_id),
                "username": format!("user{from_id}"),
            },
            "chat": chat,
            "date": unix_now(),
            "text": text,
        });
        let entities = auto_entities(text);
        if !entities.is_empty() {
            message["entities"] = Value::Array(entities);
        }
        json!({"update_id": update_id, "message": message})
    }

    /// Deliver `update` to a webhook the way Telegram does (JSON body, the secret in
    /// `X-Telegram-Bot-Api-Secret-Token`). Panics if `url` cannot be reached.
    pub async fn post_webhook(
        &self,
        url: &str,
        secret: Option<&str>,
        update: Value,
    ) -> reqwest::Response {
        let mut request = reqwest::Client::new().post(url).json(&update);
        if let Some(secret) = secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        request
            .send()
            .await
            .unwrap_or_else(|e| panic!("posting to the webhook at {url} failed: {e}"))
    }

    // -----------------------------------------------------------------------------------------
    // What the bot did.

    pub fn sent(&self) -> Vec<SentMessage> {
        self.shared.lock().sent.clone()
    }

    /// Wait until at least `n` messages were sent or `timeout` passed; returns them all.
    pub async fn wait_sent(&self, n: usize, timeout: Duration) -> Vec<SentMessage> {
        let deadline = Instant::now() + timeout;
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

    pub fn chat_actions(&self) -> Vec<ChatAction> {
        self.shared.lock().actions.clone()
    }

    /// Calls of `method` (any case), including refused ones.
    pub fn calls(&self, method: &str) -> u64 {
        let inner = self.shared.lock();
        inner
            .calls
            .get(&method.to_ascii_lowercase())
            .copied()
            .unwrap_or(0)
    }

    pub fn get_updates_calls(&self) -> u64 {
        self.calls("getUpdates")
    }

    /// The parameters of the last `getUpdates` call.
    pub fn last_get_updates(&self) -> Option<Value> {
        self.shared.lock().last_get_updates.clone()
    }

    /// Updates not yet confirmed by an `offset`.
    pub fn pending_updates(&self) -> usize {
        self.shared.lock().pending.len()
    }

    /// The highest `offset` a `getUpdates` call gave (0 before any).
    pub fn confirmed_offset(&self) -> i64 {
        self.shared.lock().confirmed_offset
    }

    pub fn webhook(&self) -> Option<Webhook> {
        self.shared.lock().webhook.clone()
    }

    // -----------------------------------------------------------------------------------------
    // Misbehaving on purpose.

    /// Answer the next `n` calls of `method` with HTTP `status` and `body`.
    pub fn fail_next(&self, method: &str, n: usize, status: u16, body: Value) {
        let mut inner = self.shared.lock();
        let queue = inner
            .failures
            .entry(method.to_ascii_lowercase())
            .or_default();
        queue.extend(std::iter::repeat_n((status, body), n));
    }

    /// Answer the next `n` `sendMessage` calls with HTTP `status` and `body`.
    pub fn fail_next_sends(&self, n: usize, status: u16, body: Value) {
        self.fail_next("sendMessage", n, status, body);
    }

    /// Answer the next `n` `sendMessage` calls with Telegram's 429.
    pub fn rate_limit_next_sends(&self, n: usize, retry_after_secs: u64) {
        self.fail_next_sends(n, 429, too_many_requests(retry_after_secs));
    }

    /// Refuse every message that has a `parse_mode` with "can't parse entities".
    pub fn reject_markdown(&self, reject: bool) {
        self.shared.lock().reject_markdown = reject;
    }

    /// Register a webhook as `setWebhook` would (getUpdates then answers 409).
    pub fn set_webhook(&self, url: &str, secret_token: Option<&str>) {
        self.shared.lock().webhook = Some(Webhook {
            url: url.to_string(),
            secret_token: secret_token.map(str::to_string),
        });
        self.shared.updates_changed.notify_waiters();
    }
}

impl FakeTelegram {
    /// Remove the webhook, as `deleteWebhook` would.
    pub fn delete_webhook(&self) {
        self.shared.lock().webhook = None;
    }
}

impl Drop for FakeTelegram {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Telegram's 429 body.
pub fn too_many_requests(retry_after_secs: u64) -> Value {
    json!({
        "ok": false,
        "error_code": 429,
        "description": format!("Too Many Requests: retry after {retry_after_secs}"),
        "parameters": {"retry_after": retry_after_secs},
    })
}

fn user_name(id: i64) -> String {
    format!("User {id}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// `mention` and `bot_command` entities, as Telegram adds them to incoming text; offsets in
/// UTF-16 units.
fn auto_entities(text: &str) -> Vec<Value> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let chars: Vec<char> = text.chars().collect();
    let mut entities = Vec::new();
    let mut offset = 0; // UTF-16 position of chars[i]
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let prev = i.checked_sub(1).map(|p| chars[p]);
        let starts = match c {
            '@' => prev.is_none_or(|p| !word(p)),
            '/' => prev.is_none_or(char::is_whitespace),
            _ => false,
        };
        let name_len = chars[i + 1..].iter().take_while(|c| word(**c)).count();
        if starts && name_len > 0 {
            let mut len = 1 + name_len;
            let kind = if c == '@' { "mention" } else { "bot_command" };
            if c == '/' && chars.get(i + len) == Some(&'@') {
                let bot_len = chars[i + len + 1..]
                    .iter()
                    .take_while(|c| word(**c))
                    .count();
                if bot_len > 0 {
                    len += 1 + bot_len;
                }
            }
            // Everything matched is ASCII: one UTF-16 unit per char.
            entities.push(json!({"type": kind, "offset": offset, "length": len}));
            offset += len;
            i += len;
            continue;
        }
        offset += c.len_utf16();
        i += 1;
    }
    entities
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_and_commands_get_entities_with_utf16_offsets() {
        let entities = auto_entities("🎉 @moltbot_test_bot hi /start@moltbot_test_bot x@y");
        assert_eq!(
            entities,
            vec![
                json!({"type": "mention", "offset": 3, "length": 17}),
                json!({"type": "bot_command", "offset": 24, "length": 23}),
            ]
        );
        assert!(auto_entities("plain text").is_empty());
    }

    #[tokio::test]
    async fn long_poll_returns_as_soon_as_an_update_arrives() {
        let fake = FakeTelegram::start("7:secret").await;
        let url = format!("{}/bot7:secret/getUpdates", fake.base_url());
        let client = reqwest::Client::new();
        let poll = tokio::spawn({
            let (client, url) = (client.clone(), url.clone());
            async move {
                let body = json!({"timeout": 30});
                client
                    .post(url)
                    .json(&body)
                    .send()
                    .await?
                    .json::<Value>()
                    .await
            }
        });
        while fake.get_updates_calls() == 0 {
            tokio::task::yield_now().await;
        }
        let id = fake.push_message(5, 5, "hi");
        let answer = tokio::time::timeout(Duration::from_secs(5), poll)
            .await
            .expect("the long poll returns early")
            .expect("the task ran")
            .expect("a JSON answer");
        assert_eq!(answer["result"][0]["update_id"], json!(id));

        // Confirming with a form-encoded offset drops the update.
        let confirmed = client
            .post(&url)
            .form(&[("offset", (id + 1).to_string())])
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        assert_eq!(confirmed["result"], json!([]));
        assert_eq!(
            (fake.pending_updates(), fake.confirmed_offset()),
            (0, id + 1)
        );

        let wrong = client
            .post(format!("{}/botnope/getMe", fake.base_url()))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401);
    }

    #[tokio::test]
    async fn send_message_validates_markdown_v2_and_length() {
        let fake = FakeTelegram::start("7:secret").await;
        let url = format!("{}/bot7:secret/SENDMESSAGE", fake.base_url());
        let client = reqwest::Client::new();
        let send = |body: Value| {
            let (client, url) = (client.clone(), url.clone());
            async move {
                let r = client.post(url).json(&body).send().await.unwrap();
                (r.status().as_u16(), r.json::<Value>().await.unwrap())
            }
        };
        let (status, body) =
            send(json!({"chat_id": 5, "text": "Hello.", "parse_mode": "MarkdownV2"})).await;
        assert_eq!(status, 400);
        assert_eq!(
            body["description"],
            "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        let (status, _) =
            send(json!({"chat_id": 5, "text": "*Hi*\\.", "parse_mode": "MarkdownV2"})).await;
        assert_eq!(status, 200);
        let (status, body) = send(json!({"chat_id": 5, "text": "x".repeat(4097)})).await;
        assert_eq!(
            (status, body["description"].as_str()),
            (400, Some("Bad Request: message is too long"))
        );
        let sent = fake.sent();
        assert_eq!(sent.len(), 1);
        assert_eq!(
            (sent[0].rendered.as_str(), sent[0].chat_id.as_str()),
            ("Hi.", "5")
        );
    }
}
