//! The dialogue engine's turn pipeline.
//!
//! # Layout
//! - [`engine`]: [`Engine`], a cheap-clone handle that runs turns: load history (hot cache,
//!   else the store), call the model, stream deltas, persist both sides of the turn.
//! - [`sessions`]: the per-session lock + hot history cache (one turn at a time per session,
//!   many sessions in parallel, LRU-bounded).
//! - [`slot`]: [`ModelSlot`], the model currently serving, which may still be loading.
//! - [`error`]: [`EngineError`], the failures of a turn.
//!
//! Later issues add understanding (DUE), retrieval (KRS), routing and the agent loop here.

pub mod engine;
pub mod error;
pub mod sessions;
pub mod slot;

pub use engine::{
    Engine, EngineOptions, Overrides, SessionEvent, SessionEventKind, TurnEvent, TurnOutcome,
    TurnRequest,
};
pub use error::EngineError;
pub use slot::{ModelSlot, ModelState};
