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

/// Most texts in one batch request.
pub const MAX_BATCH: usize = 256;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnderstandBody {
    /// One turn…
    #[serde(default)]
    pub text: Option<String>,
    /// …or many, classified together (batched through the encoder).
    #[serde(default)]
    pub texts: Option<Vec<String>>,
}

/// `POST /api/v1/understand {text}` → `{coarse, fine, confidence, surprise, latency_ms, …}`;
/// `{texts: [...]}` → `{results: [...], latency_ms}` in input order.
pub async fn understand(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<UnderstandBody>,
) -> Result<Json<Value>, ApiError> {
    let (texts, single) = match (body.text, body.texts) {
        (Some(t), None) => (vec![t], true),
        (None, Some(ts)) => (ts, false),
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `text` (a string) or `texts` (a list of strings)".into(),
            ))
        }
    };
    if !single && (texts.is_empty() || texts.len() > MAX_BATCH) {
        return Err(ApiError::BadRequest(format!(
            "`texts` must hold between 1 and {MAX_BATCH} strings, got {}",
            texts.len()
        )));
    }
    for (i, t) in texts.iter().enumerate() {
        let field = if single {
            "text".to_string()
        } else {
            format!("texts[{i}]")
        };
        if t.trim().is_empty() {
            return Err(ApiError::BadRequest(format!("`{field}` must not be empty")));
        }
        state
            .engine()
            .validate_message(&field, t)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    }
    let u = understanding(&state)?;
    let start = std::time::Instant::now();
    let mut results = tokio::task::spawn_blocking(move || {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        if refs.len() == 1 {
            u.understand(refs[0]).map(|r| vec![r])
        } else {
            u.understand_batch(&refs)
        }
    })
    .await
    .map_err(|e| ApiError::Internal(format!("understanding task failed: {e}")))?
    .map_err(|e| ApiError::Internal(e.to_string()))?;
    let elapsed = start.elapsed().as_secs_f64();
    metrics::histogram!("moltbot_understand_latency_seconds").record(elapsed);
    for r in &results {
        moltbot_engine::router::count_understood(r.prediction.sparse_exit);
    }
    if single {
        let one: Understood = results.pop().expect("one result per text");
        return Ok(Json(json!(one)));
    }
    Ok(Json(
        json!({ "results": results, "latency_ms": elapsed * 1e3 }),
    ))
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
    let serving = state.config().understanding.clone();
    let answer = tokio::task::spawn_blocking(move || {
        let mut model = IntentModel::load(&path)
            .map_err(|e| ApiError::BadRequest(format!("`model_path`: {e}")))?;
        model.serve_with(&serving);
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
