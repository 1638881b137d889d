//! The knowledge store over the API: search, ingest text, list and remove sources.

use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::State;
use axum::Json;
use moltbot_knowledge::{Knowledge, KnowledgeError, SearchMode, SearchOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Instant;

fn store(state: &AppState) -> Result<Arc<Knowledge>, ApiError> {
    if !state.config().knowledge.enabled {
        return Err(ApiError::NotFound(
            "the knowledge store is off\nhint: set knowledge.enabled = true in the config".into(),
        ));
    }
    state
        .inner
        .knowledge
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("the knowledge store is still opening".into()))
}

/// Client mistakes become 400 naming the argument; the rest is internal.
fn api_error(e: KnowledgeError) -> ApiError {
    match e {
        KnowledgeError::InvalidArgument { .. } => ApiError::BadRequest(e.to_string()),
        other => ApiError::Internal(other.to_string()),
    }
}

/// Run blocking store work off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(format!("knowledge task failed: {e}")))?
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SearchBody {
    pub query: String,
    #[serde(default)]
    pub k: Option<usize>,
    /// Only passages of these sources.
    #[serde(default)]
    pub sources: Option<Vec<String>>,
    /// `hybrid` (default), `vector` or `keyword`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// `POST /api/v1/knowledge/search {query, k?, sources?, mode?}` → `{hits, latency_ms}`.
pub async fn search(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<SearchBody>,
) -> Result<Json<Value>, ApiError> {
    let kb = store(&state)?;
    if body.query.trim().is_empty() {
        return Err(ApiError::BadRequest("`query` must not be empty".into()));
    }
    state
        .engine()
        .validate_message("query", &body.query)
        .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let mode = match body.mode.as_deref() {
        None | Some("hybrid") => SearchMode::Hybrid,
        Some("vector") => SearchMode::Vector,
        Some("keyword") => SearchMode::Keyword,
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "`mode` must be hybrid, vector or keyword, got {other:?}"
            )))
        }
    };
    let k = body.k.unwrap_or(state.config().knowledge.default_results);
    let opts = SearchOptions {
        sources: body.sources,
        mode,
    };
    let start = Instant::now();
    let hits = blocking(move || kb.search(&body.query, k, &opts).map_err(api_error)).await?;
    Ok(Json(json!({
        "hits": hits,
        "latency_ms": start.elapsed().as_secs_f64() * 1e3,
    })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestBody {
    /// Name the text is stored under (a path, a URL, a title); re-ingesting replaces it.
    pub source: String,
    pub text: String,
}

/// `POST /api/v1/knowledge/ingest {source, text}` → `{source, status, chunks}`.
pub async fn ingest(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<IngestBody>,
) -> Result<Json<Value>, ApiError> {
    let kb = store(&state)?;
    let limit = state.config().knowledge.max_ingest_bytes;
    if body.text.len() > limit {
        return Err(ApiError::BadRequest(format!(
            "`text` must be at most {limit} bytes (knowledge.max_ingest_bytes), got {}",
            body.text.len()
        )));
    }
    if body.source.trim().is_empty() {
        return Err(ApiError::BadRequest("`source` must not be empty".into()));
    }
    let source = body.source.clone();
    let (status, chunks) =
        blocking(move || kb.add_text(&body.source, &body.text).map_err(api_error)).await?;
    Ok(Json(
        json!({ "source": source, "status": status, "chunks": chunks }),
    ))
}

/// `GET /api/v1/knowledge` → `{sources: [{source, chunks, bytes, added_at}]}`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let kb = store(&state)?;
    let sources = blocking(move || kb.list().map_err(api_error)).await?;
    Ok(Json(json!({ "sources": sources })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveBody {
    pub source: String,
}

/// `POST /api/v1/knowledge/remove {source}` → `{source, removed_chunks}`.
pub async fn remove(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<RemoveBody>,
) -> Result<Json<Value>, ApiError> {
    let kb = store(&state)?;
    let source = body.source.clone();
    let removed = blocking(move || kb.remove_source(&body.source).map_err(api_error)).await?;
    if removed == 0 {
        return Err(ApiError::NotFound(format!(
            "`source` {source:?} is not in the knowledge store"
        )));
    }
    Ok(Json(json!({ "source": source, "removed_chunks": removed })))
}
