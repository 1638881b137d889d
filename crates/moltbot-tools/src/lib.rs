//! The capability layer: what the assistant can do besides talking.
//!
//! # Layout
//! - [`registry`]: [`Registry`], the loaded tools (built-in and from skills) and the ones that
//!   could not load with the reason; picks the few tools relevant to a turn (lean prompts).
//! - [`capabilities`]: the listing served by `GET /api/v1/capabilities` and
//!   `moltbot capabilities`.

pub mod registry;

pub use registry::{Capability, CapabilityStatus, Registry};
