//! Knowledge retrieval (KRS).
//!
//! # Layout
//! (filled in as modules land)
