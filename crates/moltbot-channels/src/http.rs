//! What every adapter's HTTP calls share: one client with sane timeouts, and the mapping of
//! platform answers to [`ChannelError`].

use moltbot_core::ChannelError;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use std::time::Duration;

/// An HTTP client for platform APIs. `request_timeout` bounds one call; long polls pass a
/// longer one per request.
pub fn client(request_timeout: Duration) -> Result<reqwest::Client, ChannelError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(10))
        .timeout(request_timeout)
        .user_agent(concat!("moltbot/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| ChannelError::Internal(format!("cannot build an HTTP client: {e}")))
}

/// `Retry-After` in seconds (fractions allowed), if present and sane.
pub fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?;
    let secs: f64 = v.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

/// A failed call mapped by status: 429 → rate limited (with `retry_after` when the
/// platform gave one), 401/403 → unauthorized, other 4xx → rejected, the rest transient.
/// `detail` is the platform's own description (never a token or a URL with one).
pub fn status_error(
    status: StatusCode,
    retry_after: Option<Duration>,
    detail: &str,
) -> ChannelError {
    let detail = format!("HTTP {}: {}", status.as_u16(), shorten(detail, 300));
    match status.as_u16() {
        429 => ChannelError::RateLimited {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
        },
        401 | 403 => ChannelError::Unauthorized(detail),
        400..=499 => ChannelError::Rejected(detail),
        _ => ChannelError::Transient(detail),
    }
}

/// A transport failure (connect, timeout, broken body). reqwest's message can contain the
/// request URL, and Telegram puts the bot token in its URLs: strip URLs from the text.
pub fn transport_error(e: reqwest::Error) -> ChannelError {
    let e = e.without_url();
    ChannelError::Transient(format!("request failed: {e}"))
}

pub fn shorten(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_kinds() {
        let r = status_error(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            "x",
        );
        assert_eq!(
            r,
            ChannelError::RateLimited {
                retry_after: Duration::from_secs(3)
            }
        );
        assert_eq!(
            status_error(StatusCode::FORBIDDEN, None, "no").kind(),
            "unauthorized"
        );
        assert_eq!(
            status_error(StatusCode::BAD_REQUEST, None, "no").kind(),
            "rejected"
        );
        assert!(status_error(StatusCode::BAD_GATEWAY, None, "no").is_retryable());
    }
}
