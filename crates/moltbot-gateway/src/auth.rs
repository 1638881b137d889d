//! Bearer-token check for API routes (health probes and metrics stay open).

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
pub fn bearer(req: &Request) -> Option<&str> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Whether a host (as in a `Host` header or an origin, port allowed) names this machine.
fn is_loopback_host(host: &str) -> bool {
    if let Ok(ip) = host.parse::<std::net::IpAddr>() {
        return ip.is_loopback();
    }
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// Without a token the gateway trusts everything that reaches it, which is only safe when
/// that is this machine's own software. A web page the user visits can reach loopback too,
/// through DNS rebinding (its own host name resolving to 127.0.0.1): refuse requests whose
/// `Host` is not a loopback name. With a token, the token is the protection.
pub async fn loopback_guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.inner.token.is_none() {
        if let Some(host) = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
        {
            if !is_loopback_host(host) {
                return ApiError::Forbidden(format!(
                    "`Host` must be a loopback name when the gateway has no token, got {host:?}; \
                     hint: set gateway.token to serve other names"
                ))
                .into_response();
            }
        }
    }
    next.run(req).await
}

/// Browsers send `Origin` on WebSocket upgrades and apply no CORS to them: refuse origins
/// other than this machine or the gateway's own host, so a web page cannot drive the
/// gateway. Clients that are not browsers (the OpenClaw CLI, TUI, SDKs) send no `Origin`.
pub fn check_ws_origin(headers: &axum::http::HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else {
        return Ok(());
    };
    let origin_host = origin
        .split_once("://")
        .map_or(origin, |(_, rest)| rest)
        .trim_end_matches('/');
    let own_host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    if is_loopback_host(origin_host)
        || own_host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host))
    {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "WebSocket connections from origin {origin:?} are not allowed"
        )))
    }
}

pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if state.token_ok(bearer(&req)) {
        next.run(req).await
    } else {
        ApiError::Unauthorized.into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "LOCALHOST:18789",
            "127.0.0.1:1",
            "127.5.0.1",
            "[::1]:80",
            "::1",
        ] {
            assert!(is_loopback_host(h), "{h}");
        }
        for h in [
            "evil.example",
            "evil.example:18789",
            "10.0.0.1",
            "[fe80::1]:80",
        ] {
            assert!(!is_loopback_host(h), "{h}");
        }
    }

    #[test]
    fn websocket_origins() {
        let mut h = axum::http::HeaderMap::new();
        assert!(check_ws_origin(&h).is_ok());
        h.insert(header::ORIGIN, "http://127.0.0.1:18789".parse().unwrap());
        assert!(check_ws_origin(&h).is_ok());
        h.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(check_ws_origin(&h).is_err());
        h.insert(header::HOST, "gw.example:443".parse().unwrap());
        h.insert(header::ORIGIN, "https://gw.example:443".parse().unwrap());
        assert!(check_ws_origin(&h).is_ok());
    }
}
