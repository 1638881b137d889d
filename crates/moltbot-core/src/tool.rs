//! The capability plug-in point: [`Tool`] and the types that cross it.
//!
//! A tool is something the assistant can do (fetch a page, run a command, set a reminder).
//! The model sees its [`ToolSpec`] (name, description, JSON-schema parameters) and proposes
//! calls; the agent loop runs them through [`Tool::call`] with a [`ToolContext`] that says
//! whose turn it is and carries the turn's cancellation. Outputs are capped at
//! [`Tool::output_cap`] characters before they go back to the model.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What the model is told about a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// `[a-z][a-z0-9_]*`, at most 64 characters (what OpenAI and Anthropic accept).
    pub name: String,
    pub description: String,
    /// A JSON schema of type `object`.
    pub parameters: serde_json::Value,
}

impl ToolSpec {
    /// The OpenAI `tools` entry for this tool (also what [`crate::ChatRequest::tools`] holds).
    pub fn to_openai(&self) -> serde_json::Value {
        serde_json::json!({
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.parameters,
            }
        })
    }

    /// Whether `name` is a valid tool name.
    pub fn valid_name(name: &str) -> bool {
        let mut chars = name.chars();
        name.len() <= 64
            && chars.next().is_some_and(|c| c.is_ascii_lowercase())
            && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    }
}

/// A call the model asked for, complete (fragments already joined).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    /// The arguments as the model wrote them: a JSON object in text.
    pub arguments: String,
}

/// Where a turn came from when it came from a messaging channel: replies and reminders
/// created during the turn go back there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Channel kind (`telegram`, `whatsapp`, …).
    pub channel: String,
    pub chat_id: String,
}

/// Whose turn a tool runs in.
#[derive(Debug, Clone)]
pub struct ToolContext {
    pub session_id: String,
    /// Stable user key (`telegram:42`, or the HTTP caller's `user`), when known.
    pub user: Option<String>,
    pub origin: Option<Origin>,
    /// The user's message of the turn (tools may read what the model left out from it,
    /// as the `cron` tool reads "tomorrow at 9").
    pub request: Option<String>,
    /// Fires when the turn is abandoned (client gone, budget spent, shutdown); a tool stops
    /// its work promptly and returns [`ToolError::Cancelled`].
    pub cancel: CancellationToken,
    /// Time left for this call.
    pub timeout: Duration,
}

impl ToolContext {
    /// A context for calls made outside a chat turn (CLI, cron, tests).
    pub fn detached(session_id: impl Into<String>) -> Self {
        Self {
            session_id: session_id.into(),
            user: None,
            origin: None,
            request: None,
            cancel: CancellationToken::new(),
            timeout: Duration::from_secs(60),
        }
    }
}

/// A binary result besides the text (a screenshot).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attachment {
    pub mime: String,
    pub data: Vec<u8>,
}

/// What a tool returns: text for the model, and optionally files for the user.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ToolOutput {
    pub text: String,
    pub attachments: Vec<Attachment>,
}

