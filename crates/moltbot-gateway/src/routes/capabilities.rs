//! The capability layer over the API: what is loaded, pending approvals, scheduled jobs.
//!
//! - `GET /api/v1/capabilities` → `{agent, capabilities: [{name, kind, status, reason?…}]}`
//! - `GET /api/v1/approvals` → `{approvals: [...]}`;
//!   `POST /api/v1/approvals/{id} {approve: bool}` answers one.
//! - `GET /api/v1/cron`, `POST /api/v1/cron {name?, cron|every|at, tz?, message|prompt,
//!   channel+to | session}`, `DELETE /api/v1/cron/{id}`, `POST /api/v1/cron/{id}/run`,
//!   `GET /api/v1/cron/{id}/runs?limit=`.

use crate::capabilities::Capabilities;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::Json;
use moltbot_tools::cron::{parse_tz, CronError, CronHandle, NewJob, Schedule};
use moltbot_tools::cron::{CronPayload, CronTarget};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

fn caps(state: &AppState) -> Result<Arc<Capabilities>, ApiError> {
    state
        .inner
        .capabilities
        .get()
        .cloned()
        .ok_or_else(|| ApiError::Unavailable("the capability layer is not running".into()))
}

fn cron(state: &AppState) -> Result<CronHandle, ApiError> {
    caps(state)?.cron.clone().ok_or_else(|| {
        ApiError::NotFound(
            "scheduled jobs are off\nhint: set tools.cron.enabled = true in the config".into(),
        )
    })
}

fn cron_error(e: CronError) -> ApiError {
    match e {
        CronError::Invalid(m) => ApiError::BadRequest(m),
        other => ApiError::Internal(other.to_string()),
    }
}

/// `GET /api/v1/capabilities`.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let caps = caps(&state)?;
    let agent = &state.config().tools.agent;
    Ok(Json(json!({
        "agent": {
            "enabled": agent.enabled,
            "max_steps": agent.max_steps,
            "turn_timeout_secs": agent.turn_timeout_secs,
        },
        "capabilities": caps.registry.list(),
    })))
}

/// `GET /api/v1/approvals`.
pub async fn approvals(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({"approvals": caps(&state)?.approvals.list()})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecideBody {
    pub approve: bool,
}

/// `POST /api/v1/approvals/{id} {approve}`.
pub async fn decide(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<DecideBody>,
) -> Result<Json<Value>, ApiError> {
    if caps(&state)?.approvals.decide(&id, body.approve) {
        Ok(Json(json!({"id": id, "approved": body.approve})))
    } else {
        Err(ApiError::NotFound(format!(
            "no pending approval with id {id:?} (answered, expired or unknown)"
        )))
    }
}

/// `GET /api/v1/cron`.
pub async fn cron_list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let jobs = cron(&state)?.list().await.map_err(cron_error)?;
    Ok(Json(json!({"jobs": jobs})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddBody {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub cron: Option<String>,
    #[serde(default)]
    pub every: Option<String>,
    #[serde(default)]
    pub at: Option<String>,
    #[serde(default)]
    pub tz: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub prompt: Option<String>,
    /// Channel kind of a chat target, with `to`.
    #[serde(default)]
    pub channel: Option<String>,
    #[serde(default)]
    pub to: Option<String>,
    /// Or a session target.
    #[serde(default)]
    pub session: Option<String>,
}

/// `POST /api/v1/cron`.
pub async fn cron_add(
    State(state): State<AppState>,
    ApiJson(body): ApiJson<AddBody>,
) -> Result<Json<Value>, ApiError> {
    let handle = cron(&state)?;
    let tz = match body.tz.as_deref() {
        Some(name) => parse_tz(name).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => handle.default_tz(),
    };
    let bad = |m: &str| ApiError::BadRequest(m.to_string());
    let schedule = match (&body.cron, &body.every, &body.at) {
        (Some(c), None, None) => Schedule::cron(c, tz),
        (None, Some(e), None) => Schedule::every(e),
        (None, None, Some(a)) => Schedule::at(a, tz),
        _ => return Err(bad("exactly one of `cron`, `every` or `at` must be given")),
    }
    .map_err(|e| ApiError::BadRequest(e.to_string()))?;
    let payload = match (body.message, body.prompt) {
        (Some(text), None) => CronPayload::Message { text },
        (None, Some(text)) => CronPayload::Prompt { text },
        _ => return Err(bad("exactly one of `message` or `prompt` must be given")),
    };
    let target = match (body.channel, body.to, body.session) {
        (Some(channel), Some(chat_id), None) => CronTarget::Chat { channel, chat_id },
        (None, None, Some(id)) => CronTarget::Session { id },
        _ => {
            return Err(bad(
                "give either `channel` and `to` (a chat) or `session` as the job's target",
            ))
        }
    };
    let job = handle
        .add(NewJob {
            name: body.name.unwrap_or_default(),
            schedule,
            tz,
            payload,
            target,
            owner: Some("api".into()),
            misfire: None,
        })
        .await
        .map_err(cron_error)?;
    Ok(Json(json!({"job": job})))
}

/// `DELETE /api/v1/cron/{id}`.
pub async fn cron_remove(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if cron(&state)?.remove(&id).await.map_err(cron_error)? {
        Ok(Json(json!({"id": id, "removed": true})))
    } else {
        Err(ApiError::NotFound(format!("no job with id {id:?}")))
    }
}

/// `POST /api/v1/cron/{id}/run`: run now (the scheduler starts it at once).
pub async fn cron_run(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if cron(&state)?.run_now(&id).await.map_err(cron_error)? {
        Ok(Json(json!({"id": id, "queued": true})))
    } else {
        Err(ApiError::NotFound(format!("no job with id {id:?}")))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    pub limit: Option<usize>,
}

/// `GET /api/v1/cron/{id}/runs?limit=`.
pub async fn cron_runs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let q = crate::extract::query(q)?;
    let limit = q.limit.unwrap_or(20);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "`limit` must be between 1 and 1000, got {limit}"
        )));
    }
    let runs = cron(&state)?.runs(&id, limit).await.map_err(cron_error)?;
    Ok(Json(json!({"id": id, "runs": runs})))
}
