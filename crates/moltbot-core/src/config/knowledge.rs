//! `[knowledge]`: the document store behind retrieval (KRS).

use super::{in_range, ConfigError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// Serve `/api/v1/knowledge/*` and ground answers in stored documents.
    pub enabled: bool,
    /// Where the store lives. Default: `<data.dir>/knowledge`.
    pub dir: Option<PathBuf>,
    /// Passages returned by a search when the request does not say.
    pub default_results: usize,
    /// Largest text accepted by the ingest endpoint, in bytes.
    pub max_ingest_bytes: usize,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            dir: None,
            default_results: 5,
            max_ingest_bytes: 8 << 20,
        }
    }
}

impl KnowledgeConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        in_range("knowledge.default_results", self.default_results, 1, 100)?;
        in_range(
            "knowledge.max_ingest_bytes",
            self.max_ingest_bytes,
            1024,
            1 << 30,
        )?;
        Ok(())
    }
}
