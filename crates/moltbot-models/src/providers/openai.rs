//! Any OpenAI-compatible chat-completions server (OpenAI, Ollama, vLLM, llama.cpp server…).
//!
//! Every request is streamed (`stream: true` with `stream_options.include_usage`), whether the
//! caller wants a stream or not; [`moltbot_core::model::collect`] gathers it when needed.
//!
//! This file also holds [`Transport`], the HTTP plumbing the Anthropic provider shares:
//! deadlines, retries with backoff, cancellation and the mapping of HTTP failures to
//! [`ModelError`]. It lives here rather than in its own module only because the module list
//! in `providers/mod.rs` is owned elsewhere; it has no OpenAI specifics.

use bytes::Bytes;
use eventsource_stream::{EventStreamError, Eventsource};
use futures::StreamExt;
use moltbot_core::config::OpenAiConfig;
use moltbot_core::model::{
    ChatChunk, ChatModel, ChatRequest, ChunkStream, FinishReason, ModelError, Role, ToolCallDelta,
    ToolChoice, Usage,
};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// A chat model behind an OpenAI-compatible `/chat/completions` endpoint.
pub struct OpenAiProvider {
    id: String,
    model: String,
    transport: Arc<Transport>,
}

impl OpenAiProvider {
    /// Check the config and build the HTTP client. No request is made.
    pub fn new(cfg: &OpenAiConfig) -> Result<Self, ModelError> {
        if cfg.model.trim().is_empty() {
            return Err(ModelError::Unavailable(
                "model.openai.model must name a model, got \"\"".into(),
            ));
        }
        let url = endpoint(&cfg.base_url, "chat/completions", "model.openai.base_url")?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        if let Some(key) = cfg.api_key.as_ref().filter(|k| !k.is_empty()) {
            let value = secret_header(&format!("Bearer {}", key.expose()), "model.openai.api_key")?;
            headers.insert(AUTHORIZATION, value);
        }
        let id = format!("openai/{}", cfg.model);
        let transport = Transport::new(
            id.clone(),
            url,
            headers,
            cfg.timeout_secs,
            cfg.max_retries,
            "model.openai.timeout_secs",
        )?;
        Ok(Self {
            id,
            model: cfg.model.clone(),
            transport: Arc::new(transport),
        })
    }

    fn body(&self, request: &ChatRequest) -> Result<Bytes, ModelError> {
        if request.messages.is_empty() {
            return Err(ModelError::InvalidRequest(
                "`messages` must hold at least one message, got 0".into(),
            ));
        }
        let body = WireRequest {
            model: &self.model,
            messages: request
                .messages
                .iter()
                .map(|m| WireMessage {
                    role: m.role.as_str(),
                    // An assistant turn that only calls tools has `content: null`.
                    content: Some(m.content.as_str())
                        .filter(|c| !c.is_empty() || m.tool_calls.is_empty()),
                    tool_call_id: m.tool_call_id.as_deref().filter(|_| m.role == Role::Tool),
                    tool_calls: m
                        .tool_calls
                        .iter()
                        .map(|c| OutCall {
                            id: &c.id,
                            kind: "function",
                            function: OutFunction {
                                name: &c.name,
                                arguments: &c.arguments,
                            },
                        })
                        .collect(),
                })
                .collect(),
            stream: true,
            stream_options: StreamOptions {
                include_usage: true,
            },
            max_tokens: request.max_tokens,
            temperature: request.temperature,
            top_p: request.top_p,
            seed: request.seed,
            stop: &request.stop,
            tools: &request.tools,
            tool_choice: (!request.tools.is_empty())
                .then(|| openai_tool_choice(&request.tool_choice))
                .flatten(),
            top_k: request.top_k,
            repetition_penalty: request.repetition_penalty,
        };
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|e| ModelError::InvalidRequest(format!("cannot encode the request: {e}")))
    }
}

