//! Core types of moltbot: nothing here depends on a vendor, a database or a network stack.
//!
//! # Layout
//! - [`config`]: the one configuration tree ([`Config`]), layered defaults → file → env → flags.
//! - [`secret`]: [`Secret`], a string that never prints.
//! - [`model`]: the [`ChatModel`] trait every generation provider implements, with its
//!   request, chunk and error types.
//! - [`envinfo`]: the environment snapshot (OS, CPUs, memory, disk, GPU) shown by
//!   `/health` and `doctor` and used to pick thread counts.

pub mod config;
pub mod envinfo;
pub mod model;
pub mod secret;

pub use config::{Config, ConfigError};
pub use model::{
    ChatChunk, ChatMessage, ChatModel, ChatRequest, ChunkStream, Completion, FinishReason,
    ModelError, Role, ToolCallDelta, Usage,
};
pub use secret::Secret;
