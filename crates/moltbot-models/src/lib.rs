//! Generation providers and the model cache.
//!
//! # Layout
//! - [`providers::openai`]: any OpenAI-compatible chat-completions server (streaming, tool-call
//!   deltas, retries with backoff on 429/5xx).
//! - [`providers::anthropic`]: the Anthropic Messages API (streaming).
//! - [`providers::failover`]: an ordered list of providers behind one [`ChatModel`].
//! - `providers::local` (feature `local`): a GGUF model run in process by llama.cpp.
//! - [`fetch`]: the model cache: fetching the embedded default model, listing models.

pub mod fetch;
pub mod providers;

pub use moltbot_core::ChatModel;
