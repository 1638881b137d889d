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
    NotFound(String),
    #[error("request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("too many turns in progress (limit {limit}); retry in {retry_after_secs}s")]
    TooManyRequests { limit: usize, retry_after_secs: u64 },
    #[error("{0}")]
    Unavailable(String),
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
            ApiError::NotFound(_) => "not_found",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::TooManyRequests { .. } => "rate_limited",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Upstream(_) => "upstream_error",
            ApiError::Timeout => "timeout",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Upstream(_) => StatusCode::BAD_GATEWAY,
            ApiError::Timeout => StatusCode::GATEWAY_TIMEOUT,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The message shown to the client. Internal causes stay in the log.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::Internal(_) => "internal error; see the gateway log".to_string(),
            other => other.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(%cause, "request failed"),
            ApiError::Upstream(cause) => tracing::warn!(%cause, "model provider failed"),
            ApiError::BadRequest(_)
            | ApiError::Unauthorized
            | ApiError::NotFound(_)
            | ApiError::PayloadTooLarge { .. }
            | ApiError::TooManyRequests { .. }
            | ApiError::Unavailable(_)
            | ApiError::Timeout => {}
        }
        metrics::counter!("moltbot_errors_total", "kind" => self.kind()).increment(1);
        let body = ErrorBody {
            error: ErrorDetail {
                kind: self.kind(),
                message: self.public_message(),
                type_: self.kind(),
            },
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if let ApiError::TooManyRequests {
            retry_after_secs, ..
        } = &self
        {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(*retry_after_secs));
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
            EngineError::Store(e) => ApiError::Internal(e.to_string()),
            EngineError::Model(e) => e.into(),
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
            e @ (ModelError::Connect(_)
            | ModelError::RateLimited { .. }
            | ModelError::Upstream { .. }
            | ModelError::Protocol(_)) => ApiError::Upstream(e.to_string()),
        }
    }
}
