//! `[router]`: how each turn is answered once it is understood (the decision layer).

use super::{in_range, ConfigError};
use serde::{Deserialize, Serialize};

/// How answers grounded in retrieved passages are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Grounding {
    /// By the model when it is ready, extractively (quoted passages) when it is not.
    Auto,
    /// Always by the model (turns wait for it like any other).
    Model,
    /// Always extractively, without the model.
    Extractive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouterConfig {
    /// Route turns. Off: every turn goes to the model with the conversation.
    pub enabled: bool,
    /// Longer turns never get a canned template reply, however confident the intent.
    pub template_max_chars: usize,
    /// Passages retrieved for a grounded answer.
    pub passages: usize,
    /// Cosine similarity a passage needs to ground a turn whose intent asks the documents.
    pub knowledge_intent_min_score: f32,
    /// Cosine similarity at which a passage grounds any other turn (a "good hit").
    pub good_hit_score: f32,
    pub grounding: Grounding,
    /// Highest sampling temperature of answers the model writes from passages, when the
    /// request sets none (they take `model.temperature` when it is lower).
    pub grounded_temperature: f32,
}

impl Default for RouterConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            template_max_chars: 200,
            passages: 4,
            knowledge_intent_min_score: 0.2,
            good_hit_score: 0.55,
            grounding: Grounding::Auto,
            grounded_temperature: 0.2,
        }
    }
}

impl RouterConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, v) in [
            (
                "router.knowledge_intent_min_score",
                self.knowledge_intent_min_score,
            ),
            ("router.good_hit_score", self.good_hit_score),
        ] {
            in_range(field, v, -1.0, 1.0)?;
        }
        in_range(
            "router.grounded_temperature",
            self.grounded_temperature,
            0.0,
            2.0,
        )?;
        in_range("router.passages", self.passages, 1, 20)?;
        Ok(())
    }
}
