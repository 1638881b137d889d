//! The Anthropic Messages API, always streamed.
//!
//! Differences from the OpenAI format that this file absorbs: system messages go to the
//! top-level `system` field, `max_tokens` is required, tool results are `tool_result` blocks in
//! a user turn, tools are declared with `input_schema`, and the answer arrives as named events
//! (`message_start`, `content_block_*`, `message_delta`, `message_stop`). Timeouts, retries
//! and cancellation are the shared [`Transport`]'s.

use super::openai::{endpoint, secret_header, truncate, EventDecoder, Transport};
use bytes::Bytes;
use moltbot_core::config::AnthropicConfig;
use moltbot_core::model::{
    ChatChunk, ChatModel, ChatRequest, ChunkStream, FinishReason, ModelError, Role, ToolCallDelta,
    ToolChoice, Usage,
};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, CONTENT_TYPE};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The API version this file speaks.
const API_VERSION: &str = "2023-06-01";
/// `max_tokens` when the request leaves it open (the API requires one).
const DEFAULT_MAX_TOKENS: u32 = 1024;
/// The API's temperature range is 0..=1, narrower than OpenAI's 0..=2.
const MAX_TEMPERATURE: f32 = 1.0;

/// A Claude model behind the Messages API.
pub struct AnthropicProvider {
    id: String,
    model: String,
    transport: Arc<Transport>,
}

impl AnthropicProvider {
    /// Check the config and build the HTTP client. No request is made.
    pub fn new(cfg: &AnthropicConfig) -> Result<Self, ModelError> {
        if cfg.model.trim().is_empty() {
            return Err(ModelError::Unavailable(
                "model.anthropic.model must name a model, got \"\"".into(),
            ));
        }
        let url = endpoint(&cfg.base_url, "v1/messages", "model.anthropic.base_url")?;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(ACCEPT, HeaderValue::from_static("text/event-stream"));
        headers.insert("anthropic-version", HeaderValue::from_static(API_VERSION));
        if let Some(key) = cfg.api_key.as_ref().filter(|k| !k.is_empty()) {
            let value = secret_header(key.expose(), "model.anthropic.api_key")?;
            headers.insert("x-api-key", value);
        }
        let id = format!("anthropic/{}", cfg.model);
        let transport = Transport::new(
            id.clone(),
            url,
            headers,
            cfg.timeout_secs,
            cfg.max_retries,
            "model.anthropic.timeout_secs",
        )?;
        Ok(Self {
            id,
            model: cfg.model.clone(),
            transport: Arc::new(transport),
        })
    }

    fn body(&self, request: &ChatRequest) -> Result<Bytes, ModelError> {
        let mut system = Vec::new();
        let mut messages = Vec::with_capacity(request.messages.len());
        for m in &request.messages {
            let (role, content) = match m.role {
                Role::System => {
                    system.push(m.content.as_str());
                    continue;
                }
                Role::User => ("user", Value::String(m.content.clone())),
                Role::Assistant if m.tool_calls.is_empty() => {
                    ("assistant", Value::String(m.content.clone()))
                }
                Role::Assistant => {
                    // Tool calls are `tool_use` blocks after the text.
                    let mut blocks = Vec::with_capacity(m.tool_calls.len() + 1);
                    if !m.content.is_empty() {
                        blocks.push(json!({"type": "text", "text": m.content}));
                    }
                    for call in &m.tool_calls {
                        let input: Value =
                            serde_json::from_str(&call.arguments).unwrap_or_else(|_| json!({}));
                        blocks.push(json!({
                            "type": "tool_use", "id": call.id, "name": call.name, "input": input,
                        }));
                    }
                    ("assistant", Value::Array(blocks))
                }
                Role::Tool => {
                    let Some(id) = &m.tool_call_id else {
                        return Err(ModelError::InvalidRequest(
                            "a `tool` message needs `tool_call_id` (the id of the call it \
                             answers), got none"
                                .into(),
                        ));
                    };
                    let block =
                        json!({"type": "tool_result", "tool_use_id": id, "content": m.content});
                    ("user", Value::Array(vec![block]))
                }
            };
            // Consecutive turns of one role are fine: the API merges them.
            messages.push(WireMessage { role, content });
        }
        if messages.is_empty() {
            return Err(ModelError::InvalidRequest(
                "`messages` must hold at least one user or assistant message, got none".into(),
            ));
        }
        let body = WireRequest {
            model: &self.model,
            max_tokens: request.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS),
            system: (!system.is_empty()).then(|| system.join("\n\n")),
            messages,
            stream: true,
            temperature: request.temperature.map(|t| t.clamp(0.0, MAX_TEMPERATURE)),
            top_p: request.top_p,
            // Anthropic has no 0-means-off; leave it out then.
            top_k: request.top_k.filter(|&k| k > 0),
            stop_sequences: &request.stop,
            tools: request.tools.iter().map(anthropic_tool).collect(),
            tool_choice: (!request.tools.is_empty())
                .then(|| match &request.tool_choice {
                    ToolChoice::Auto => None,
                    ToolChoice::Required => Some(json!({"type": "any"})),
                    ToolChoice::Tool(name) => Some(json!({"type": "tool", "name": name})),
                })
                .flatten(),
        };
        serde_json::to_vec(&body)
            .map(Bytes::from)
            .map_err(|e| ModelError::InvalidRequest(format!("cannot encode the request: {e}")))
    }
}

