//! The small web chat page served at `/` (a WebSocket upgrade on the same path goes to the
//! OpenClaw protocol instead).

use axum::http::header;
use axum::response::{IntoResponse, Response};

const CHAT_PAGE: &str = include_str!("../../assets/chat.html");

pub fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        CHAT_PAGE,
    )
        .into_response()
}
