//! The generation plug-in point: [`ChatModel`] and the types that cross it.
//!
//! A provider turns a [`ChatRequest`] into a stream of [`ChatChunk`]s. Non-streaming callers
//! use [`collect`]. Retry, failover and traffic splitting are wrappers implementing the same
//! trait, so the rest of the system never knows which provider answers.

use futures::stream::BoxStream;
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Tool,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
            Role::Tool => "tool",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "tool" => Some(Role::Tool),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: Role,
    pub content: String,
    /// For `Role::Tool` messages: the id of the call this answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
    /// For `Role::Assistant` messages: the tools the model asked to run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tool_calls: Vec<crate::tool::ToolCall>,
}

impl ChatMessage {
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self {
            role,
            content: content.into(),
            tool_call_id: None,
            tool_calls: Vec::new(),
        }
    }

    /// The answer to tool call `call_id`.
    pub fn tool_result(call_id: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            tool_call_id: Some(call_id.into()),
            ..Self::new(Role::Tool, content)
        }
    }

    /// An assistant message asking for tool calls (with whatever text came with them).
    pub fn tool_calls(text: impl Into<String>, calls: Vec<crate::tool::ToolCall>) -> Self {
        Self {
            tool_calls: calls,
            ..Self::new(Role::Assistant, text)
        }
    }
}

/// What a caller asks of a model. Sampling fields left `None` take the provider's default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<ChatMessage>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<u64>,
    #[serde(default)]
    pub stop: Vec<String>,
    /// Sample only among the `k` most likely tokens (local model; remote providers that know
    /// the field get it too).
    #[serde(default)]
    pub top_k: Option<u32>,
    /// Divides the scores of recently generated tokens (1.0 is off; local model only).
    #[serde(default)]
    pub repetition_penalty: Option<f32>,
    /// Beam search with this many beams (local model only). 1 turns it off; 0 lets the
    /// model pick a width from the request's budget and its current load.
    #[serde(default)]
    pub beam_width: Option<u32>,
    /// Tool definitions in the OpenAI `tools` JSON format, passed through to providers that
    /// support them.
    #[serde(default)]
    pub tools: Vec<serde_json::Value>,
    /// Whether the model must call a tool (only meaningful with `tools`).
    #[serde(default)]
    pub tool_choice: ToolChoice,
    /// Arguments of the tool named by `tool_choice` that the caller already knows (the
    /// turn's intent decided them). The local model is held to them; other providers do
    /// not see them (the agent loop fills them into calls that leave them out).
    #[serde(default)]
    pub tool_arguments: serde_json::Map<String, serde_json::Value>,
    /// With a named tool: the arguments the model is to write besides `tool_arguments`
    /// (the local model's grammar leaves the others out; empty: none); `None`: any.
    #[serde(default)]
    pub tool_fields: Option<Vec<String>>,
}

/// How a model is to use the offered tools.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolChoice {
    /// The model decides between answering and calling a tool.
    #[default]
    Auto,
    /// The model must call one of the tools.
    Required,
    /// The model must call this tool.
    Tool(String),
}

/// One piece of a tool call as providers stream it (OpenAI sends the name first, then the
/// arguments in fragments, all tagged with the call's index).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolCallDelta {
    pub index: u32,
    pub id: Option<String>,
    pub name: Option<String>,
    pub arguments: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: u32,
    pub completion_tokens: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinishReason {
    Stop,
    Length,
    ToolCalls,
    Cancelled,
}

impl FinishReason {
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Cancelled => "cancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum ChatChunk {
    /// New text, to be appended to what came before.
    Text(String),
    ToolCall(ToolCallDelta),
    Usage(Usage),
    Finish(FinishReason),
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot reach the model provider: {0}")]
    Connect(String),
    #[error("the model provider did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the model provider is rate limiting (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the model provider answered HTTP {status}: {body}")]
    Upstream { status: u16, body: String },
    #[error("the model provider sent something we cannot read: {0}")]
    Protocol(String),
    #[error("the model is not available: {0}")]
    Unavailable(String),
    #[error("invalid request for the model: {0}")]
    InvalidRequest(String),
    #[error("generation was cancelled")]
    Cancelled,
}

