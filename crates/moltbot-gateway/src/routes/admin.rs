//! The admin API (Bearer `ADMIN_TOKEN`, compared in constant time): hot model swap with
//! warm-up and a weighted canary.
//!
//! - `POST /admin/model/load {model_path | provider, warmup?, warmup_requests?}` → 202
//!   `{version, state}`; the version loads and warms up in the background.
//! - `GET /admin/models` → `{versions: [{version, model, source, role, state, done?,
//!   total?, traffic_percent, requests, errors}], new_model_weight}`.
//! - `POST /admin/traffic {new_model_weight}`: percent (0–100) of new turns for the new
//!   version (the article's rollout steps 10, 30, 50, 80, 100).
//! - `POST /admin/model/promote`, `POST /admin/model/rollback`.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use moltbot_core::{ChatMessage, ChatModel, ChatRequest, Role};
use moltbot_models::providers::versions::{ModelVersions, VersionError, VersionState};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::{Arc, OnceLock};
use tokio_util::sync::CancellationToken;

/// Most warm-up requests one load may ask for.
pub const MAX_WARMUP_REQUESTS: u32 = 100;

/// Builds a model from a load request (blocking: may map a GGUF file).
pub trait ModelLoader: Send + Sync + 'static {
    /// A human description of what `spec` loads, for the version list.
    fn describe(&self, spec: &LoadSpec) -> String;
    fn load(&self, spec: &LoadSpec) -> Result<Arc<dyn ChatModel>, String>;
}

/// What the admin API needs: the serving versions (set once the first model is up) and a
/// loader for new ones.
pub struct ModelAdmin {
    pub versions: Arc<OnceLock<Arc<ModelVersions>>>,
    pub loader: Arc<dyn ModelLoader>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadSpec {
    /// A local GGUF file.
    #[serde(default)]
    pub model_path: Option<String>,
    /// Or a remote provider.
    #[serde(default)]
    pub provider: Option<ProviderSpec>,
    /// Run warm-up requests before the version may take traffic (default true).
    #[serde(default = "yes")]
    pub warmup: bool,
    #[serde(default = "three")]
    pub warmup_requests: u32,
}

fn yes() -> bool {
    true
}

fn three() -> u32 {
    3
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// `openai` (any OpenAI-compatible server) or `anthropic`.
    pub kind: String,
    #[serde(default)]
    pub base_url: Option<String>,
    pub model: String,
    /// Name of the environment variable holding the API key (never the key itself).
    #[serde(default)]
    pub api_key_env: Option<String>,
}

/// Requires `Authorization: Bearer <admin token>`; the admin API is off without a token.
pub async fn require_admin(State(state): State<AppState>, req: Request, next: Next) -> Response {
    use subtle::ConstantTimeEq;
    let Some(expected) = state.config().gateway.admin_token.as_ref() else {
        return ApiError::NotFound(
            "the admin API is off\nhint: set ADMIN_TOKEN (or gateway.admin_token)".into(),
        )
        .into_response();
    };
    let presented = req
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let peer = crate::auth::peer_ip(&req);
    if let Err(e) = state.inner.auth_limiter.check(peer) {
        return e.into_response();
    }
    let ok =
        presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.expose().as_bytes())));
    if ok {
        next.run(req).await
    } else {
        state.inner.auth_limiter.failed(peer);
        ApiError::Unauthorized.into_response()
    }
}

fn admin(state: &AppState) -> Result<(&ModelAdmin, Arc<ModelVersions>), ApiError> {
    let admin = state
        .inner
        .model_admin
        .get()
        .ok_or_else(|| ApiError::Unavailable("model management is not set up".into()))?;
    let versions = admin
        .versions
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("the first model is still loading".into()))?;
    Ok((admin, versions))
}

fn version_error(e: VersionError) -> ApiError {
    match e {
        VersionError::BadWeight(_) => ApiError::BadRequest(e.to_string()),
        VersionError::Busy(_) | VersionError::NoCandidate | VersionError::NotReady { .. } => {
            ApiError::Conflict(e.to_string())
        }
    }
}