/// OpenAI's `tool_choice`; `auto` is the default and left out.
fn openai_tool_choice(choice: &ToolChoice) -> Option<serde_json::Value> {
    match choice {
        ToolChoice::Auto => None,
        ToolChoice::Required => Some(serde_json::Value::from("required")),
        ToolChoice::Tool(name) => Some(serde_json::json!({
            "type": "function",
            "function": {"name": name},
        })),
    }
}

impl ChatModel for OpenAiProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ChatRequest, cancel: CancellationToken) -> ChunkStream {
        let body = self.body(&request);
        self.transport.stream::<OpenAiDecoder>(body, cancel)
    }
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    messages: Vec<WireMessage<'a>>,
    stream: bool,
    stream_options: StreamOptions,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    seed: Option<u64>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tools: &'a [serde_json::Value],
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<serde_json::Value>,
    /// Not OpenAI's, but vLLM, llama.cpp's server and Ollama take them; sent only when the
    /// caller set them.
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    repetition_penalty: Option<f32>,
}

#[derive(Serialize)]
struct WireMessage<'a> {
    role: &'static str,
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutCall<'a>>,
}

#[derive(Serialize)]
struct OutCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunction<'a>,
}

#[derive(Serialize)]
struct OutFunction<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct StreamOptions {
    include_usage: bool,
}

