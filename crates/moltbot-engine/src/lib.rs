//! The dialogue engine's turn pipeline.
//!
//! # Layout
//! - [`engine`]: [`Engine`], a cheap-clone handle that runs turns: load history (hot cache,
//!   else the store), call the model, stream deltas, persist both sides of the turn.
//! - [`sessions`]: the per-session lock + hot history cache (one turn at a time per session,
//!   many sessions in parallel, LRU-bounded).
//! - [`slot`]: [`ModelSlot`], the model currently serving, which may still be loading.
//! - [`router`]: [`DialogueRouter`], the decision layer: understanding (DUE) and retrieval
//!   (KRS) pick a template reply, a grounded answer with citations, or the model.
//! - [`agent`]: the agent loop: tool calls proposed by the model run through the
//!   capability registry (`moltbot-tools`) until a final answer; [`ToolEvent`]s stream.
//! - [`bus`]: the [`MessageBus`] seam through which turns reach the replica that runs them
//!   (none by default: turns run here).
//! - [`error`]: [`EngineError`], the failures of a turn.

pub mod agent;
pub mod bus;
pub mod engine;
pub mod error;
pub mod router;
pub mod sessions;
pub mod slot;

pub use agent::{AttachmentData, ToolEvent, ToolPhase, Toolbox};
pub use bus::{BusHealth, MessageBus, WireError};
pub use engine::{
    Engine, EngineOptions, Overrides, SessionEvent, SessionEventKind, TurnEvent, TurnOutcome,
    TurnRequest, ROUTER_MODEL_ID,
};
pub use error::EngineError;
pub use router::{Citation, DialogueRouter, Plan, Route, RouteInfo};
pub use slot::{ModelSlot, ModelState};
