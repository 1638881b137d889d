//! `[knowledge]`: the document store behind retrieval (KRS).

use super::ConfigError;
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
        if !(1..=100).contains(&self.default_results) {
            return Err(ConfigError::Invalid(format!(
                "knowledge.default_results must be between 1 and 100, got {}",
                self.default_results
            )));
        }
        if !(1024..=1 << 30).contains(&self.max_ingest_bytes) {
            return Err(ConfigError::Invalid(format!(
                "knowledge.max_ingest_bytes must be between 1024 and 1073741824, got {}",
                self.max_ingest_bytes
            )));
        }
        Ok(())
    }
}