impl ChatModel for AnthropicProvider {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ChatRequest, cancel: CancellationToken) -> ChunkStream {
        // The API has no `seed`; it is dropped.
        let body = self.body(&request);
        self.transport.stream::<AnthropicDecoder>(body, cancel)
    }
}

/// A tool declared in the OpenAI format (`{"type":"function","function":{…}}`) in the
/// Anthropic one (`{"name","description","input_schema"}`). Anything else passes as is.
fn anthropic_tool(tool: &Value) -> Value {
    let Some(function) = tool.get("function") else {
        return tool.clone();
    };
    let mut out = json!({
        "name": function["name"],
        "input_schema": function
            .get("parameters")
            .cloned()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
    });
    if let Some(description) = function.get("description") {
        out["description"] = description.clone();
    }
    out
}

#[derive(Serialize)]
struct WireRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<String>,
    messages: Vec<WireMessage>,
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<Value>,
}

#[derive(Serialize)]
struct WireMessage {
    role: &'static str,
    content: Value,
}

/// The events of a streamed message, keeping only what we read.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum StreamEvent {
    MessageStart {
        message: StartedMessage,
    },
    ContentBlockStart {
        index: u32,
        content_block: Block,
    },
    ContentBlockDelta {
        index: u32,
        delta: BlockDelta,
    },
    MessageDelta {
        delta: MessageDelta,
        usage: Option<WireUsage>,
    },
    MessageStop,
    Error {
        error: WireError,
    },
    /// `ping`, `content_block_stop` and any event type added later.
    #[serde(other)]
    Ignored,
}

#[derive(Deserialize)]
struct StartedMessage {
    usage: Option<WireUsage>,
}

#[derive(Deserialize)]
struct Block {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    name: Option<String>,
    text: Option<String>,
    input: Option<Value>,
}

#[derive(Deserialize)]
struct BlockDelta {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    partial_json: Option<String>,
}

#[derive(Deserialize)]
struct MessageDelta {
    stop_reason: Option<String>,
}

#[derive(Deserialize)]
struct WireUsage {
    input_tokens: Option<u32>,
    output_tokens: Option<u32>,
    cache_creation_input_tokens: Option<u32>,
    cache_read_input_tokens: Option<u32>,
}

#[derive(Deserialize)]
struct WireError {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    message: String,
}

/// Turns Messages API events into [`ChatChunk`]s.
#[derive(Default)]
struct AnthropicDecoder {
    /// Content block index → tool call number. Tool calls are numbered 0, 1, … like OpenAI's,
    /// whatever text blocks come between them.
    tool_blocks: HashMap<u32, u32>,
    usage: Usage,
    stop: Option<FinishReason>,
}

fn stop_reason(reason: &str) -> FinishReason {
    match reason {
        "max_tokens" => FinishReason::Length,
        "tool_use" => FinishReason::ToolCalls,
        // "end_turn", "stop_sequence", "pause_turn", "refusal" and later additions.
        _ => FinishReason::Stop,
    }
}

impl WireUsage {
    /// Cached prompt tokens are reported apart from `input_tokens`; the prompt is all of them.
    fn prompt_tokens(&self) -> Option<u32> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        parts
            .iter()
            .any(Option::is_some)
            .then(|| parts.iter().flatten().sum())
    }
}