fn listing(versions: &ModelVersions) -> Value {
    let list = versions.list();
    let weight = list.get(1).map_or(0.0, |c| c.traffic_percent);
    json!({"versions": list, "new_model_weight": weight})
}

/// `GET /admin/models`.
pub async fn models(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (_, versions) = admin(&state)?;
    Ok(Json(listing(&versions)))
}

/// `POST /admin/model/load`.
pub async fn load(
    State(state): State<AppState>,
    ApiJson(spec): ApiJson<LoadSpec>,
) -> Result<Response, ApiError> {
    let (admin, versions) = admin(&state)?;
    match (&spec.model_path, &spec.provider) {
        (Some(p), None) if p.trim().is_empty() => {
            return Err(ApiError::BadRequest(
                "`model_path` must not be empty".into(),
            ))
        }
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of `model_path` (a GGUF file) or `provider`".into(),
            ))
        }
    }
    if spec.warmup_requests > MAX_WARMUP_REQUESTS {
        return Err(ApiError::BadRequest(format!(
            "`warmup_requests` must be between 0 and {MAX_WARMUP_REQUESTS}, got {}",
            spec.warmup_requests
        )));
    }
    let source = admin.loader.describe(&spec);
    let name = versions.begin_load(&source).map_err(version_error)?;
    tracing::info!(version = %name, source = %source, "loading a new model version");
    let loader = admin.loader.clone();
    let task_versions = versions.clone();
    let task_name = name.clone();
    state.inner.turns.spawn(async move {
        load_and_warm(loader, task_versions, task_name, spec).await;
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"version": name, "state": "loading", "source": source})),
    )
        .into_response())
}

/// Build the model off the async workers, then warm it up with short requests.
async fn load_and_warm(
    loader: Arc<dyn ModelLoader>,
    versions: Arc<ModelVersions>,
    name: String,
    spec: LoadSpec,
) {
    let built = {
        let spec = spec.clone();
        tokio::task::spawn_blocking(move || loader.load(&spec)).await
    };
    let model = match built {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return fail(&versions, &name, e),
        Err(e) => return fail(&versions, &name, format!("the loader stopped: {e}")),
    };
    let total = if spec.warmup { spec.warmup_requests } else { 0 };
    versions.update(
        &name,
        VersionState::Warming { done: 0, total },
        Some(model.clone()),
    );
    for done in 0..total {
        let request = ChatRequest {
            messages: vec![ChatMessage::new(Role::User, "Hello!")],
            max_tokens: Some(8),
            temperature: Some(0.0),
            ..ChatRequest::default()
        };
        if let Err(e) =
            moltbot_core::model::collect(model.as_ref(), request, CancellationToken::new()).await
        {
            return fail(
                &versions,
                &name,
                format!("warm-up request {} failed: {e}", done + 1),
            );
        }
        versions.update(
            &name,
            VersionState::Warming {
                done: done + 1,
                total,
            },
            None,
        );
    }
    versions.update(&name, VersionState::Ready, None);
    tracing::info!(version = %name, warmup_requests = total, "new model version ready");
}

fn fail(versions: &ModelVersions, name: &str, error: String) {
    tracing::error!(version = %name, cause = %error, "new model version failed");
    versions.update(name, VersionState::Failed { error }, None);
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrafficBody {
    pub new_model_weight: f64,
}

/// `POST /admin/traffic {new_model_weight}`.
pub async fn traffic(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<TrafficBody>,
) -> Result<Json<Value>, ApiError> {
    let (_, versions) = admin(&state)?;
    versions
        .set_weight(body.new_model_weight)
        .map_err(version_error)?;
    tracing::info!(weight = body.new_model_weight, "traffic split changed");
    Ok(Json(listing(&versions)))
}

/// `POST /admin/model/promote`.
pub async fn promote(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (_, versions) = admin(&state)?;
    let name = versions.promote().map_err(version_error)?;
    tracing::info!(version = %name, "new model version promoted; the old one is unloaded");
    Ok(Json(listing(&versions)))
}

/// `POST /admin/model/rollback`.
pub async fn rollback(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let (_, versions) = admin(&state)?;
    let name = versions.rollback().map_err(version_error)?;
    tracing::info!(version = %name, "new model version rolled back");
    Ok(Json(listing(&versions)))
}
