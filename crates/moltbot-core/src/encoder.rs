//! The [`Encoder`] trait: text in, fixed-size sentence vectors out.
//!
//! Understanding (intent features) and retrieval (chunk and query vectors) both go through
//! it, so a test can swap the Transformer for something tiny and a deployment can swap it for
//! a bigger model without touching either.

/// Why encoding failed.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    /// The model files are missing or unreadable.
    #[error("cannot load the encoder: {0}")]
    Load(String),
    /// The tokenizer refused the input.
    #[error("cannot tokenize the input: {0}")]
    Tokenize(String),
    /// The forward pass failed (shape bug, out of memory).
    #[error("the encoder's forward pass failed: {0}")]
    Forward(String),
}

impl EncodeError {
    /// Stable name used in metrics labels and JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            EncodeError::Load(_) => "encoder_load",
            EncodeError::Tokenize(_) => "encoder_tokenize",
            EncodeError::Forward(_) => "encoder_forward",
        }
    }
}

/// A sentence encoder. Calls block (they run a forward pass): async callers use
/// `spawn_blocking`. Vectors are L2-normalised, so a dot product is the cosine similarity.
pub trait Encoder: Send + Sync + 'static {
    /// A short name for logs and model metadata, e.g. `all-MiniLM-L6-v2/int8`.
    fn name(&self) -> &str;
    /// Length of every vector returned.
    fn dim(&self) -> usize;
    /// The longest input in tokens one window covers; longer inputs are split into windows
    /// and pooled by the caller or by [`Encoder::encode`] itself, as documented by the
    /// implementation.
    fn max_tokens(&self) -> usize;
    /// One vector per text, in order.
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError>;
    /// The concrete type, for code that builds on one implementation (an intent model with
    /// fine-tuned top layers runs them on the Transformer under this trait). `None` by
    /// default.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// An encoder name without its precision tag (`/f32`, `/int8`): the same weights at another
/// precision give vectors close enough to share an index or an intent model with (MiniLM
/// INT8 against f32: mean cosine 0.997), so stores compare encoders by this.
pub fn weights_of(name: &str) -> &str {
    ["/f32", "/int8"]
        .iter()
        .find_map(|tag| name.strip_suffix(tag))
        .unwrap_or(name)
}

#[cfg(test)]
mod tests {
    use super::weights_of;

    #[test]
    fn precision_tags_are_taken_off_and_other_names_kept() {
        assert_eq!(weights_of("all-MiniLM-L6-v2/int8"), "all-MiniLM-L6-v2");
        assert_eq!(weights_of("all-MiniLM-L6-v2/f32"), "all-MiniLM-L6-v2");
        assert_eq!(weights_of("hashing-4096"), "hashing-4096");
        // A tuned copy is other weights: its tag stays.
        assert_eq!(weights_of("m/int8+tuned2"), "m/int8+tuned2");
    }
}