impl ToolOutput {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            attachments: Vec::new(),
        }
    }

    /// Cut the text to at most `max` characters (on a char boundary), saying so at the end.
    pub fn cap(mut self, max: usize) -> (Self, bool) {
        match self.text.char_indices().nth(max) {
            None => (self, false),
            Some((cut, _)) => {
                let total = self.text.chars().count();
                self.text.truncate(cut);
                self.text
                    .push_str(&format!("\n[output cut at {max} of {total} characters]"));
                (self, true)
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// The arguments do not fit the tool's schema; the message names the field.
    #[error("invalid arguments: {0}")]
    InvalidArguments(String),
    /// A policy refused the call (SSRF guard, exec policy, a skill's allowed tools, the
    /// owner said no).
    #[error("refused: {0}")]
    Denied(String),
    #[error("the tool did not finish within {0:?}")]
    Timeout(Duration),
    #[error("the tool is not available: {0}")]
    Unavailable(String),
    #[error("the tool failed: {0}")]
    Failed(String),
    #[error("the tool call was cancelled")]
    Cancelled,
}

impl ToolError {
    /// Stable name used in metrics labels and event payloads.
    pub fn kind(&self) -> &'static str {
        match self {
            ToolError::InvalidArguments(_) => "tool_invalid_arguments",
            ToolError::Denied(_) => "tool_denied",
            ToolError::Timeout(_) => "tool_timeout",
            ToolError::Unavailable(_) => "tool_unavailable",
            ToolError::Failed(_) => "tool_failed",
            ToolError::Cancelled => "cancelled",
        }
    }
}

/// Default cap on a tool's text output, in characters (about 2–3k tokens).
pub const DEFAULT_OUTPUT_CAP: usize = 8_000;

/// Something the assistant can do. Implementations: the built-in tools in `moltbot-tools`
/// (browser, cron, web_fetch, exec, memory) and wrappers that restrict them (a skill's
/// allowed tools).
pub trait Tool: Send + Sync + 'static {
    fn spec(&self) -> &ToolSpec;

    /// Longest text output handed back to the model, in characters.
    fn output_cap(&self) -> usize {
        DEFAULT_OUTPUT_CAP
    }

    /// Run one call. `arguments` is the JSON object the model wrote (already parsed). The
    /// future stops promptly when `ctx.cancel` fires.
    fn call<'a>(
        &'a self,
        arguments: serde_json::Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>>;
}

/// Helpers for reading arguments with errors that name the field.
pub mod args {
    use super::ToolError;
    use serde_json::Value;

    /// A required string field.
    pub fn string<'a>(args: &'a Value, field: &str) -> Result<&'a str, ToolError> {
        match args.get(field) {
            Some(Value::String(s)) if !s.trim().is_empty() => Ok(s),
            Some(Value::String(_)) => Err(ToolError::InvalidArguments(format!(
                "`{field}` must not be empty"
            ))),
            Some(other) => Err(ToolError::InvalidArguments(format!(
                "`{field}` must be a string, got {other}"
            ))),
            None => Err(ToolError::InvalidArguments(format!(
                "`{field}` is required"
            ))),
        }
    }

    /// An optional string field (`null` counts as absent).
    pub fn opt_string<'a>(args: &'a Value, field: &str) -> Result<Option<&'a str>, ToolError> {
        match args.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => Err(ToolError::InvalidArguments(format!(
                "`{field}` must be a string, got {other}"
            ))),
        }
    }

    /// An optional integer field within `min..=max`.
    pub fn opt_u64(
        args: &Value,
        field: &str,
        min: u64,
        max: u64,
    ) -> Result<Option<u64>, ToolError> {
        match args.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(ToolError::InvalidArguments(format!(
                    "`{field}` must be an integer between {min} and {max}, got {v}"
                ))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_caps() {
        assert!(ToolSpec::valid_name("web_fetch"));
        assert!(!ToolSpec::valid_name("Web"));
        assert!(!ToolSpec::valid_name("1x"));
        assert!(!ToolSpec::valid_name(""));
        let (out, cut) = ToolOutput::text("héllo world").cap(5);
        assert!(cut);
        assert!(out.text.starts_with("héllo\n[output cut at 5 of 11"));
        let (out, cut) = ToolOutput::text("short").cap(5);
        assert!(!cut);
        assert_eq!(out.text, "short");
    }

    #[test]
    fn argument_errors_name_the_field() {
        let v = serde_json::json!({"url": 3, "empty": " "});
        let e = args::string(&v, "url").unwrap_err().to_string();
        assert!(e.contains("`url` must be a string, got 3"), "{e}");
        assert!(args::string(&v, "empty")
            .unwrap_err()
            .to_string()
            .contains("`empty` must not be empty"));
        assert!(args::string(&v, "nope")
            .unwrap_err()
            .to_string()
            .contains("`nope` is required"));
        let e = args::opt_u64(&serde_json::json!({"n": 0}), "n", 1, 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("between 1 and 10, got 0"), "{e}");
    }
}
