//! Fake model providers: small real HTTP servers on loopback that speak the OpenAI
//! chat-completions and the Anthropic Messages wire formats.
//!
//! Tests point a real provider client at one of these instead of mocking our own traits, and
//! the load generator uses them as an upstream that answers instantly.
//!
//! # Layout
//! - [`FakeConfig`]: what a fake answers — echo or fixed text, an optional tool call, delays,
//!   injected failures, a required API key.
//! - [`FakeBuilder`]: chainable setters over a [`FakeConfig`], ending in `start()`.
//! - [`FakeOpenAi`] / [`FakeAnthropic`]: a fake listening on `127.0.0.1:0`, with request
//!   counters and the last request received; it stops accepting when dropped.
//! - [`serve_openai`] / [`serve_anthropic`]: run a fake on a given listener until the task is
//!   dropped (for the benchmark binary).
//! - [`RecordedRequest`]: headers and body of a request, for assertions.
//! - [`telegram`], [`whatsapp`], [`discord`], [`slack`]: fake messaging platforms speaking
//!   the real Bot API / Cloud API / gateway + REST / Events API wire formats, with the test
//!   side to inject user messages and read what the bot sent.
//! - `openai` / `anthropic` (private): the routes and the event sequences of each wire
//!   format; what to answer ([`Reply`], echo, `max_tokens` cut) is worked out here in `lib.rs`.
//!
//! Speed matters because the gateway is benchmarked against these at thousands of requests
//! per second: nothing sleeps unless a delay is configured, counters are atomics, and the one
//! lock (the last request) is only held to swap a value in or out.

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Router;
use futures::stream::{self, BoxStream, Stream, StreamExt};
use serde_json::Value;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod anthropic;
mod openai;

pub mod discord;
pub mod slack;
pub mod telegram;
pub mod whatsapp;

use anthropic::anthropic_router;
use openai::openai_router;

/// The text a fake answers with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `"echo: <last user message>"`; after a tool result, `"echo: <tool result>"` (so a
    /// test sees what the tool produced reach the model).
    Echo,
    /// Always this text.
    Fixed(String),
}

/// A tool call the fake asks for instead of answering with text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeToolCall {
    pub name: String,
    /// The arguments as a JSON text; streamed in a few fragments.
    pub arguments: String,
}

/// Ask for `call` when the last user message contains `when`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolRule {
    pub when: String,
    pub call: FakeToolCall,
}

/// How a fake behaves. `Default` answers every request at once with an echo.
#[derive(Debug, Clone)]
pub struct FakeConfig {
    pub reply: Reply,
    /// When set, the fake answers with this tool call — unless the conversation already ends
    /// with a tool result, in which case it answers with text, so an agent loop terminates.
    pub tool_call: Option<FakeToolCall>,
    /// Calls chosen by the last user message: the first rule whose `when` text it contains
    /// (case-insensitive) wins over `tool_call`. Only asked when the request offers tools.
    pub tool_rules: Vec<ToolRule>,
    /// Wait before answering each request (before the response headers).
    pub delay: Duration,
    /// Wait before each server-sent event of a streamed answer.
    pub chunk_delay: Duration,
    /// The first `fail_first` generation requests are answered with `fail_status`.
    pub fail_first: u64,
    pub fail_status: u16,
    /// `Retry-After` header (seconds) sent with injected failures.
    pub retry_after_secs: Option<u64>,
    /// Break the connection after this many content events of a streamed answer, without
    /// finishing it (simulates a provider dying mid-answer).
    pub break_after_chunks: Option<usize>,
    /// When set, requests must carry this key (`Authorization: Bearer` for OpenAI, `x-api-key`
    /// for Anthropic) or get 401.
    pub api_key: Option<String>,
    /// Model ids listed by `GET /v1/models`.
    pub models: Vec<String>,
}

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            reply: Reply::Echo,
            tool_call: None,
            tool_rules: Vec::new(),
            delay: Duration::ZERO,
            chunk_delay: Duration::ZERO,
            fail_first: 0,
            fail_status: 500,
            retry_after_secs: None,
            break_after_chunks: None,
            api_key: None,
            models: vec!["fake-model".to_string()],
        }
    }
}

