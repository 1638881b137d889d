//! `memory`: facts a user asked the assistant to remember, recalled later by meaning.
//!
//! Each fact is a small document in a knowledge index of its own (`<data dir>/memory`, the
//! same machinery as documents: chunking, vectors, BM25), named `memory:<user>:<id>`.
//! A separate index keeps one user's facts out of everyone's document answers; recall only
//! searches the asking user's facts.

use futures::future::BoxFuture;
use moltbot_core::tool::args;
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use moltbot_knowledge::{Knowledge, SearchMode, SearchOptions};
use std::sync::Arc;

/// Longest fact, in characters.
const MAX_FACT_CHARS: usize = 2_000;

pub struct MemoryTool {
    spec: ToolSpec,
    index: Arc<Knowledge>,
    recall_results: usize,
}

impl MemoryTool {
    pub fn new(index: Arc<Knowledge>, recall_results: usize) -> Self {
        Self {
            spec: ToolSpec {
                name: "memory".into(),
                description: "Remember a fact about the user, or recall remembered facts.".into(),
                parameters: serde_json::json!({
                    "type": "object",
                    "properties": {
                        "action": {"type": "string", "enum": ["remember", "recall", "forget"]},
                        "fact": {"type": "string", "description": "for remember"},
                        "query": {"type": "string", "description": "for recall/forget"}
                    },
                    "required": ["action"]
                }),
            },
            index,
            recall_results,
        }
    }

    fn prefix(ctx: &ToolContext) -> String {
        let who = ctx.user.as_deref().unwrap_or(&ctx.session_id);
        format!("memory:{who}:")
    }

    /// The user's facts best matching `query`: (source, text).
    fn find(
        &self,
        prefix: &str,
        query: &str,
        k: usize,
    ) -> Result<Vec<(String, String)>, ToolError> {
        let mine: Vec<String> = self
            .index
            .list()
            .map_err(|e| ToolError::Failed(e.to_string()))?
            .into_iter()
            .map(|s| s.source)
            .filter(|s| s.starts_with(prefix))
            .collect();
        if mine.is_empty() {
            return Ok(Vec::new());
        }
        let opts = SearchOptions {
            sources: Some(mine),
            mode: SearchMode::Hybrid,
        };
        let hits = self
            .index
            .search(query, k, &opts)
            .map_err(|e| ToolError::Failed(e.to_string()))?;
        Ok(hits.into_iter().map(|h| (h.source, h.text)).collect())
    }

    fn run(&self, arguments: &serde_json::Value, ctx: &ToolContext) -> Result<String, ToolError> {
        let prefix = Self::prefix(ctx);
        match args::string(arguments, "action")? {
            "remember" => {
                // A fact with no words in it (small models write ")" now and then) gives
                // way to what the user said, which is what they asked to keep.
                let given = args::opt_string(arguments, "fact")?.map(str::trim);
                let fact = match (given, ctx.request.as_deref()) {
                    (Some(f), _) if meaningful(f) && !looks_like_markup(f) => f.to_string(),
                    (_, Some(said)) if meaningful(said) => strip_remember(said),
                    _ => return Err(ToolError::InvalidArguments("`fact` is required".into())),
                };
                let fact = fact.as_str();
                let n = fact.chars().count();
                if n > MAX_FACT_CHARS {
                    return Err(ToolError::InvalidArguments(format!(
                        "`fact` must be at most {MAX_FACT_CHARS} characters, got {n}"
                    )));
                }
                let id = uuid::Uuid::new_v4().simple().to_string();
                self.index
                    .add_text(&format!("{prefix}{}", &id[..12]), fact)
                    .map_err(|e| ToolError::Failed(e.to_string()))?;
                Ok(format!("Remembered: {fact}"))
            }
            "recall" => {
                let query = args::opt_string(arguments, "query")?.unwrap_or("everything");
                let found = self.find(&prefix, query, self.recall_results)?;
                if found.is_empty() {
                    return Ok("Nothing remembered yet for this user.".into());
                }
                let lines: Vec<String> = found.iter().map(|(_, t)| format!("- {t}")).collect();
                Ok(format!("Remembered facts:\n{}", lines.join("\n")))
            }
            "forget" => {
                let query = args::string(arguments, "query")?;
                let Some((source, text)) = self.find(&prefix, query, 1)?.into_iter().next() else {
                    return Ok("Nothing remembered matches that.".into());
                };
                self.index
                    .remove_source(&source)
                    .map_err(|e| ToolError::Failed(e.to_string()))?;
                Ok(format!("Forgot: {text}"))
            }
            other => Err(ToolError::InvalidArguments(format!(
                "`action` must be one of remember, recall, forget; got {other:?}"
            ))),
        }
    }
}

/// Tags, braces or a tool-call marker: a model's fact that picked up prompt syntax.
fn looks_like_markup(text: &str) -> bool {
    text.contains(['<', '>', '{', '}']) || text.contains("tool_call")
}

/// At least three letters or digits.
fn meaningful(text: &str) -> bool {
    text.chars().filter(|c| c.is_alphanumeric()).count() >= 3
}

/// "Please remember that my locker code is 4412" → "my locker code is 4412".
fn strip_remember(said: &str) -> String {
    let lower = said.to_lowercase();
    let mut cut = 0;
    for lead in [
        "please ",
        "can you ",
        "could you ",
        "remember that ",
        "remember ",
        "note that ",
        "don't forget that ",
        "don't forget ",
        "keep in mind that ",
        "keep in mind ",
    ] {
        if lower[cut..].starts_with(lead) {
            cut += lead.len();
        }
    }
    said.get(cut..).unwrap_or(said).trim().to_string()
}

impl Tool for MemoryTool {
    fn spec(&self) -> &ToolSpec {
        &self.spec
    }

    fn call<'a>(
        &'a self,
        arguments: serde_json::Value,
        ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(async move {
            // The index does blocking work (encoding, SQLite); keep it off the async workers.
            let this = Self {
                spec: self.spec.clone(),
                index: self.index.clone(),
                recall_results: self.recall_results,
            };
            let ctx_owned = ctx.clone();
            let job = tokio::task::spawn_blocking(move || this.run(&arguments, &ctx_owned));
            tokio::select! {
                r = job => r.map_err(|e| ToolError::Failed(e.to_string()))?.map(ToolOutput::text),
                () = ctx.cancel.cancelled() => Err(ToolError::Cancelled),
            }
        })
    }
}
