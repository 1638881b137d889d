//! Integration tests of moltbot-knowledge, in one binary.

mod bm25;
mod chunk;
mod extract;
mod hnsw;
mod knowledge;
mod support;