/// Marker for the OpenAI wire format; see [`FakeOpenAi`].
#[derive(Debug)]
pub enum OpenAiWire {}

/// Marker for the Anthropic wire format; see [`FakeAnthropic`].
#[derive(Debug)]
pub enum AnthropicWire {}

/// Serves `POST /v1/chat/completions` (plain and `stream: true`) and `GET /v1/models`.
pub type FakeOpenAi = Fake<OpenAiWire>;

/// Serves `POST /v1/messages` (plain and `stream: true`), requiring `x-api-key` and
/// `anthropic-version` headers.
pub type FakeAnthropic = Fake<AnthropicWire>;

/// A running fake. Dropping it stops accepting connections.
pub struct Fake<W> {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    wire: PhantomData<fn() -> W>,
}

/// Chainable setters over a [`FakeConfig`]; `FakeOpenAi::builder()…start().await`.
pub struct FakeBuilder<W> {
    config: FakeConfig,
    wire: PhantomData<fn() -> W>,
}

impl<W> FakeBuilder<W> {
    fn new() -> Self {
        Self {
            config: FakeConfig::default(),
            wire: PhantomData,
        }
    }

    /// Answer with this text instead of the echo.
    pub fn reply(mut self, text: impl Into<String>) -> Self {
        self.config.reply = Reply::Fixed(text.into());
        self
    }

    /// Answer with a call to tool `name` with these JSON `arguments`.
    pub fn tool_call(mut self, name: impl Into<String>, arguments: impl Into<String>) -> Self {
        self.config.tool_call = Some(FakeToolCall {
            name: name.into(),
            arguments: arguments.into(),
        });
        self
    }

    /// When the last user message contains `when`, answer with a call to `name`.
    pub fn tool_rule(
        mut self,
        when: impl Into<String>,
        name: impl Into<String>,
        arguments: impl Into<String>,
    ) -> Self {
        self.config.tool_rules.push(ToolRule {
            when: when.into(),
            call: FakeToolCall {
                name: name.into(),
                arguments: arguments.into(),
            },
        });
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.config.delay = delay;
        self
    }

    pub fn chunk_delay(mut self, delay: Duration) -> Self {
        self.config.chunk_delay = delay;
        self
    }

    /// Answer the first `n` generation requests with HTTP `status`.
    pub fn fail_first(mut self, n: u64, status: u16) -> Self {
        self.config.fail_first = n;
        self.config.fail_status = status;
        self
    }

    pub fn retry_after(mut self, secs: u64) -> Self {
        self.config.retry_after_secs = Some(secs);
        self
    }

    pub fn break_after_chunks(mut self, n: usize) -> Self {
        self.config.break_after_chunks = Some(n);
        self
    }

    pub fn require_api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// Replace the whole configuration.
    pub fn config(mut self, config: FakeConfig) -> Self {
        self.config = config;
        self
    }
}

impl FakeBuilder<OpenAiWire> {
    pub async fn start(self) -> FakeOpenAi {
        Fake::spawn(self.config, openai_router).await
    }
}

impl FakeBuilder<AnthropicWire> {
    pub async fn start(self) -> FakeAnthropic {
        Fake::spawn(self.config, anthropic_router).await
    }
}

impl Fake<OpenAiWire> {
    pub fn builder() -> FakeBuilder<OpenAiWire> {
        FakeBuilder::new()
    }

