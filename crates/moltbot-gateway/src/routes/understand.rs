//! Understanding over the API: classify a text, reload a retrained model.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use moltbot_understand::{IntentModel, Understanding, Understood};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::Arc;

fn understanding(state: &AppState) -> Result<Arc<Understanding>, ApiError> {
    if !state.config().understanding.enabled {
        return Err(ApiError::NotFound(
            "understanding is off\nhint: set understanding.enabled = true in the config".into(),
        ));
    }
    state.inner.understanding.get().cloned().ok_or_else(|| {
        ApiError::Unavailable(
            "the intent model is still loading (first start fetches the encoder and trains)".into(),
        )
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderstandBody {
    pub text: String,
}

/// `POST /api/v1/understand {text}` → `{coarse, fine, confidence, surprise, latency_ms, …}`.
pub async fn understand(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<UnderstandBody>,
) -> Result<Json<Understood>, ApiError> {
    if body.text.trim().is_empty() {
        return Err(ApiError::BadRequest("`text` must not be empty".into()));
    }
    state
        .engine()
        .validate_message("text", &body.text)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let u = understanding(&state)?;
    let understood = tokio::task::spawn_blocking(move || u.understand(&body.text))
        .await
        .map_err(|e| ApiError::Internal(format!("understanding task failed: {e}")))?
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    metrics::histogram!("moltbot_understand_latency_seconds").record(understood.latency_ms / 1e3);
    Ok(Json(understood))
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ReloadBody {
    /// Model file to load (default: the configured model path).
    #[serde(default)]
    pub model_path: Option<PathBuf>,
}

/// `POST /api/v1/understand/reload {model_path?}`: load a retrained model and swap it in
/// while turns keep being served by the old one.
pub async fn reload(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let u = understanding(&state)?;
    // The body is optional: empty means "reload the configured model file".
    let body: ReloadBody = if body.iter().all(u8::is_ascii_whitespace) {
        ReloadBody::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|e| ApiError::BadRequest(format!("invalid JSON body: {e}")))?
    };
    let path = match body.model_path {
        Some(p) => p,
        None => state
            .config()
            .understanding
            .model_path
            .clone()
            .unwrap_or_else(|| {
                state
                    .config()
                    .data
                    .resolved_dir()
                    .join("intents")
                    .join("model.safetensors")
            }),
    };
    let threshold = state.config().understanding.surprise_threshold;
    let answer = tokio::task::spawn_blocking(move || {
        let mut model = IntentModel::load(&path)
            .map_err(|e| ApiError::BadRequest(format!("`model_path`: {e}")))?;
        model.set_surprise_threshold(threshold);
        let (fine, coarse) = (model.fine_labels().len(), model.coarse_labels().len());
        let encoder = model.encoder_name().map(str::to_string);
        u.replace(model)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        Ok::<_, ApiError>(json!({
            "model_path": path, "intents": fine, "groups": coarse, "encoder": encoder,
        }))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reload task failed: {e}")))??;
    Ok(Json(answer))
}
