//! The Slack adapter against the fake Web API, with its events router served on a real
//! loopback socket and the fake acting as Slack.

use crate::whatsapp::{serve, MemorySink, Served};
use moltbot_channels::slack::{to_mrkdwn, SlackChannel, EVENTS_PATH};
use moltbot_core::config::SlackConfig;
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use moltbot_fakes::slack::{signature, FakeSlack};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "xoxb-0000-fake-bot-token";
const SIGNING_SECRET: &str = "fake-signing-secret-8e3a";
const BOT: &str = "U0BOT00001";
const USER: &str = "U0USER0001";
const DM: &str = "D0DM000001";
const GENERAL: &str = "C0GENERAL1";
const WAIT: Duration = Duration::from_secs(5);

struct Ctx {
    fake: FakeSlack,
    channel: Arc<SlackChannel>,
    sink: Arc<MemorySink>,
    url: String,
    _served: Served,
}

async fn ctx() -> Ctx {
    ctx_with_token(TOKEN).await
}

async fn ctx_with_token(token: &str) -> Ctx {
    let fake = FakeSlack::start(TOKEN, BOT).await;
    let cfg = SlackConfig {
        enabled: true,
        bot_token: Some(Secret::new(token)),
        signing_secret: Some(Secret::new(SIGNING_SECRET)),
        api_base: fake.base_url(),
        ..SlackConfig::default()
    };
    let channel = Arc::new(SlackChannel::new(&cfg).expect("channel"));
    let sink = Arc::new(MemorySink::default());
    let served = serve(channel.events_router(sink.clone())).await;
    let url = format!("{}{EVENTS_PATH}", served.base);
    Ctx {
        fake,
        channel,
        sink,
        url,
        _served: served,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
}

fn no_secret_in(text: &str) {
    for secret in [TOKEN, SIGNING_SECRET] {
        assert!(!text.contains(secret), "a secret leaked into {text:?}");
    }
}

fn outbound(chat_id: &str, text: &str, thread: Option<&str>) -> Outbound {
    Outbound {
        chat_id: chat_id.into(),
        text: text.into(),
        reply_to: None,
        thread: thread.map(str::to_string),
    }
}

#[tokio::test]
async fn capabilities_and_kind() {
    let c = ctx().await;
    assert_eq!(c.channel.kind(), "slack");
    let caps = c.channel.capabilities();
    assert_eq!(caps.max_message_chars, 3900);
    assert!(!caps.typing && caps.media);
    c.channel.typing(DM).await.expect("typing is a no-op");
}

#[tokio::test]
async fn url_verification_answers_the_challenge() {
    let c = ctx().await;
    let r = c
        .fake
        .deliver_url_verification(
            &c.url,
            SIGNING_SECRET,
            "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.expect("JSON");
    assert_eq!(
        body,
        serde_json::json!({"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})
    );
}

#[tokio::test]
async fn forged_stale_or_unsigned_requests_are_refused() {
    let c = ctx().await;
    let event = c.fake.dm_event(USER, DM, "hello");
    let body = c.fake.envelope(&event).to_string();
    let ts = now().to_string();

    let forged = c
        .fake
        .deliver_raw(
            &c.url,
            body.clone(),
            &ts,
            Some(&signature("nope", &ts, body.as_bytes())),
        )
        .await;
    assert_eq!(forged.status(), 401);
    let json: Value = forged.json().await.expect("JSON");
    assert_eq!(json["error"]["kind"], "unauthorized");
    no_secret_in(&json.to_string());

    let unsigned = c.fake.deliver_raw(&c.url, body.clone(), &ts, None).await;
    assert_eq!(unsigned.status(), 401);

    // Correctly signed, but six minutes old: a replay.
    let old = (now() - 6 * 60).to_string();
    let stale = c
        .fake
        .deliver_raw(
            &c.url,
            body.clone(),
            &old,
            Some(&signature(SIGNING_SECRET, &old, body.as_bytes())),
        )
        .await;
    assert_eq!(stale.status(), 401);
    let json: Value = stale.json().await.expect("JSON");
    assert!(
        json["error"]["message"]
            .as_str()
            .expect("message")
            .contains(&old),
        "{json}"
    );

    let not_a_time = c
        .fake
        .deliver_raw(
            &c.url,
            body.clone(),
            "yesterday",
            Some(&signature(SIGNING_SECRET, "yesterday", body.as_bytes())),
        )
        .await;
    assert_eq!(not_a_time.status(), 401);

    assert!(c.sink.messages().is_empty());
}

#[tokio::test]
async fn a_direct_message_is_stored_and_a_retry_is_deduplicated() {
    let c = ctx().await;
    let event = c.fake.dm_event(USER, DM, "what's the weather?");
    let r = c.fake.deliver_event(&c.url, SIGNING_SECRET, &event).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        c.sink.messages(),
        vec![Inbound {
            channel: "slack".into(),
            external_id: format!("{DM}:{}", event.ts),
            chat_id: DM.into(),
            sender_id: USER.into(),
            sender_name: None,
            text: "what's the weather?".into(),
            is_group: false,
            mentioned: true,
            reply_to: None,
            thread: None,
        }]
    );

    let retry = c
        .fake
        .deliver_event_retry(&c.url, SIGNING_SECRET, &event, 1)
        .await;
    assert_eq!(retry.status(), 200);
    assert_eq!(c.sink.messages().len(), 1);

    // A reply inside a DM thread keeps its thread.
    let mut threaded = c.fake.dm_event(USER, DM, "and tomorrow?");
    threaded.thread_ts = Some(event.ts.clone());
    c.fake
        .deliver_event(&c.url, SIGNING_SECRET, &threaded)
        .await;
    let stored = c.sink.messages();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].thread.as_deref(), Some(event.ts.as_str()));
}

#[tokio::test]
async fn a_mention_arriving_as_message_and_app_mention_is_stored_once() {
    let c = ctx().await;
    let mention = c.fake.mention_event(USER, GENERAL, "summarise this thread");
    let mut message = mention.clone();
    message.kind = "message".into();
    message.channel_type = Some("channel".into());
    message.event_id = "Ev0OTHER0001".into();

    for event in [&message, &mention] {
        let r = c.fake.deliver_event(&c.url, SIGNING_SECRET, event).await;
        assert_eq!(r.status(), 200);
    }
    let stored = c.sink.messages();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let m = &stored[0];
    assert_eq!(m.external_id, format!("{GENERAL}:{}", mention.ts));
    assert!(m.is_group && m.mentioned);
    assert_eq!(m.text, "summarise this thread");
    assert_eq!(
        m.thread.as_deref(),
        Some(mention.ts.as_str()),
        "group replies thread"
    );

    // A plain channel message without a mention is stored, unmentioned, for the hub's
    // group policy to decide.
    let chatter = c.fake.channel_event(USER, GENERAL, "lunch?");
    c.fake.deliver_event(&c.url, SIGNING_SECRET, &chatter).await;
    let stored = c.sink.messages();
    assert_eq!(stored.len(), 2);
    assert!(stored[1].is_group && !stored[1].mentioned);
}

#[tokio::test]
async fn bot_messages_edits_and_our_own_posts_are_ignored() {
    let c = ctx().await;
    let mut from_bot = c.fake.channel_event("U0OTHERBOT", GENERAL, "beep");
    from_bot.bot_id = Some("B0OTHER001".into());
    let ours = c.fake.channel_event(BOT, GENERAL, "my own answer");
    let mut edited = c.fake.channel_event(USER, GENERAL, "fixed typo");
    edited.subtype = Some("message_changed".into());
    let mut joined = c
        .fake
        .channel_event(USER, GENERAL, "<@U0USER0001> has joined");
    joined.subtype = Some("channel_join".into());

    for event in [&from_bot, &ours, &edited, &joined] {
        let r = c.fake.deliver_event(&c.url, SIGNING_SECRET, event).await;
        assert_eq!(r.status(), 200);
    }
    assert!(c.sink.messages().is_empty(), "{:?}", c.sink.messages());
}

#[tokio::test]
async fn a_sink_failure_answers_500_so_slack_retries() {
    let c = ctx().await;
    c.sink.fail_next();
    let event = c.fake.dm_event(USER, DM, "hi");
    let r = c.fake.deliver_event(&c.url, SIGNING_SECRET, &event).await;
    assert_eq!(r.status(), 500);
    assert!(c.sink.messages().is_empty());
    let retry = c
        .fake
        .deliver_event_retry(&c.url, SIGNING_SECRET, &event, 1)
        .await;
    assert_eq!(retry.status(), 200);
    assert_eq!(c.sink.messages().len(), 1);
}

#[tokio::test]
async fn send_posts_mrkdwn_in_the_thread() {
    let c = ctx().await;
    let ts = c
        .channel
        .send(&outbound(
            GENERAL,
            "**Done** — see [docs](https://x.dev/a?b=1&c=2)",
            Some("1712345678.000100"),
        ))
        .await
        .expect("sent");
    c.channel
        .send(&outbound(DM, "plain", None))
        .await
        .expect("sent");
    let sent = c.fake.wait_sent(2, WAIT).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].ts, ts);
    assert_eq!(sent[0].channel, GENERAL);
    assert_eq!(
        sent[0].text,
        "*Done* — see <https://x.dev/a?b=1&amp;c=2|docs>"
    );
    assert_eq!(sent[0].thread_ts.as_deref(), Some("1712345678.000100"));
    assert_eq!(sent[1].thread_ts, None);
}