    /// A fake with the default behaviour (echo).
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:PORT/v1`, the form `model.openai.base_url` takes.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }
}

impl Fake<AnthropicWire> {
    pub fn builder() -> FakeBuilder<AnthropicWire> {
        FakeBuilder::new()
    }

    /// A fake with the default behaviour (echo).
    pub async fn start() -> Self {
        Self::builder().start().await
    }

    /// `http://127.0.0.1:PORT`, the form `model.anthropic.base_url` takes (no `/v1`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl<W> Fake<W> {
    async fn spawn(config: FakeConfig, router: fn(Arc<Shared>) -> Router) -> Self {
        // Binding port 0 on loopback only fails if the machine has no loopback interface;
        // a fake is test/bench code, so failing loudly here is the useful behaviour.
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port for the fake provider");
        let addr = listener
            .local_addr()
            .expect("a bound listener has a local address");
        let shared = Arc::new(Shared::new(config));
        let app = router(shared.clone());
        let task = tokio::spawn(async move {
            // Serving only ends with an accept error, which a loopback listener does not get
            // in practice; the task is aborted when the fake is dropped.
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            shared,
            task,
            wire: PhantomData,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Generation requests received, including the ones that were failed on purpose.
    pub fn requests(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }

    /// The last generation request received.
    pub fn last_request(&self) -> Option<RecordedRequest> {
        self.shared
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The most recent generation requests, oldest first (at most 64).
    pub fn recent_requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .recent
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect()
    }

    /// Streamed answers whose connection went away before the last event was sent: a client
    /// that cancels should make this count go up.
    pub fn aborted_streams(&self) -> u64 {
        self.shared.aborted.load(Ordering::Relaxed)
    }

    /// Streamed answers sent to the end.
    pub fn completed_streams(&self) -> u64 {
        self.shared.completed.load(Ordering::Relaxed)
    }
}

impl<W> Drop for Fake<W> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Run an OpenAI-compatible fake on `listener` until the returned future is dropped.
pub async fn serve_openai(listener: TcpListener, config: FakeConfig) -> std::io::Result<()> {
    axum::serve(listener, openai_router(Arc::new(Shared::new(config)))).await
}

/// Run an Anthropic fake on `listener` until the returned future is dropped.
pub async fn serve_anthropic(listener: TcpListener, config: FakeConfig) -> std::io::Result<()> {
    axum::serve(listener, anthropic_router(Arc::new(Shared::new(config)))).await
}

/// Requests kept for [`Fake::recent_requests`].
const RECENT_REQUESTS: usize = 64;

/// A request as the fake received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    headers: HeaderMap,
    body: Bytes,
}

impl RecordedRequest {
    /// A header's value, if present and printable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Size of the body in bytes.
    pub fn body_len(&self) -> usize {
        self.body.len()
    }

    /// The body parsed as JSON (`Value::Null` if it is not JSON).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn body(&self) -> &[u8] {
        &self.body
    }
}

struct Shared {
    config: FakeConfig,
    requests: AtomicU64,
    aborted: AtomicU64,
    completed: AtomicU64,
    // A std mutex: it is held only to store or clone one value, never across an `.await`.
    last: Mutex<Option<RecordedRequest>>,
    /// The most recent requests, oldest first (at most [`RECENT_REQUESTS`]).
    recent: Mutex<std::collections::VecDeque<RecordedRequest>>,
}

impl Shared {
    fn new(config: FakeConfig) -> Self {
        Self {
            config,
            requests: AtomicU64::new(0),
            aborted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            last: Mutex::new(None),
            recent: Mutex::new(std::collections::VecDeque::new()),
        }
    }

    /// Count and record a generation request; returns its 1-based number.
    fn arrive(&self, headers: HeaderMap, body: Bytes) -> u64 {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let recorded = RecordedRequest { headers, body };
        {
            let mut recent = self.recent.lock().unwrap_or_else(PoisonError::into_inner);
            if recent.len() == RECENT_REQUESTS {
                recent.pop_front();
            }
            recent.push_back(recorded.clone());
        }
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(recorded);
        n
    }

    async fn pause(&self) {
        if !self.config.delay.is_zero() {
            tokio::time::sleep(self.config.delay).await;
        }
    }