impl EventDecoder for AnthropicDecoder {
    fn on_event(
        &mut self,
        _event: &str,
        data: &str,
        out: &mut Vec<ChatChunk>,
    ) -> Result<bool, ModelError> {
        // The `type` inside the data repeats the event name, so the name is not needed.
        let data = data.trim();
        if data.is_empty() {
            return Ok(false);
        }
        let event: StreamEvent = serde_json::from_str(data).map_err(|e| {
            ModelError::Protocol(format!(
                "cannot read a Messages API event ({e}): {}",
                truncate(data, 200)
            ))
        })?;
        match event {
            StreamEvent::MessageStart { message } => {
                if let Some(usage) = message.usage {
                    self.usage.prompt_tokens = usage.prompt_tokens().unwrap_or(0);
                    self.usage.completion_tokens = usage.output_tokens.unwrap_or(0);
                }
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block.kind.as_str() {
                "tool_use" => {
                    let number = self.tool_blocks.len() as u32;
                    self.tool_blocks.insert(index, number);
                    // The input normally arrives as JSON fragments and starts out `{}`; a
                    // non-empty one is sent whole.
                    let arguments = match content_block.input {
                        Some(Value::Object(map)) if !map.is_empty() => {
                            Value::Object(map).to_string()
                        }
                        _ => String::new(),
                    };
                    out.push(ChatChunk::ToolCall(ToolCallDelta {
                        index: number,
                        id: content_block.id,
                        name: content_block.name,
                        arguments,
                    }));
                }
                "text" => {
                    if let Some(text) = content_block.text.filter(|t| !t.is_empty()) {
                        out.push(ChatChunk::Text(text));
                    }
                }
                // Thinking and server-tool blocks are not part of the answer.
                _ => {}
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta.kind.as_str() {
                "text_delta" => {
                    if let Some(text) = delta.text.filter(|t| !t.is_empty()) {
                        out.push(ChatChunk::Text(text));
                    }
                }
                "input_json_delta" => {
                    let fragment = delta.partial_json.unwrap_or_default();
                    if let (Some(&number), false) =
                        (self.tool_blocks.get(&index), fragment.is_empty())
                    {
                        out.push(ChatChunk::ToolCall(ToolCallDelta {
                            index: number,
                            id: None,
                            name: None,
                            arguments: fragment,
                        }));
                    }
                }
                _ => {}
            },
            StreamEvent::MessageDelta { delta, usage } => {
                if let Some(reason) = delta.stop_reason {
                    self.stop = Some(stop_reason(&reason));
                }
                if let Some(usage) = usage {
                    if let Some(prompt) = usage.prompt_tokens() {
                        self.usage.prompt_tokens = prompt;
                    }
                    if let Some(output) = usage.output_tokens {
                        self.usage.completion_tokens = output;
                    }
                }
                out.push(ChatChunk::Usage(self.usage));
            }
            StreamEvent::MessageStop => {
                out.push(ChatChunk::Finish(self.stop.unwrap_or(FinishReason::Stop)));
                return Ok(true);
            }
            StreamEvent::Error { error } => return Err(stream_error(error)),
            StreamEvent::Ignored => {}
        }
        Ok(false)
    }

    fn on_eof(&mut self, _out: &mut Vec<ChatChunk>) -> Result<(), ModelError> {
        Err(ModelError::Protocol(
            "the event stream ended before message_stop".into(),
        ))
    }
}

/// An `error` event sent in place of (or in the middle of) an answer.
fn stream_error(error: WireError) -> ModelError {
    let message = truncate(&error.message, 500);
    match error.kind.as_str() {
        "overloaded_error" => ModelError::Unavailable(format!("overloaded: {message}")),
        "rate_limit_error" => ModelError::RateLimited { retry_after: None },
        "api_error" => ModelError::Upstream {
            status: 500,
            body: message,
        },
        other => ModelError::Protocol(format!("{other}: {message}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_core::model::ChatMessage;

    fn provider() -> AnthropicProvider {
        AnthropicProvider::new(&AnthropicConfig::default()).expect("default config is valid")
    }

    #[test]
    fn system_messages_go_to_the_top_level_field() {
        let request = ChatRequest {
            messages: vec![
                ChatMessage::new(Role::System, "Be brief."),
                ChatMessage::new(Role::User, "hi"),
                ChatMessage::new(Role::System, "Use French."),
            ],
            temperature: Some(1.5),
            ..ChatRequest::default()
        };
        let body: Value = serde_json::from_slice(&provider().body(&request).unwrap()).unwrap();
        assert_eq!(body["system"], "Be brief.\n\nUse French.");
        assert_eq!(body["messages"], json!([{"role": "user", "content": "hi"}]));
        assert_eq!(body["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(body["temperature"], 1.0);
        assert_eq!(body["stream"], true);
    }

    #[test]
    fn tool_results_become_tool_result_blocks() {
        let mut answer = ChatMessage::new(Role::Tool, "18°C");
        answer.tool_call_id = Some("toolu_1".into());
        let request = ChatRequest {
            messages: vec![ChatMessage::new(Role::User, "weather?"), answer],
            tools: vec![json!({"type": "function", "function": {
                "name": "weather", "description": "Look it up",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
            }})],
            ..ChatRequest::default()
        };
        let body: Value = serde_json::from_slice(&provider().body(&request).unwrap()).unwrap();
        assert_eq!(body["messages"][1]["content"][0]["type"], "tool_result");
        assert_eq!(body["messages"][1]["content"][0]["tool_use_id"], "toolu_1");
        assert_eq!(body["tools"][0]["name"], "weather");
        assert_eq!(body["tools"][0]["input_schema"]["type"], "object");
    }

    #[test]
    fn only_system_messages_is_an_invalid_request() {
        let request = ChatRequest {
            messages: vec![ChatMessage::new(Role::System, "x")],
            ..ChatRequest::default()
        };
        assert!(matches!(
            provider().body(&request),
            Err(ModelError::InvalidRequest(_))
        ));
    }

    #[test]
    fn overloaded_error_event_is_retryable() {
        let mut decoder = AnthropicDecoder::default();
        let err = decoder
            .on_event(
                "error",
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                &mut Vec::new(),
            )
            .unwrap_err();
        assert!(err.is_retryable(), "{err}");
    }
}
