//! Bearer-token check for API routes (health probes and metrics stay open).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub fn bearer(req: &Request) -> Option<&str> {
    req.headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.token_ok(bearer(&req)) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}