/// One `chat.completion.chunk`, keeping only what we read. Every field may be absent or null
/// depending on the server.
#[derive(Deserialize)]
struct StreamChunk {
    #[serde(default)]
    choices: Vec<StreamChoice>,
    usage: Option<WireUsage>,
    error: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct StreamChoice {
    delta: Option<StreamDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct StreamDelta {
    content: Option<String>,
    tool_calls: Option<Vec<WireToolCall>>,
}

#[derive(Deserialize)]
struct WireToolCall {
    index: Option<u32>,
    id: Option<String>,
    function: Option<WireFunction>,
}

#[derive(Deserialize)]
struct WireFunction {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    #[serde(default)]
    prompt_tokens: u32,
    #[serde(default)]
    completion_tokens: u32,
}

/// Turns chat-completion chunks into [`ChatChunk`]s. The finish reason is held back until
/// `[DONE]` so that the usage chunk, which comes after it, does not follow the `Finish`.
#[derive(Default)]
struct OpenAiDecoder {
    finish: Option<FinishReason>,
}

fn finish_reason(reason: &str) -> FinishReason {
    match reason {
        "length" => FinishReason::Length,
        "tool_calls" | "function_call" => FinishReason::ToolCalls,
        // "stop", "content_filter" and anything a compatible server invents.
        _ => FinishReason::Stop,
    }
}

impl EventDecoder for OpenAiDecoder {
    fn on_event(
        &mut self,
        _event: &str,
        data: &str,
        out: &mut Vec<ChatChunk>,
    ) -> Result<bool, ModelError> {
        let data = data.trim();
        if data == "[DONE]" {
            out.push(ChatChunk::Finish(self.finish.unwrap_or(FinishReason::Stop)));
            return Ok(true);
        }
        if data.is_empty() {
            return Ok(false);
        }
        let chunk: StreamChunk = serde_json::from_str(data).map_err(|e| {
            ModelError::Protocol(format!(
                "cannot read a chat.completion.chunk ({e}): {}",
                truncate(data, 200)
            ))
        })?;
        if let Some(error) = chunk.error {
            let message = error["message"].as_str().unwrap_or("no message");
            return Err(ModelError::Protocol(format!(
                "error event in the stream: {}",
                truncate(message, 500)
            )));
        }
        // We never ask for `n > 1`, so only the first choice matters.
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(delta) = choice.delta {
                if let Some(text) = delta.content.filter(|t| !t.is_empty()) {
                    out.push(ChatChunk::Text(text));
                }
                for (position, call) in delta.tool_calls.into_iter().flatten().enumerate() {
                    let (name, arguments) = match call.function {
                        Some(f) => (f.name, f.arguments.unwrap_or_default()),
                        None => (None, String::new()),
                    };
                    out.push(ChatChunk::ToolCall(ToolCallDelta {
                        // Some compatible servers leave out `index`; the position in the
                        // list is the best guess then.
                        index: call.index.unwrap_or(position as u32),
                        id: call.id,
                        name,
                        arguments,
                    }));
                }
            }
            if let Some(reason) = choice.finish_reason {
                self.finish = Some(finish_reason(&reason));
            }
        }
        if let Some(u) = chunk.usage {
            out.push(ChatChunk::Usage(Usage {
                prompt_tokens: u.prompt_tokens,
                completion_tokens: u.completion_tokens,
            }));
        }
        Ok(false)
    }

    fn on_eof(&mut self, out: &mut Vec<ChatChunk>) -> Result<(), ModelError> {
        // Servers that forget `[DONE]` are fine as long as they said why they stopped.
        match self.finish {
            Some(reason) => {
                out.push(ChatChunk::Finish(reason));
                Ok(())
            }
            None => Err(ModelError::Protocol(
                "the event stream ended before a finish_reason".into(),
            )),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shared HTTP plumbing (used by the Anthropic provider too).

/// First wait between retries; doubled on each further retry.
const BACKOFF_BASE: Duration = Duration::from_millis(250);
/// Longest wait between retries chosen by us.
const BACKOFF_MAX: Duration = Duration::from_secs(8);
/// Longest `Retry-After` we sit out; beyond it we give up so a failover can move on.
const RETRY_AFTER_MAX: Duration = Duration::from_secs(30);
/// Longest time to wait for a TCP/TLS connection (or the overall timeout if shorter).
const CONNECT_TIMEOUT_MAX: Duration = Duration::from_secs(10);
/// Bytes of an error response we read, and characters of it we keep.
const ERROR_BODY_READ: usize = 4096;
const ERROR_BODY_KEEP: usize = 500;

/// Turns a provider's server-sent events into chunks.
pub(crate) trait EventDecoder: Default + Send + 'static {
    /// Handle one event (`event` is its name, empty if the server sent none). Chunks go to
    /// `out`; `Ok(true)` means the answer is complete.
    fn on_event(
        &mut self,
        event: &str,
        data: &str,
        out: &mut Vec<ChatChunk>,
    ) -> Result<bool, ModelError>;

    /// The server closed the stream without a final event.
    fn on_eof(&mut self, out: &mut Vec<ChatChunk>) -> Result<(), ModelError>;
}

/// One provider's endpoint, fixed headers (secrets marked sensitive), client and retry policy.
pub(crate) struct Transport {
    provider: String,
    client: reqwest::Client,
    url: reqwest::Url,
    headers: HeaderMap,
    /// Budget of one attempt: connecting, waiting for headers and reading the whole stream.
    timeout: Duration,
    max_retries: u32,
}

/// `base` joined with `path`, or an error naming the config `field`.
pub(crate) fn endpoint(base: &str, path: &str, field: &str) -> Result<reqwest::Url, ModelError> {
    let joined = format!("{}/{path}", base.trim_end_matches('/'));
    let url = reqwest::Url::parse(&joined).map_err(|e| {
        ModelError::Unavailable(format!("{field} must be an http(s) URL, got {base:?}: {e}"))
    })?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ModelError::Unavailable(format!(
            "{field} must be an http(s) URL, got {base:?}"
        )));
    }
    Ok(url)
}

/// A header value holding a secret: marked sensitive so it never shows in debug output. The
/// error names the config field, never the value.
pub(crate) fn secret_header(value: &str, field: &str) -> Result<HeaderValue, ModelError> {
    let mut header = HeaderValue::from_str(value).map_err(|_| {
        ModelError::Unavailable(format!(
            "{field} holds characters that cannot go in an HTTP header"
        ))
    })?;
    header.set_sensitive(true);
    Ok(header)
}

impl Transport {
    pub(crate) fn new(
        provider: String,
        url: reqwest::Url,
        headers: HeaderMap,
        timeout_secs: u64,
        max_retries: u32,
        timeout_field: &str,
    ) -> Result<Self, ModelError> {
        if timeout_secs == 0 {
            return Err(ModelError::Unavailable(format!(
                "{timeout_field} must be at least 1, got 0"
            )));
        }
        let timeout = Duration::from_secs(timeout_secs);
        let client = reqwest::Client::builder()
            .connect_timeout(timeout.min(CONNECT_TIMEOUT_MAX))
            .user_agent(concat!("moltbot/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ModelError::Unavailable(format!("cannot build an HTTP client: {e}")))?;
        Ok(Self {
            provider,
            client,
            url,
            headers,
            timeout,
            max_retries,
        })
    }

    /// POST `body` and stream the decoded answer, retrying failures that happen before the
    /// first chunk.
    pub(crate) fn stream<D: EventDecoder>(
        self: &Arc<Self>,
        body: Result<Bytes, ModelError>,
        cancel: CancellationToken,
    ) -> ChunkStream {
        let transport = Arc::clone(self);
        let stream = async_stream::stream! {
            let body = match body {
                Ok(b) => b,
                Err(e) => {
                    yield Err(e);
                    return;
                }
            };
            let mut retries = 0u32;
            loop {
                let mut emitted = false;
                // Everything the attempt opened (the response, the event stream) is dropped
                // when this block ends, before the error is reported or the retry waits.
                let failure: ModelError = 'attempt: {
                    let deadline = Instant::now() + transport.timeout;
                    let send = transport
                        .client
                        .post(transport.url.clone())
                        .headers(transport.headers.clone())
                        .body(body.clone())
                        .send();
                    let response = match transport.guard(&cancel, deadline, send).await {
                        Ok(Ok(r)) => r,
                        Ok(Err(e)) => break 'attempt transport.send_error(&e),
                        Err(e) => break 'attempt e,
                    };
                    if let Err(e) = transport.check_response(response.status(), response.headers()) {
                        // Read the start of the error body for the message, within the budget.
                        break 'attempt match transport.guard(&cancel, deadline, e.finish(response)).await {
                            Ok(e) | Err(e) => e,
                        };
                    }
                    let mut events = response.bytes_stream().eventsource();
                    let mut decoder = D::default();
                    let mut out = Vec::new();
                    loop {
                        let next = match transport.guard(&cancel, deadline, events.next()).await {
                            Ok(next) => next,
                            Err(e) => break 'attempt e,
                        };
                        let done = match next {
                            None => match decoder.on_eof(&mut out) {
                                Ok(()) => true,
                                Err(e) => break 'attempt e,
                            },
                            Some(Err(e)) => break 'attempt transport.read_error(e),
                            Some(Ok(event)) => match decoder.on_event(&event.event, &event.data, &mut out) {
                                Ok(done) => done,
                                Err(e) => break 'attempt e,
                            },
                        };
                        for chunk in out.drain(..) {
                            emitted = true;
                            yield Ok(chunk);
                        }
                        if done {
                            return;
                        }
                    }
                };
                let wait = if emitted || retries >= transport.max_retries {
                    None
                } else {
                    retry_wait(&failure, retries)
                };
                let Some(wait) = wait else {
                    yield Err(failure);
                    return;
                };
                retries += 1;
                tracing::warn!(
                    provider = %transport.provider,
                    retry = retries,
                    of = transport.max_retries,
                    wait_ms = wait.as_millis() as u64,
                    kind = failure.kind(),
                    cause = %failure,
                    "model request failed before answering; retrying",
                );
                let cancelled = tokio::select! {
                    biased;
                    _ = cancel.cancelled() => true,
                    _ = tokio::time::sleep(wait) => false,
                };
                if cancelled {
                    yield Err(ModelError::Cancelled);
                    return;
                }
            }
        };
        Box::pin(stream)
    }

