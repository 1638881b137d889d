//! Knowledge retrieval (KRS): turn documents into searchable chunks and find the ones that
//! answer a query, by meaning (vectors) and by words (BM25), fused.
//!
//! # Layout
//! - `knowledge`: [`Knowledge`], the store that ties everything together under one folder
//!   (`open`, `add_path`, `add_text`, `remove_source`, `list`, `search`), with [`Hit`],
//!   [`SearchOptions`], [`SearchMode`], [`SourceInfo`], [`AddReport`], [`KnowledgeError`].
//! - `store`: the SQLite tables behind it (sources, chunks with vectors, metadata).
//! - `index`: the [`VectorIndex`] trait, [`Metric`], [`IndexError`] and [`BruteForce`], the
//!   exact oracle.
//! - `hnsw`: [`Hnsw`], our HNSW graph index (`build.rs`, `search.rs`, `file.rs`).
//! - `distance`: auto-vectorised dot product and L2 kernels.
//! - `persist`: the checksummed binary container of index files.
//! - `bm25`: [`KeywordIndex`], BM25 over tantivy with a CJK-aware tokenizer.
//! - `chunk`: [`chunk_text`], heading- and sentence-aware chunking with overlap.
//! - `extract`: text from txt/md/html/pdf files and folders ([`extract_file`],
//!   [`collect_files`]).
//! - `encoder`: [`HashingEncoder`], a lexical fallback [`moltbot_core::Encoder`].
//!
//! The benchmark against faiss and hnswlib is `examples/knn_bench.rs`, driven by
//! `bench/knn/run.sh`.

pub mod bm25;
pub mod chunk;
pub mod distance;
pub mod encoder;
pub mod extract;
mod hnsw;
mod index;
mod knowledge;
mod persist;
mod prefetch;
mod store;

pub use bm25::{KeywordError, KeywordIndex};
pub use chunk::{chunk_text, Chunk, ChunkOptions};
pub use encoder::HashingEncoder;
pub use extract::{
    collect_files, extract_bytes, extract_file, html_to_text, DocKind, ExtractError,
};
pub use hnsw::{Hnsw, HnswParams};
pub use index::{BruteForce, IdFilter, IndexError, Metric, VectorIndex};
pub use knowledge::{
    AddProgress, AddReport, AddStatus, Hit, Knowledge, KnowledgeError, KnowledgeOptions,
    SearchMode, SearchOptions, SourceInfo,
};
