//! Knowledge retrieval (KRS).
//!
//! # Layout
//! - `index`: the [`VectorIndex`] trait, [`Metric`], [`IndexError`] and [`BruteForce`].
//! - `hnsw`: [`Hnsw`], our HNSW graph index.
//! - `distance`: auto-vectorised dot product and L2 kernels.
//! - `persist`: the checksummed binary container the index files use.

pub mod distance;
mod hnsw;
mod index;
mod persist;

pub use hnsw::{Hnsw, HnswParams};
pub use index::{BruteForce, IdFilter, IndexError, Metric, VectorIndex};