impl ModelError {
    /// Stable name used in metrics labels and JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::Connect(_) => "model_connect",
            ModelError::Timeout(_) => "model_timeout",
            ModelError::RateLimited { .. } => "model_rate_limited",
            ModelError::Upstream { .. } => "model_upstream",
            ModelError::Protocol(_) => "model_protocol",
            ModelError::Unavailable(_) => "model_unavailable",
            ModelError::InvalidRequest(_) => "model_invalid_request",
            ModelError::Cancelled => "cancelled",
        }
    }

    /// Whether another attempt (same or another provider) may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ModelError::Connect(_)
            | ModelError::Timeout(_)
            | ModelError::RateLimited { .. }
            | ModelError::Unavailable(_) => true,
            ModelError::Upstream { status, .. } => *status >= 500,
            ModelError::Protocol(_) | ModelError::InvalidRequest(_) | ModelError::Cancelled => {
                false
            }
        }
    }
}

pub type ChunkStream = BoxStream<'static, Result<ChatChunk, ModelError>>;

/// A generation provider. Implementations: OpenAI-compatible HTTP, Anthropic, the local
/// GGUF model, and wrappers (failover) that hold other `ChatModel`s.
pub trait ChatModel: Send + Sync + 'static {
    /// Stable identifier, e.g. `local/SmolLM2-135M-Instruct` or `openai/gpt-4o-mini`.
    fn id(&self) -> &str;

    /// Start generating. The stream ends after a [`ChatChunk::Finish`] or an error; when
    /// `cancel` fires the provider stops work promptly (frees the HTTP connection or the
    /// decode loop) and ends the stream with [`ModelError::Cancelled`].
    fn stream(&self, request: ChatRequest, cancel: CancellationToken) -> ChunkStream;
}

/// A whole answer, gathered from a stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Completion {
    pub text: String,
    pub tool_calls: Vec<ToolCallDelta>,
    pub usage: Usage,
    pub finish_reason: Option<FinishReason>,
}

impl Completion {
    /// Fold one chunk into the completion.
    pub fn push(&mut self, chunk: ChatChunk) {
        match chunk {
            ChatChunk::Text(t) => self.text.push_str(&t),
            ChatChunk::ToolCall(d) => merge_tool_call(&mut self.tool_calls, d),
            ChatChunk::Usage(u) => self.usage = u,
            ChatChunk::Finish(r) => self.finish_reason = Some(r),
        }
    }
}

/// Fold a streamed tool-call fragment into the calls gathered so far (fragments of one
/// call share its `index`; the id and name come once, the arguments in pieces).
pub fn merge_tool_call(calls: &mut Vec<ToolCallDelta>, d: ToolCallDelta) {
    match calls.iter_mut().find(|c| c.index == d.index) {
        Some(call) => {
            if call.id.is_none() {
                call.id = d.id;
            }
            if call.name.is_none() {
                call.name = d.name;
            }
            call.arguments.push_str(&d.arguments);
        }
        None => calls.push(d),
    }
}

/// Run a request to the end and gather the answer.
pub async fn collect(
    model: &dyn ChatModel,
    request: ChatRequest,
    cancel: CancellationToken,
) -> Result<Completion, ModelError> {
    let mut stream = model.stream(request, cancel);
    let mut out = Completion::default();
    while let Some(chunk) = stream.next().await {
        out.push(chunk?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_merges_tool_call_fragments() {
        let mut c = Completion::default();
        c.push(ChatChunk::ToolCall(ToolCallDelta {
            index: 0,
            id: Some("call_1".into()),
            name: Some("get_weather".into()),
            arguments: "{\"city\":".into(),
        }));
        c.push(ChatChunk::ToolCall(ToolCallDelta {
            index: 0,
            id: None,
            name: None,
            arguments: "\"Berlin\"}".into(),
        }));
        c.push(ChatChunk::Text("ok".into()));
        c.push(ChatChunk::Finish(FinishReason::ToolCalls));
        assert_eq!(c.tool_calls.len(), 1);
        assert_eq!(c.tool_calls[0].arguments, "{\"city\":\"Berlin\"}");
        assert_eq!(c.tool_calls[0].name.as_deref(), Some("get_weather"));
        assert_eq!(c.text, "ok");
        assert_eq!(c.finish_reason, Some(FinishReason::ToolCalls));
    }

    #[test]
    fn retryable_errors() {
        assert!(ModelError::Upstream {
            status: 503,
            body: String::new()
        }
        .is_retryable());
        assert!(!ModelError::Upstream {
            status: 400,
            body: String::new()
        }
        .is_retryable());
        assert!(ModelError::Connect("refused".into()).is_retryable());
        assert!(!ModelError::Cancelled.is_retryable());
    }
}