    fn retry_after_header(&self) -> Option<HeaderValue> {
        self.config.retry_after_secs.map(HeaderValue::from)
    }
}

// ---------------------------------------------------------------------------------------------
// What to answer, independent of the wire format.

/// The answer to one request, worked out once and then written in either format.
struct Answer {
    n: u64,
    model: String,
    text: String,
    tool_call: Option<FakeToolCall>,
    /// Cut short by `max_tokens`.
    truncated: bool,
    prompt_tokens: u64,
    completion_tokens: u64,
}

impl Answer {
    fn new(config: &FakeConfig, n: u64, request: &Value, system: Option<&Value>) -> Self {
        let messages = request["messages"].as_array().map(Vec::as_slice);
        let messages = messages.unwrap_or_default();
        let last_user = messages
            .iter()
            .rev()
            .find(|m| m["role"] == "user")
            .map(|m| text_of(&m["content"]))
            .unwrap_or_default();
        let after_tool_result = messages.last().is_some_and(is_tool_result);
        let offers_tools = request["tools"].as_array().is_some_and(|t| !t.is_empty());
        let lowered = last_user.to_lowercase();
        let ruled = config
            .tool_rules
            .iter()
            .find(|r| offers_tools && lowered.contains(&r.when.to_lowercase()))
            .map(|r| r.call.clone());
        let tool_call = ruled
            .or_else(|| config.tool_call.clone())
            .filter(|_| !after_tool_result);

        let mut text = match (&config.reply, after_tool_result) {
            (Reply::Echo, true) => {
                let result = messages.last().map(tool_result_text).unwrap_or_default();
                format!("echo: {result}")
            }
            (Reply::Echo, false) => format!("echo: {last_user}"),
            (Reply::Fixed(t), _) => t.clone(),
        };
        // Fake "tokens" are words: predictable in tests and cheap to count.
        let mut truncated = false;
        if let Some(max) = request["max_tokens"].as_u64() {
            let words: Vec<&str> = text.split_whitespace().collect();
            if words.len() as u64 > max && tool_call.is_none() {
                text = words[..max as usize].join(" ");
                truncated = true;
            }
        }
        let prompt_tokens = messages
            .iter()
            .map(|m| words(&text_of(&m["content"])))
            .sum::<u64>()
            + system.map(|s| words(&text_of(s))).unwrap_or(0);
        let completion_tokens = match &tool_call {
            Some(call) => words(&call.arguments).max(1),
            None => words(&text),
        };
        Self {
            n,
            model: request["model"]
                .as_str()
                .unwrap_or("fake-model")
                .to_string(),
            text,
            tool_call,
            truncated,
            prompt_tokens,
            completion_tokens,
        }
    }
}

fn words(s: &str) -> u64 {
    s.split_whitespace().count() as u64
}

/// The text of a message's `content`: a string, or the `text` of its parts/blocks.
fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(" "),
        _ => String::new(),
    }
}

/// The text of a tool result message (OpenAI `tool` message or Anthropic block).
fn tool_result_text(message: &Value) -> String {
    if message["role"] == "tool" {
        return text_of(&message["content"]);
    }
    message["content"]
        .as_array()
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "tool_result"))
        .map(|b| text_of(&b["content"]))
        .unwrap_or_default()
}

/// An OpenAI `tool` message or an Anthropic user turn carrying a `tool_result` block.
fn is_tool_result(message: &Value) -> bool {
    message["role"] == "tool"
        || message["content"]
            .as_array()
            .is_some_and(|blocks| blocks.iter().any(|b| b["type"] == "tool_result"))
}

