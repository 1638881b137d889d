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
    /// The message bus cannot carry the turn (no broker, no replica answered in time).
    #[error("the message bus is unavailable: {0}")]
    Bus(String),
    /// The replica that ran the turn failed in a way with no local equivalent (its store).
    #[error("{0}")]
    Remote(String),
}

impl EngineError {
    pub fn kind(&self) -> &'static str {
        match self {
            EngineError::InvalidInput(_) => "invalid_request",
            EngineError::Model(e) => e.kind(),
            EngineError::Store(e) => e.kind(),
            EngineError::NotReady(_) => "model_not_ready",
            EngineError::Bus(_) => "bus_unavailable",
            EngineError::Remote(_) => "remote",
        }
    }
}
