//! Bearer-token check for API routes (health probes and metrics stay open), and the limit on
//! failed token checks per client address.

use crate::error::ApiError;
use crate::state::AppState;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    let peer = peer_ip(&req);
    if let Err(e) = state.inner.auth_limiter.check(peer) {
        return e.into_response();
    }
    if state.token_ok(bearer(&req)) {
        next.run(req).await
    } else {
        state.inner.auth_limiter.failed(peer);
        ApiError::Unauthorized.into_response()
    }
}

/// The client's address, when the server was started with connection info (`run` does;
/// a router called directly in a test has none).
pub fn peer_ip(req: &Request) -> Option<IpAddr> {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Counts failed token checks per client address in one-minute windows; an address over
/// the limit is refused (429) until its window ends, whatever token it sends.
///
/// Behind a reverse proxy every client shares the proxy's address: there the limit guards
/// the whole gateway rather than one client, which still stops guessing at speed.
pub struct AuthLimiter {
    limit: u32,
    window: Duration,
    map: Mutex<HashMap<IpAddr, Window>>,
}

struct Window {
    start: Instant,
    failures: u32,
}

/// Addresses remembered at most; past this, expired windows are dropped first and then the
/// map is cleared (a flood of addresses must not grow memory).
const MAX_TRACKED: usize = 10_000;

impl AuthLimiter {
    pub fn new(limit_per_minute: u32) -> Self {
        Self::with_window(limit_per_minute, Duration::from_secs(60))
    }

    pub fn with_window(limit: u32, window: Duration) -> Self {
        AuthLimiter {
            limit,
            window,
            map: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Window>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse an address that used up its failures in the current window.
    pub fn check(&self, peer: Option<IpAddr>) -> Result<(), ApiError> {
        let (Some(ip), true) = (peer, self.limit > 0) else {
            return Ok(());
        };
        let map = self.lock();
        match map.get(&ip) {
            Some(w) if w.failures >= self.limit && w.start.elapsed() < self.window => {
                let left = self.window.saturating_sub(w.start.elapsed());
                Err(ApiError::AuthLocked {
                    limit: self.limit,
                    retry_after_secs: left.as_secs().max(1),
                })
            }
            _ => Ok(()),
        }
    }

    /// Count a failed token check from `peer`.
    pub fn failed(&self, peer: Option<IpAddr>) {
        metrics::counter!("moltbot_auth_failures_total").increment(1);
        let (Some(ip), true) = (peer, self.limit > 0) else {
            return;
        };
        let mut map = self.lock();
        if map.len() >= MAX_TRACKED && !map.contains_key(&ip) {
            let window = self.window;
            map.retain(|_, w| w.start.elapsed() < window);
            if map.len() >= MAX_TRACKED {
                map.clear();
            }
        }
        let w = map.entry(ip).or_insert(Window {
            start: Instant::now(),
            failures: 0,
        });
        if w.start.elapsed() >= self.window {
            *w = Window {
                start: Instant::now(),
                failures: 0,
            };
        }
        w.failures += 1;
        if w.failures == self.limit {
            tracing::warn!(
                client = %ip,
                limit = self.limit,
                "too many failed authentication attempts; refusing this address for the rest of the minute"
            );
        }
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
    fn failures_lock_an_address_for_the_window() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.9.9.9".parse().unwrap();
        let lim = AuthLimiter::with_window(3, Duration::from_millis(300));
        for _ in 0..2 {
            assert!(lim.check(Some(a)).is_ok());
            lim.failed(Some(a));
        }
        assert!(lim.check(Some(a)).is_ok(), "two failures are allowed");
        lim.failed(Some(a));
        let err = lim.check(Some(a)).unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::TOO_MANY_REQUESTS);
        assert!(err.to_string().contains("limit 3 per minute"), "{err}");
        assert!(
            lim.check(Some(b)).is_ok(),
            "other addresses are not affected"
        );
        assert!(lim.check(None).is_ok(), "no address known: no limit");
        std::thread::sleep(Duration::from_millis(350));
        assert!(lim.check(Some(a)).is_ok(), "the window ended");
        lim.failed(Some(a));
        assert!(lim.check(Some(a)).is_ok(), "a new window counts from zero");
        let off = AuthLimiter::new(0);
        for _ in 0..100 {
            off.failed(Some(a));
        }
        assert!(off.check(Some(a)).is_ok());
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
