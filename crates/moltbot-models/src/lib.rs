//! Generation providers and the model cache.
//!
//! # Layout
//! - [`providers::openai`]: any OpenAI-compatible chat-completions server (streaming, tool-call
//!   deltas, retries with backoff on 429/5xx).
//! - [`providers::anthropic`]: the Anthropic Messages API (streaming).
//! - [`providers::failover`]: an ordered list of providers behind one [`ChatModel`].
//! - `providers::local` (feature `local`): a GGUF model run in process by llama.cpp.
//! - [`filter`]: the response filter. [`filter::ResponseFilter`] judges a reply (empty,
//!   repetition loop, leaked system prompt, broken tool-call JSON, blocked content) and
//!   repairs or replaces it; [`filter::StreamGuard`] does it on a stream with a short
//!   held-back tail; [`filter::FilteredModel`] wraps any [`ChatModel`] with it.
//! - [`fetch`]: the model cache: fetching the embedded default model, listing models.

pub mod fetch;
pub mod filter;
pub mod providers;

pub use moltbot_core::ChatModel;