#[tokio::test]
async fn send_failures_map_to_error_kinds_without_secrets() {
    let c = ctx().await;
    let msg = outbound(GENERAL, "hi", None);

    c.fake.ratelimit_next_posts(1, 7);
    let limited = c.channel.send(&msg).await.expect_err("rate limited");
    assert_eq!(
        limited,
        ChannelError::RateLimited {
            retry_after: Duration::from_secs(7)
        }
    );

    c.fake.fail_next_posts(1, "ratelimited");
    let limited_200 = c
        .channel
        .send(&msg)
        .await
        .expect_err("rate limited in the body");
    assert_eq!(limited_200.kind(), "rate_limited");

    c.fake.fail_next_posts(1, "token_revoked");
    assert_eq!(
        c.channel.send(&msg).await.expect_err("revoked").kind(),
        "unauthorized"
    );

    c.fake.fail_next_posts(1, "not_in_channel");
    let rejected = c.channel.send(&msg).await.expect_err("not in channel");
    assert_eq!(rejected.kind(), "rejected");
    assert!(
        rejected.to_string().contains("not_in_channel"),
        "{rejected}"
    );

    c.fake.fail_next_posts(1, "internal_error");
    let transient = c.channel.send(&msg).await.expect_err("slack trouble");
    assert_eq!(transient.kind(), "transient");

    let wrong = ctx_with_token("xoxb-revoked").await;
    let unauthorized = wrong.channel.send(&msg).await.expect_err("bad token");
    assert_eq!(unauthorized.kind(), "unauthorized");
    assert!(
        unauthorized.to_string().contains("invalid_auth"),
        "{unauthorized}"
    );

    for e in [limited, limited_200, rejected, transient, unauthorized] {
        no_secret_in(&e.to_string());
        assert!(!e.to_string().contains("xoxb-revoked"));
    }
    assert!(c.fake.sent().is_empty());
}

