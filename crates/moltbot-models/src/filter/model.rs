//! [`FilteredModel`]: any [`ChatModel`] with the response filter on its replies.

use super::{Action, FilterContext, Outcome, ResponseFilter};
use futures::StreamExt;
use moltbot_core::model::{ChatChunk, ChatModel, ChatRequest, ChunkStream, FinishReason, Usage};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// Wraps a model (usually the whole provider chain) and passes each streamed reply through
/// a [`StreamGuard`](super::StreamGuard).
///
/// - Text is held back by the guard's short tail and emitted as it clears the checks.
/// - Tool-call fragments and usage pass through at once; `Finish` comes after the last text.
/// - When the guard stops a reply (a loop, blocked content) the inner stream is dropped at
///   once, which ends generation in the provider, and the reply ends with `Finish(Stop)`.
///   Providers send usage last, so unless one came already the wrapper sends an estimate:
///   one completion token per text chunk received (providers stream about a token per
///   chunk) and a quarter of the request's characters as prompt tokens.
/// - An error from the inner stream is passed on as it is; text still held back is dropped
///   with the failed reply.
/// - The cancellation token goes to the inner model unchanged.
pub struct FilteredModel {
    inner: Arc<dyn ChatModel>,
    filter: ResponseFilter,
}

impl FilteredModel {
    pub fn new(inner: Arc<dyn ChatModel>, filter: ResponseFilter) -> Self {
        Self { inner, filter }
    }
}

impl ChatModel for FilteredModel {
    fn id(&self) -> &str {
        self.inner.id()
    }

    fn stream(&self, request: ChatRequest, cancel: CancellationToken) -> ChunkStream {
        let mut guard = Some(self.filter.guard(&FilterContext::from_request(&request)));
        let prompt_chars: usize = request.messages.iter().map(|m| m.content.len()).sum();
        let mut usage_seen = false;
        let mut text_chunks: u32 = 0;
        let mut inner = self.inner.stream(request, cancel);
        let stream = async_stream::stream! {
            while let Some(item) = inner.next().await {
                let chunk = match item {
                    Ok(chunk) => chunk,
                    Err(e) => {
                        yield Err(e);
                        return;
                    }
                };
                match chunk {
                    ChatChunk::Text(text) => {
                        // Text after `Finish` breaks the provider contract; it is not checked,
                        // so it is not passed on either.
                        let Some(g) = guard.as_mut() else { continue };
                        text_chunks = text_chunks.saturating_add(1);
                        let step = g.push(&text);
                        if !step.emit.is_empty() {
                            yield Ok(ChatChunk::Text(step.emit));
                        }
                        if step.stop {
                            // Stop the provider before anything else.
                            drop(inner);
                            if let Some(g) = guard.take() {
                                let end = g.finish();
                                record(end.outcome);
                                if !end.emit.is_empty() {
                                    yield Ok(ChatChunk::Text(end.emit));
                                }
                            }
                            if !usage_seen {
                                yield Ok(ChatChunk::Usage(Usage {
                                    prompt_tokens: u32::try_from(prompt_chars.div_ceil(4))
                                        .unwrap_or(u32::MAX),
                                    completion_tokens: text_chunks,
                                }));
                            }
                            yield Ok(ChatChunk::Finish(FinishReason::Stop));
                            return;
                        }
                    }
                    ChatChunk::ToolCall(delta) => {
                        if let Some(g) = guard.as_mut() {
                            g.tool_call(&delta);
                        }
                        yield Ok(ChatChunk::ToolCall(delta));
                    }
                    ChatChunk::Usage(usage) => {
                        usage_seen = true;
                        yield Ok(ChatChunk::Usage(usage));
                    }
                    ChatChunk::Finish(reason) => {
                        if let Some(g) = guard.take() {
                            let end = g.finish();
                            record(end.outcome);
                            if !end.emit.is_empty() {
                                yield Ok(ChatChunk::Text(end.emit));
                            }
                        }
                        yield Ok(ChatChunk::Finish(reason));
                    }
                }
            }
            // A stream that ends without `Finish` still gets its tail.
            if let Some(g) = guard.take() {
                let end = g.finish();
                record(end.outcome);
                if !end.emit.is_empty() {
                    yield Ok(ChatChunk::Text(end.emit));
                }
            }
        };
        Box::pin(stream)
    }
}

/// Count one judged reply. Labels come from two fixed sets (4 verdicts × 6 issues).
fn record(outcome: Outcome) {
    let verdict = outcome.action.as_str();
    let issue = outcome.issue_label();
    metrics::counter!("moltbot_filter_total", "verdict" => verdict, "issue" => issue).increment(1);
    match outcome.action {
        Action::Pass => {}
        Action::Repaired => tracing::info!(verdict, issue, "response filter repaired a reply"),
        Action::Rejected | Action::Flagged => {
            tracing::warn!(
                verdict,
                issue,
                "response filter rejected or flagged a reply"
            )
        }
    }
}
