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
//! - [`error`]: [`EngineError`], the failures of a turn.
//!
//! The agent loop (tools) comes with a later issue.

pub mod engine;
pub mod error;
pub mod router;
pub mod sessions;
pub mod slot;

pub use engine::{
    Engine, EngineOptions, Overrides, SessionEvent, SessionEventKind, TurnEvent, TurnOutcome,
    TurnRequest, ROUTER_MODEL_ID,
};
pub use error::EngineError;
pub use router::{Citation, DialogueRouter, Plan, Route, RouteInfo};
pub use slot::{ModelSlot, ModelState};
