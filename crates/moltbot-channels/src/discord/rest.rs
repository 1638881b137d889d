//! Discord's REST API: the gateway URL, sending a message, the typing indicator, and rate
//! limits.
//!
//! Rate limits: a 429 carries `retry_after` (float seconds) in its JSON body and the
//! `Retry-After`/`X-RateLimit-Reset-After` headers; it becomes
//! [`ChannelError::RateLimited`] for the hub's outbox to wait on. A success with
//! `X-RateLimit-Remaining: 0` means the channel's bucket is empty until
//! `X-RateLimit-Reset-After`: the next send to that channel waits for the reset here (or, if
//! the wait is long, returns `RateLimited` straight away instead of asking Discord for a 429).
//! A global 429 blocks every channel. Buckets are keyed by channel id, which is how Discord
//! scopes the create-message limit.

use crate::http;
use moltbot_core::{ChannelError, Outbound, Secret};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The longest `send` waits for a bucket to reset; past it the caller gets `RateLimited`
/// and the outbox retries later, so one slow channel does not hold a sender.
const MAX_BUCKET_WAIT: Duration = Duration::from_secs(10);
/// Cap on any wait Discord asks for.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

pub(super) struct Rest {
    http: reqwest::Client,
    api_base: String,
    /// `Bot <token>`, marked sensitive so it is left out of debug output.
    authorization: HeaderValue,
    // A std mutex: held only to read or update the map, never across an `.await`.
    buckets: Mutex<Buckets>,
}

/// When sending may resume, per channel and for all of them.
#[derive(Default)]
struct Buckets {
    channels: HashMap<String, Instant>,
    global: Option<Instant>,
}

impl Buckets {
    /// How long a send to `channel` must wait now.
    fn wait(&self, channel: &str, now: Instant) -> Duration {
        let channel = self.channels.get(channel).copied();
        [channel, self.global]
            .into_iter()
            .flatten()
            .map(|until| until.saturating_duration_since(now))
            .max()
            .unwrap_or_default()
    }

    fn block(&mut self, channel: &str, until: Instant, now: Instant) {
        // Drop buckets that already reset so the map stays as small as the busy channels.
        self.channels.retain(|_, until| *until > now);
        self.channels.insert(channel.to_string(), until);
    }
}

impl Rest {
    pub(super) fn new(
        http: reqwest::Client,
        api_base: &str,
        token: &Secret,
    ) -> Result<Self, ChannelError> {
        let mut authorization =
            HeaderValue::from_str(&format!("Bot {}", token.expose())).map_err(|_| {
                ChannelError::Unauthorized(
                    "channels.discord.bot_token contains characters not allowed in an HTTP \
                     header (a line break or a control character)"
                        .into(),
                )
            })?;
        authorization.set_sensitive(true);
        Ok(Self {
            http,
            api_base: api_base.trim_end_matches('/').to_string(),
            authorization,
            buckets: Mutex::new(Buckets::default()),
        })
    }

    fn buckets(&self) -> std::sync::MutexGuard<'_, Buckets> {
        self.buckets.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `GET /gateway/bot`: the WebSocket URL to identify on.
    pub(super) async fn gateway_url(&self) -> Result<String, ChannelError> {
        let response = self
            .http
            .get(format!("{}/gateway/bot", self.api_base))
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(http::transport_error)?;
        if !response.status().is_success() {
            return Err(self.error_from(response, None).await);
        }
        let body: Value = response.json().await.map_err(http::transport_error)?;
        match body["url"].as_str() {
            Some(url) if !url.is_empty() => Ok(url.to_string()),
            _ => Err(ChannelError::Transient(
                "GET /gateway/bot answered without a `url`".into(),
            )),
        }
    }

    /// `POST /channels/{id}/messages`; returns the new message's id.
    pub(super) async fn create_message(&self, msg: &Outbound) -> Result<String, ChannelError> {
        // A Discord thread is a channel of its own: a message for a thread goes there.
        let channel = msg.thread.as_deref().unwrap_or(&msg.chat_id);
        check_channel_id(channel)?;
        let chars = msg.text.chars().count();
        if chars == 0 || chars > super::MAX_MESSAGE_CHARS {
            return Err(ChannelError::Rejected(format!(
                "message text must be 1 to {} characters, got {chars}",
                super::MAX_MESSAGE_CHARS
            )));
        }
        self.wait_for_bucket(channel).await?;

        let mut body = json!({
            "content": msg.text,
            // Never ping anyone (`@everyone`, roles, users) because of what the model wrote.
            "allowed_mentions": {"parse": []},
        });
        if let Some(reply_to) = &msg.reply_to {
            body["message_reference"] = json!({
                "message_id": reply_to,
                // The message may have been deleted meanwhile: send without the reference.
                "fail_if_not_exists": false,
            });
        }
        let response = self
            .http
            .post(format!("{}/channels/{channel}/messages", self.api_base))
            .header(AUTHORIZATION, self.authorization.clone())
            .json(&body)
            .send()
            .await
            .map_err(http::transport_error)?;
        if !response.status().is_success() {
            return Err(self.error_from(response, Some(channel)).await);
        }
        self.note_bucket(channel, response.headers());
        let created: Value = response.json().await.map_err(http::transport_error)?;
        created["id"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| ChannelError::Transient("Discord answered without a message id".into()))
    }

