use moltbot_core::ModelError;
use moltbot_store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The caller sent something we refuse; the message names the field, limit and value.
    #[error("{0}")]
    InvalidInput(String),
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the model is not ready: {0}")]
    NotReady(String),
}

impl EngineError {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::InvalidInput(_) => "invalid_request",
            EngineError::Model(e) => e.kind(),
            EngineError::Store(e) => e.kind(),
            EngineError::NotReady(_) => "model_not_ready",
        }
    }
}