/// Cut `text` into at most `n` pieces of similar length, on character boundaries.
fn pieces(text: &str, n: usize) -> Vec<&str> {
    let chars = text.chars().count();
    if chars == 0 {
        return Vec::new();
    }
    let per_piece = chars.div_ceil(n.max(1));
    let mut out = Vec::with_capacity(n);
    let mut start = 0;
    for (count, (at, _)) in text.char_indices().enumerate() {
        if count > 0 && count % per_piece == 0 {
            out.push(&text[start..at]);
            start = at;
        }
    }
    out.push(&text[start..]);
    out
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Pieces a streamed text is cut into.
const TEXT_PIECES: usize = 4;
/// Pieces streamed tool-call arguments are cut into.
const ARGUMENT_PIECES: usize = 3;

/// How long a stream told to break waits before breaking.
const BREAK_PAUSE: Duration = Duration::from_millis(50);

/// Send `events` as server-sent events; `first_content` is the index of the first event that
/// carries content, used by `break_after_chunks`.
fn sse(shared: Arc<Shared>, events: Vec<Event>, first_content: usize) -> Response {
    let mut items: Vec<Result<Event, std::io::Error>> = events.into_iter().map(Ok).collect();
    let break_at = shared.config.break_after_chunks.map(|n| first_content + n);
    if let Some(at) = break_at {
        items.truncate(at);
    }
    let delay = shared.config.chunk_delay;
    let mut inner = if delay.is_zero() {
        stream::iter(items).boxed()
    } else {
        stream::iter(items)
            .then(move |item| async move {
                tokio::time::sleep(delay).await;
                item
            })
            .boxed()
    };
    if break_at.is_some() {
        // hyper drops what it has buffered when a body fails; pausing first lets it flush
        // the events before the break, so the client really gets them.
        let broken = stream::once(async {
            tokio::time::sleep(BREAK_PAUSE).await;
            Err(std::io::Error::other("connection broken on purpose"))
        });
        inner = inner.chain(broken).boxed();
    }
    Sse::new(Watched {
        inner,
        ended: false,
        shared,
    })
    .into_response()
}

/// An event stream that counts whether it was sent to the end or abandoned.
struct Watched {
    inner: BoxStream<'static, Result<Event, std::io::Error>>,
    ended: bool,
    shared: Arc<Shared>,
}

impl Stream for Watched {
    type Item = Result<Event, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let next = self.inner.poll_next_unpin(cx);
        match &next {
            Poll::Ready(None) if !self.ended => {
                self.ended = true;
                self.shared.completed.fetch_add(1, Ordering::Relaxed);
            }
            // A deliberate break is neither a completion nor a client going away.
            Poll::Ready(Some(Err(_))) => self.ended = true,
            _ => {}
        }
        next
    }
}

impl Drop for Watched {
    fn drop(&mut self) {
        if !self.ended {
            self.shared.aborted.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pieces_cover_the_text_on_char_boundaries() {
        let text = "héllo wörld, ça va?";
        let parts = pieces(text, 4);
        assert_eq!(parts.len(), 4);
        assert_eq!(parts.concat(), text);
        assert_eq!(pieces("ab", 4), vec!["a", "b"]);
        assert!(pieces("", 4).is_empty());
    }

    #[test]
    fn echo_answers_the_last_user_message_and_honours_max_tokens() {
        let request = json!({
            "model": "m",
            "max_tokens": 2,
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": [{"type": "text", "text": "second one"}]},
            ],
        });
        let answer = Answer::new(&FakeConfig::default(), 1, &request, None);
        assert_eq!(answer.text, "echo: second");
        assert!(answer.truncated);
        assert_eq!(answer.prompt_tokens, 4);
    }

    #[test]
    fn a_tool_result_turns_the_tool_call_off() {
        let config = FakeConfig {
            tool_call: Some(FakeToolCall {
                name: "f".into(),
                arguments: "{}".into(),
            }),
            ..FakeConfig::default()
        };
        let asking = json!({"messages": [{"role": "user", "content": "hi"}]});
        assert!(Answer::new(&config, 1, &asking, None).tool_call.is_some());
        let answered = json!({"messages": [
            {"role": "user", "content": "hi"},
            {"role": "tool", "content": "42", "tool_call_id": "call_1"},
        ]});
        assert!(Answer::new(&config, 1, &answered, None).tool_call.is_none());
    }
}