    /// Run `fut` unless `cancel` fires or `deadline` passes first.
    async fn guard<F: Future>(
        &self,
        cancel: &CancellationToken,
        deadline: Instant,
        fut: F,
    ) -> Result<F::Output, ModelError> {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => Err(ModelError::Cancelled),
            out = tokio::time::timeout_at(deadline, fut) => {
                out.map_err(|_| ModelError::Timeout(self.timeout))
            }
        }
    }

    /// A non-2xx status or a body that is not an event stream.
    fn check_response(
        &self,
        status: reqwest::StatusCode,
        headers: &HeaderMap,
    ) -> Result<(), BadResponse> {
        if status == reqwest::StatusCode::TOO_MANY_REQUESTS {
            return Err(BadResponse::RateLimited(retry_after(headers)));
        }
        if !status.is_success() {
            return Err(BadResponse::Status(status.as_u16()));
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !content_type.is_empty() && !content_type.starts_with("text/event-stream") {
            return Err(BadResponse::NotAStream(content_type.to_string()));
        }
        Ok(())
    }

    fn send_error(&self, e: &reqwest::Error) -> ModelError {
        if e.is_timeout() {
            ModelError::Timeout(self.timeout)
        } else if e.is_builder() {
            ModelError::InvalidRequest(error_chain(e))
        } else {
            ModelError::Connect(error_chain(e))
        }
    }

    fn read_error(&self, e: EventStreamError<reqwest::Error>) -> ModelError {
        match e {
            EventStreamError::Transport(e) if e.is_timeout() => ModelError::Timeout(self.timeout),
            EventStreamError::Transport(e) => {
                ModelError::Connect(format!("the answer stream broke: {}", error_chain(&e)))
            }
            EventStreamError::Utf8(e) => {
                ModelError::Protocol(format!("the event stream is not UTF-8: {e}"))
            }
            EventStreamError::Parser(e) => {
                ModelError::Protocol(format!("the event stream is malformed: {e}"))
            }
        }
    }
}

/// Why a response cannot be streamed, before its body was read.
enum BadResponse {
    RateLimited(Option<Duration>),
    Status(u16),
    NotAStream(String),
}

impl BadResponse {
    /// Build the error, reading the start of the body where it helps.
    async fn finish(self, response: reqwest::Response) -> ModelError {
        match self {
            BadResponse::RateLimited(retry_after) => ModelError::RateLimited { retry_after },
            BadResponse::Status(status) => ModelError::Upstream {
                status,
                body: body_prefix(response).await,
            },
            BadResponse::NotAStream(content_type) => ModelError::Protocol(format!(
                "expected an event stream (text/event-stream), got {content_type}: {}",
                body_prefix(response).await
            )),
        }
    }
}

/// The first few hundred characters of a body, for error messages.
async fn body_prefix(mut response: reqwest::Response) -> String {
    let mut buf = Vec::new();
    while buf.len() < ERROR_BODY_READ {
        match response.chunk().await {
            Ok(Some(chunk)) => buf.extend_from_slice(&chunk),
            Ok(None) | Err(_) => break,
        }
    }
    truncate(String::from_utf8_lossy(&buf).trim(), ERROR_BODY_KEEP)
}

/// How long to wait before retrying after `failure`, or `None` to give up now.
///
/// Only failures of the transport or of the server's capacity are retried. Timeouts are not:
/// a second attempt would double the wait, and a failover moves to the next provider anyway.
fn retry_wait(failure: &ModelError, retries: u32) -> Option<Duration> {
    match failure {
        ModelError::RateLimited {
            retry_after: Some(after),
        } => (*after <= RETRY_AFTER_MAX).then_some(*after),
        ModelError::RateLimited { retry_after: None }
        | ModelError::Connect(_)
        | ModelError::Unavailable(_) => Some(backoff(retries)),
        ModelError::Upstream { status, .. } if *status >= 500 => Some(backoff(retries)),
        ModelError::Upstream { .. }
        | ModelError::Timeout(_)
        | ModelError::Protocol(_)
        | ModelError::InvalidRequest(_)
        | ModelError::Cancelled => None,
    }
}

/// Exponential backoff with jitter: between half and all of `base * 2^retries`, capped.
fn backoff(retries: u32) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1u32 << retries.min(16))
        .min(BACKOFF_MAX);
    // Jitter only has to keep many clients from retrying in step; the randomly keyed std
    // hasher is good enough and saves a dependency.
    let random = std::collections::hash_map::RandomState::new().hash_one(Instant::now());
    let fraction = (random % 1000) as f64 / 1000.0;
    full.mul_f64(0.5 + 0.5 * fraction)
}