    /// `POST /channels/{id}/typing`: "typing…" for about ten seconds.
    pub(super) async fn trigger_typing(&self, chat_id: &str) -> Result<(), ChannelError> {
        check_channel_id(chat_id)?;
        let response = self
            .http
            .post(format!("{}/channels/{chat_id}/typing", self.api_base))
            .header(AUTHORIZATION, self.authorization.clone())
            .send()
            .await
            .map_err(http::transport_error)?;
        if !response.status().is_success() {
            return Err(self.error_from(response, None).await);
        }
        Ok(())
    }

    /// Wait for `channel`'s bucket (and the global one) to reset, if it is empty.
    async fn wait_for_bucket(&self, channel: &str) -> Result<(), ChannelError> {
        let wait = self.buckets().wait(channel, Instant::now());
        if wait > MAX_BUCKET_WAIT {
            return Err(ChannelError::RateLimited { retry_after: wait });
        }
        if !wait.is_zero() {
            tracing::debug!(
                wait_ms = wait.as_millis() as u64,
                "discord bucket empty, waiting"
            );
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// Remember an empty bucket reported on a successful call.
    fn note_bucket(&self, channel: &str, headers: &HeaderMap) {
        let remaining = header_str(headers, "x-ratelimit-remaining");
        if remaining.map(str::trim) != Some("0") {
            return;
        }
        if let Some(reset_after) = seconds_header(headers, "x-ratelimit-reset-after") {
            let now = Instant::now();
            self.buckets().block(channel, now + reset_after, now);
        }
    }

    /// Map a failed answer to an error, remembering rate limits for `channel`.
    async fn error_from(&self, response: reqwest::Response, channel: Option<&str>) -> ChannelError {
        let status = response.status();
        let headers = response.headers().clone();
        // The body is Discord's `{"message", "code"}`; it never echoes the token.
        let body = response.text().await.unwrap_or_default();
        let parsed: Option<Value> = serde_json::from_str(&body).ok();
        if status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = retry_after(parsed.as_ref(), &headers);
            let now = Instant::now();
            let mut buckets = self.buckets();
            if parsed.as_ref().is_some_and(|v| v["global"] == true) {
                buckets.global = Some(now + retry_after);
            } else if let Some(channel) = channel {
                buckets.block(channel, now + retry_after, now);
            }
            return ChannelError::RateLimited { retry_after };
        }
        let detail = match &parsed {
            Some(v) if v["message"].is_string() => match v["code"].as_u64() {
                Some(code) => format!(
                    "{} (code {code})",
                    v["message"].as_str().unwrap_or_default()
                ),
                None => v["message"].as_str().unwrap_or_default().to_string(),
            },
            _ => body,
        };
        match status {
            // Missing permissions or a user who does not accept DMs: retrying will not help,
            // and the token itself is fine (the shared mapping would call 403 unauthorized).
            StatusCode::FORBIDDEN => {
                ChannelError::Rejected(format!("HTTP 403: {}", http::shorten(&detail, 300)))
            }
            _ => http::status_error(status, None, &detail),
        }
    }
}

/// Discord channel ids are snowflakes (digits); anything else would change the URL path.
fn check_channel_id(id: &str) -> Result<(), ChannelError> {
    if !id.is_empty() && id.len() <= 20 && id.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(());
    }
    Err(ChannelError::Rejected(format!(
        "chat_id must be a Discord channel id (up to 20 digits), got {:?}",
        http::shorten(id, 40)
    )))
}

/// The wait a 429 asks for: the body's precise `retry_after`, else the headers.
fn retry_after(body: Option<&Value>, headers: &HeaderMap) -> Duration {
    body.and_then(|v| v["retry_after"].as_f64())
        .and_then(seconds)
        .or_else(|| seconds_header(headers, "x-ratelimit-reset-after"))
        .or_else(|| http::retry_after_header(headers))
        .unwrap_or(Duration::from_secs(1))
}

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

fn seconds_header(headers: &HeaderMap, name: &str) -> Option<Duration> {
    seconds(header_str(headers, name)?.trim().parse().ok()?)
}

fn seconds(secs: f64) -> Option<Duration> {
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs).min(MAX_RETRY_AFTER))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_prefers_the_body_then_the_headers() {
        let mut headers = HeaderMap::new();
        headers.insert("retry-after", HeaderValue::from_static("3"));
        headers.insert("x-ratelimit-reset-after", HeaderValue::from_static("2.5"));
        let body = json!({"retry_after": 0.25});
        assert_eq!(
            retry_after(Some(&body), &headers),
            Duration::from_millis(250)
        );
        assert_eq!(retry_after(None, &headers), Duration::from_millis(2500));
        headers.remove("x-ratelimit-reset-after");
        assert_eq!(retry_after(None, &headers), Duration::from_secs(3));
        assert_eq!(retry_after(None, &HeaderMap::new()), Duration::from_secs(1));
    }

    #[test]
    fn channel_ids_must_be_snowflakes() {
        assert!(check_channel_id("123456789012345678").is_ok());
        assert!(check_channel_id("").is_err());
        assert!(check_channel_id("12/../../users").is_err());
    }

    #[test]
    fn a_bucket_blocks_its_channel_and_a_global_limit_blocks_all() {
        let now = Instant::now();
        let mut buckets = Buckets::default();
        buckets.block("1", now + Duration::from_secs(2), now);
        assert_eq!(buckets.wait("1", now), Duration::from_secs(2));
        assert_eq!(buckets.wait("2", now), Duration::ZERO);
        buckets.global = Some(now + Duration::from_secs(5));
        assert_eq!(buckets.wait("2", now), Duration::from_secs(5));
    }
}
