//! The model that serves turns. It may still be loading (the embedded model is fetched and
//! mapped on first run) or have failed to load; turns wait for it with a bound.

use moltbot_core::ChatModel;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Clone)]
pub enum ModelState {
    Loading(String),
    Ready(Arc<dyn ChatModel>),
    Failed(String),
}

impl ModelState {
    pub fn label(&self) -> &'static str {
        match self {
            ModelState::Loading(_) => "loading",
            ModelState::Ready(_) => "ready",
            ModelState::Failed(_) => "failed",
        }
    }
}

/// A cheap-clone handle on the serving model.
#[derive(Clone)]
pub struct ModelSlot {
    tx: Arc<watch::Sender<ModelState>>,
}

impl ModelSlot {
    pub fn ready(model: Arc<dyn ChatModel>) -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(ModelState::Ready(model))),
        }
    }

    pub fn loading(what: impl Into<String>) -> Self {
        Self {
            tx: Arc::new(watch::Sender::new(ModelState::Loading(what.into()))),
        }
    }

    pub fn set(&self, state: ModelState) {
        self.tx.send_replace(state);
    }

    pub fn state(&self) -> ModelState {
        self.tx.borrow().clone()
    }

    /// The model id if ready, else a description of the state.
    pub fn describe(&self) -> (String, &'static str) {
        let st = self.state();
        let label = st.label();
        match st {
            ModelState::Ready(m) => (m.id().to_string(), label),
            ModelState::Loading(w) | ModelState::Failed(w) => (w, label),
        }
    }

    /// Wait up to `timeout` for a ready model.
    pub async fn get(&self, timeout: Duration) -> Result<Arc<dyn ChatModel>, String> {
        let mut rx = self.tx.subscribe();
        let wait = async {
            loop {
                let outcome = match &*rx.borrow_and_update() {
                    ModelState::Ready(m) => Some(Ok(m.clone())),
                    ModelState::Failed(e) => Some(Err(format!("model failed to load: {e}"))),
                    ModelState::Loading(_) => None,
                };
                if let Some(o) = outcome {
                    return o;
                }
                if rx.changed().await.is_err() {
                    return Err("model slot closed".to_string());
                }
            }
        };
        match tokio::time::timeout(timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(format!("model still loading after {}s", timeout.as_secs())),
        }
    }
}
