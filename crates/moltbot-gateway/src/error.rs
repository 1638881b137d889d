//! The one place errors become HTTP responses. Every variant is listed (no `_` arm);
//! client mistakes return their message and are not logged as errors; internal failures
//! return a generic message and are logged once with their cause.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use moltbot_core::ModelError;
use moltbot_engine::EngineError;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("missing or invalid bearer token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The request does not fit the current state (a model swap already under way).
    #[error("{0}")]
    Conflict(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("too many turns in progress (limit {limit}); retry in {retry_after_secs}s")]
    TooManyRequests { limit: usize, retry_after_secs: u64 },
    /// Too many failed token checks from one address (`gateway.auth_failures_per_minute`).
    #[error(
        "too many failed authentication attempts from this address (limit {limit} per \
         minute); retry in {retry_after_secs}s"
    )]
    AuthLocked { limit: u32, retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
    #[error("the model provider is rate limiting; retry in {retry_after_secs}s")]
    UpstreamBusy { retry_after_secs: u64 },
    #[error("the model provider failed: {0}")]
    Upstream(String),
    #[error("the model provider did not answer in time")]
    Timeout,
    #[error("internal error")]
    Internal(String),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    kind: &'a str,
    message: String,
    /// OpenAI clients read `error.type`; we mirror the kind there.
    #[serde(rename = "type")]
    type_: &'a str,
}

impl ApiError {
    pub fn kind(&self) -> &'static str {
        match self {
            ApiError::BadRequest(_) => "invalid_request",
            ApiError::Unauthorized => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::AuthLocked { .. } => "auth_rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::UpstreamBusy { .. } => "upstream_rate_limited",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Timeout => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } | ApiError::AuthLocked { .. } => {
                StatusCode::TOO_MANY_REQUESTS
            }
            ApiError::Unavailable(_) | ApiError::UpstreamBusy { .. } => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the client. Internal causes and provider answers (which may
    /// quote credentials or internals) stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; see the gateway log".to_string(),
            ApiError::Upstream(_) => {
                "the model provider failed; see the gateway log for details".to_string()
            }
            other => other.to_string(),
        }
    }

    /// Log once, at the level the failure deserves; client mistakes are not logged.
    pub fn log(&self) {
        match self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            ApiError::Upstream(cause) => tracing::warn!(%cause, "model provider failed"),
            ApiError::BadRequest(_)
            | ApiError::Unauthorized
            | ApiError::Forbidden(_)
            | ApiError::NotFound(_)
            | ApiError::Conflict(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::TooManyRequests { .. }
            | ApiError::AuthLocked { .. }
            | ApiError::Unavailable(_)
            | ApiError::UpstreamBusy { .. }
            | ApiError::Timeout => {}
        }
        metrics::counter!("moltbot_errors_total", "kind" => self.kind()).increment(1);
    }

    /// Seconds a client should wait before retrying, for the statuses that invite it.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests {
                retry_after_secs, ..
            }
            | ApiError::AuthLocked {
                retry_after_secs, ..
            }
            | ApiError::UpstreamBusy { retry_after_secs } => Some(*retry_after_secs),
            ApiError::Unavailable(_) => Some(5),
            _ => None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        self.log();
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind(),
                message: self.public_message(),
                type_: self.kind(),
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let Some(secs) = self.retry_after() {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if let ApiError::Unauthorized = &self {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidInput(m) => ApiError::BadRequest(m),
            EngineError::NotReady(m) => ApiError::Unavailable(m),
            EngineError::Store(e) => e.into(),
            EngineError::Bus(m) => ApiError::Unavailable(format!("message bus: {m}")),
            EngineError::Remote(m) => ApiError::Internal(m),
            EngineError::Model(e) => e.into(),
        }
    }
}

impl From<moltbot_store::StoreError> for ApiError {
    fn from(e: moltbot_store::StoreError) -> Self {
        if e.is_unavailable() {
            // The database is down or restarting: a retry later may succeed.
            ApiError::Unavailable(e.to_string())
        } else {
            ApiError::Internal(e.to_string())
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(e: ModelError) -> Self {
        match e {
            ModelError::Timeout(_) => ApiError::Timeout,
            ModelError::InvalidRequest(m) => ApiError::BadRequest(m),
            ModelError::Unavailable(m) => ApiError::Unavailable(m),
            ModelError::Cancelled => ApiError::Unavailable("generation was cancelled".into()),
            ModelError::RateLimited { retry_after } => ApiError::UpstreamBusy {
                retry_after_secs: retry_after.map_or(5, |d| d.as_secs().max(1)),
            },
            e
            @ (ModelError::Connect(_) | ModelError::Upstream { .. } | ModelError::Protocol(_)) => {
                ApiError::Upstream(e.to_string())
            }
        }
    }
}
