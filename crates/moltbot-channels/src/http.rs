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

/// The longest wait between two credential checks of a webhook-driven adapter.
const MAX_CHECK_BACKOFF: Duration = Duration::from_secs(60);

/// 1, 2, 4 … 60 s with up to 25% jitter, so adapters restarted together do not retry in step.
pub fn backoff(attempt: u32) -> Duration {
    let base = Duration::from_secs(1 << attempt.min(6)).min(MAX_CHECK_BACKOFF);
    base + base.mul_f64(rand::random::<f64>() * 0.25)
}

/// The `run` loop of adapters that receive through webhooks: call `check` (a cheap
/// authenticated request) until it succeeds, honouring `retry_after` and backing off on
/// retryable failures, then report `Connected` until `shutdown`. A refused credential ends
/// the loop with that error, so the hub reports it instead of retrying forever.
pub async fn check_then_hold<F, Fut>(
    platform: &'static str,
    shutdown: &tokio_util::sync::CancellationToken,
    set_state: impl Fn(moltbot_core::ChannelState),
    mut check: F,
) -> Result<(), ChannelError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), ChannelError>>,
{
    use moltbot_core::ChannelState;
    set_state(ChannelState::Connecting);
    let mut attempt = 0;
    loop {
        let checked = tokio::select! {
            _ = shutdown.cancelled() => break,
            checked = check() => checked,
        };
        let err = match checked {
            Ok(()) => {
                set_state(ChannelState::Connected);
                tracing::info!(platform, "credentials accepted; receiving webhooks");
                shutdown.cancelled().await;
                break;
            }
            Err(err) => err,
        };
        set_state(ChannelState::Error {
            detail: err.to_string(),
        });
        if !err.is_retryable() {
            tracing::error!(platform, cause = %err, "credentials refused; giving up");
            return Err(err);
        }
        let wait = match &err {
            ChannelError::RateLimited { retry_after } => *retry_after,
            _ => backoff(attempt),
        };
        attempt += 1;
        tracing::warn!(platform, cause = %err, retry_in = ?wait, "credential check failed");
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    set_state(ChannelState::Stopped);
    Ok(())
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