/// `Retry-After` in seconds (HTTP dates are rare from APIs and not understood), or the
/// millisecond variant some OpenAI-compatible servers send.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let read = |name: &str| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = read("retry-after-ms") {
        return Some(Duration::from_secs_f64(ms / 1000.0));
    }
    read("retry-after").map(Duration::from_secs_f64)
}

/// An error with its causes, so "connection refused" is not hidden behind "error sending
/// request". reqwest errors name the URL, never headers, so no secret can appear.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    message
}

/// At most `max` characters of `s`, marking a cut with `…`.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(events: &[&str]) -> Vec<ChatChunk> {
        let mut decoder = OpenAiDecoder::default();
        let mut out = Vec::new();
        for data in events {
            decoder.on_event("", data, &mut out).unwrap();
        }
        out
    }

    #[test]
    fn finish_comes_after_the_usage_chunk() {
        let out = decode(&[
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
            "[DONE]",
        ]);
        assert_eq!(
            out,
            vec![
                ChatChunk::Text("Hi".into()),
                ChatChunk::Usage(Usage {
                    prompt_tokens: 3,
                    completion_tokens: 1
                }),
                ChatChunk::Finish(FinishReason::Length),
            ]
        );
    }

    #[test]
    fn tool_call_fragments_keep_their_index() {
        let out = decode(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"id":"c","type":"function","function":{"name":"f","arguments":""}}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":1,"function":{"arguments":"{}"}}]}}]}"#,
        ]);
        assert_eq!(
            out[1],
            ChatChunk::ToolCall(ToolCallDelta {
                index: 1,
                id: None,
                name: None,
                arguments: "{}".into()
            })
        );
    }

    #[test]
    fn a_stream_without_finish_is_a_protocol_error() {
        let mut decoder = OpenAiDecoder::default();
        assert!(matches!(
            decoder.on_eof(&mut Vec::new()),
            Err(ModelError::Protocol(_))
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_milliseconds() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("2"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(2)));
        headers.insert("retry-after-ms", HeaderValue::from_static("150"));
        assert_eq!(retry_after(&headers), Some(Duration::from_millis(150)));
        headers.clear();
        headers.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn which_failures_are_retried() {
        let upstream = |status| ModelError::Upstream {
            status,
            body: String::new(),
        };
        assert!(retry_wait(&upstream(503), 0).is_some());
        assert!(retry_wait(&upstream(401), 0).is_none());
        assert!(retry_wait(&ModelError::Timeout(Duration::from_secs(1)), 0).is_none());
        let long = ModelError::RateLimited {
            retry_after: Some(Duration::from_secs(3600)),
        };
        assert!(retry_wait(&long, 0).is_none());
        assert!(backoff(30) <= BACKOFF_MAX);
        assert!(backoff(0) >= BACKOFF_BASE / 2);
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("abc", 3), "abc");
    }

    #[test]
    fn bad_base_url_names_the_field() {
        let cfg = OpenAiConfig {
            base_url: "not a url".into(),
            ..OpenAiConfig::default()
        };
        let err = OpenAiProvider::new(&cfg).err().map(|e| e.to_string());
        assert!(err.is_some_and(|e| e.contains("model.openai.base_url")));
    }
}