#[tokio::test]
async fn run_learns_the_bot_user_and_stops_on_shutdown() {
    let c = ctx().await;
    assert_eq!(c.channel.bot_user_id(), None);
    let shutdown = CancellationToken::new();
    let running = {
        let channel = c.channel.clone();
        let sink: Arc<dyn InboundSink> = c.sink.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move { channel.run(sink, shutdown).await })
    };
    tokio::time::timeout(WAIT, async {
        while c.channel.state() != ChannelState::Connected {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("connected in time");
    assert_eq!(c.channel.bot_user_id(), Some(BOT));
    assert_eq!(c.fake.auth_tests(), 1);

    // With the bot id known, a mention inside a message is seen even without envelope
    // authorizations.
    let event = c
        .fake
        .channel_event(USER, GENERAL, &format!("hey <@{BOT}|moltbot> look"));
    let mut envelope = c.fake.envelope(&event);
    envelope["authorizations"] = serde_json::json!([]);
    let body = envelope.to_string();
    let ts = now().to_string();
    let r = c
        .fake
        .deliver_raw(
            &c.url,
            body.clone(),
            &ts,
            Some(&signature(SIGNING_SECRET, &ts, body.as_bytes())),
        )
        .await;
    assert_eq!(r.status(), 200);
    let stored = c.sink.messages();
    assert_eq!(stored.len(), 1);
    assert!(stored[0].mentioned);
    assert_eq!(stored[0].text, "hey look");

    shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, running)
        .await
        .expect("stops in time");
    assert_eq!(ended.expect("no panic"), Ok(()));
    assert_eq!(c.channel.state(), ChannelState::Stopped);
}

#[tokio::test]
async fn run_gives_up_on_invalid_auth() {
    let c = ctx_with_token("xoxb-revoked").await;
    let sink: Arc<dyn InboundSink> = c.sink.clone();
    let ended = tokio::time::timeout(WAIT, c.channel.run(sink, CancellationToken::new()))
        .await
        .expect("ends in time");
    assert_eq!(ended.expect_err("unauthorized").kind(), "unauthorized");
    assert!(matches!(c.channel.state(), ChannelState::Error { .. }));
}

#[test]
fn mrkdwn_converts_common_markdown() {
    assert_eq!(
        to_mrkdwn("**bold** and *it* and ~~gone~~"),
        "*bold* and _it_ and ~gone~"
    );
    assert_eq!(to_mrkdwn("[site](https://a.b/c)"), "<https://a.b/c|site>");
    assert_eq!(to_mrkdwn("a < b && c > d"), "a &lt; b &amp;&amp; c &gt; d");
    assert_eq!(
        to_mrkdwn("<@U123> <!channel>"),
        "&lt;@U123&gt; &lt;!channel&gt;"
    );
    assert_eq!(to_mrkdwn("2 * 3 * 4"), "2 * 3 * 4");
    assert_eq!(to_mrkdwn("## Plan\n- one\n* two"), "*Plan*\n• one\n• two");
    assert_eq!(to_mrkdwn("`**x** <y>`"), "`**x** &lt;y&gt;`");
    assert_eq!(
        to_mrkdwn("```rust\nlet a = **b** < c;\n```\nafter **x**"),
        "```\nlet a = **b** &lt; c;\n```\nafter *x*"
    );
    assert_eq!(
        to_mrkdwn("unclosed **bold and [link]("),
        "unclosed **bold and [link]("
    );
    assert_eq!(to_mrkdwn("héllo wörld ✓"), "héllo wörld ✓");
    assert_eq!(to_mrkdwn(""), "");
}
