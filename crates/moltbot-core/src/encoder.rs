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
