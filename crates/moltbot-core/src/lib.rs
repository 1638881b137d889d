//! Core types of moltbot: nothing here depends on a vendor, a database or a network stack.
//!
//! # Layout
//! - [`config`]: the one configuration tree ([`Config`]), layered defaults → file → env → flags.
//! - [`secret`]: [`Secret`], a string that never prints.
//! - [`model`]: the [`ChatModel`] trait every generation provider implements, with its
//!   request, chunk and error types.
//! - [`channel`]: the [`Channel`] trait each messaging platform implements and the
//!   [`InboundSink`] through which adapters hand messages to the turn pipeline.
//! - [`encoder`]: the [`Encoder`] trait (sentence vectors) shared by understanding and
//!   retrieval.
//! - [`tool`]: the [`Tool`] trait each capability implements (spec, call with cancellation,
//!   output cap) and the [`ToolCall`]s models propose.
//! - [`supervise`]: the [`Supervisor`] that restarts failed background components with
//!   backoff and keeps their states for `/health`.
//! - [`intern`]: `'static` copies of label strings read back from the message bus.
//! - [`envinfo`]: the environment snapshot (OS, CPUs, memory, disk, GPU) shown by
//!   `/health` and `doctor` and used to pick thread counts.

pub mod channel;
pub mod config;
pub mod encoder;
pub mod envinfo;
pub mod intern;
pub mod model;
pub mod secret;
pub mod supervise;
pub mod tool;

pub use channel::{
    Channel, ChannelError, ChannelState, ChatCommands, Inbound, InboundSink, Outbound,
};
pub use config::{Config, ConfigError};
pub use encoder::{weights_of, EncodeError, Encoder};
pub use model::{
    ChatChunk, ChatMessage, ChatModel, ChatRequest, ChunkStream, Completion, FinishReason,
    ModelError, Role, ToolCallDelta, ToolChoice, Usage,
};
pub use secret::Secret;
pub use supervise::{Failure, Supervisor};
pub use tool::{Attachment, Origin, Tool, ToolCall, ToolContext, ToolError, ToolOutput, ToolSpec};
