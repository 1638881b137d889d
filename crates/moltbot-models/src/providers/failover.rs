//! An ordered list of providers behind one [`ChatModel`].
//!
//! The first provider answers. If it fails with a retryable error (connection, timeout, rate
//! limit, 5xx) before producing anything, the next one is asked, and so on. Once any chunk has
//! reached the caller the answer cannot be restarted elsewhere without repeating text, so a
//! later error is passed through as it is.

use futures::StreamExt;
use moltbot_core::model::{ChatModel, ChatRequest, ChunkStream, ModelError};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

pub struct Failover {
    id: String,
    providers: Arc<[Arc<dyn ChatModel>]>,
}

impl Failover {
    /// `providers` in the order they are tried. The id is the single provider's own id, or
    /// `failover(a,b,…)` for several.
    pub fn new(providers: Vec<Arc<dyn ChatModel>>) -> Self {
        let id = match providers.as_slice() {
            [only] => only.id().to_string(),
            all => {
                let ids: Vec<&str> = all.iter().map(|p| p.id()).collect();
                format!("failover({})", ids.join(","))
            }
        };
        Self {
            id,
            providers: providers.into(),
        }
    }
}

impl ChatModel for Failover {
    fn id(&self) -> &str {
        &self.id
    }

    fn stream(&self, request: ChatRequest, cancel: CancellationToken) -> ChunkStream {
        let providers = Arc::clone(&self.providers);
        let stream = async_stream::stream! {
            if providers.is_empty() {
                yield Err(ModelError::Unavailable("no model provider is configured".into()));
                return;
            }
            for (position, provider) in providers.iter().enumerate() {
                let kind = provider_label(provider.id());
                let started = std::time::Instant::now();
                let mut chunks = provider.stream(request.clone(), cancel.clone());
                let mut emitted = false;
                let mut failure = None;
                while let Some(item) = chunks.next().await {
                    match item {
                        Ok(chunk) => {
                            emitted = true;
                            yield Ok(chunk);
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                // Free the provider's connection before anything else happens.
                drop(chunks);
                let result = match &failure {
                    None => "ok",
                    Some(ModelError::Cancelled) => "cancelled",
                    Some(_) => "error",
                };
                metrics::counter!("moltbot_provider_requests_total", "provider" => kind, "result" => result)
                    .increment(1);
                metrics::histogram!("moltbot_provider_latency", "provider" => kind)
                    .record(started.elapsed().as_secs_f64() * 1e3);
                let Some(error) = failure else {
                    return;
                };
                let next = providers.get(position + 1);
                match next {
                    Some(next) if !emitted && error.is_retryable() => {
                        tracing::warn!(
                            provider = provider.id(),
                            next = next.id(),
                            kind = error.kind(),
                            cause = %error,
                            "model provider failed before answering; trying the next one",
                        );
                    }
                    _ => {
                        if emitted && !matches!(error, ModelError::Cancelled) {
                            tracing::warn!(
                                provider = provider.id(),
                                kind = error.kind(),
                                cause = %error,
                                "model provider failed in the middle of an answer",
                            );
                        }
                        yield Err(error);
                        return;
                    }
                }
            }
        };
        Box::pin(stream)
    }
}

/// The provider's kind (`openai`, `anthropic`, `local`) from its id (`kind/model`): a
/// bounded metric label, whatever model names the config holds.
fn provider_label(id: &str) -> &'static str {
    match id.split('/').next() {
        Some("openai") => "openai",
        Some("anthropic") => "anthropic",
        Some("local") => "local",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::providers::anthropic::AnthropicProvider;
    use crate::providers::openai::OpenAiProvider;
    use moltbot_core::config::{AnthropicConfig, OpenAiConfig};

    // Behaviour against real HTTP servers is tested in `tests/providers.rs`.

    #[test]
    fn ids() {
        let openai: Arc<dyn ChatModel> =
            Arc::new(OpenAiProvider::new(&OpenAiConfig::default()).expect("valid default"));
        let anthropic: Arc<dyn ChatModel> =
            Arc::new(AnthropicProvider::new(&AnthropicConfig::default()).expect("valid default"));
        let one = Failover::new(vec![openai.clone()]);
        assert_eq!(one.id(), "openai/gpt-4o-mini");
        let two = Failover::new(vec![openai, anthropic]);
        assert_eq!(
            two.id(),
            "failover(openai/gpt-4o-mini,anthropic/claude-3-5-haiku-latest)"
        );
    }

    #[test]
    fn provider_labels_are_bounded() {
        assert_eq!(provider_label("openai/gpt-4o-mini"), "openai");
        assert_eq!(provider_label("local/SmolLM2-135M-Instruct.Q4_1"), "local");
        assert_eq!(provider_label("anthropic/claude"), "anthropic");
        assert_eq!(provider_label("something-else"), "other");
    }

    #[tokio::test]
    async fn no_providers_is_unavailable() {
        let out: Vec<_> = Failover::new(Vec::new())
            .stream(ChatRequest::default(), CancellationToken::new())
            .collect()
            .await;
        assert!(matches!(out[..], [Err(ModelError::Unavailable(_))]));
    }
}
