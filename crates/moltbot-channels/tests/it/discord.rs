//! The Discord adapter against a loopback fake Discord (gateway WebSocket + REST).

use futures::future::BoxFuture;
use moltbot_channels::discord::DiscordChannel;
use moltbot_core::channel::Cursor;
use moltbot_core::config::DiscordConfig;
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use moltbot_fakes::discord::{FakeDiscord, SentMessage};
use serde_json::json;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "MTEx.fake-discord-bot-token.value";
const HEARTBEAT: Duration = Duration::from_millis(200);
const WAIT: Duration = Duration::from_secs(10);

/// Stores messages de-duplicated by `external_id` and keeps cursors, like the hub's sink.
#[derive(Default)]
struct TestSink {
    // A std mutex: never held across an `.await`.
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    messages: Vec<Inbound>,
    seen: HashSet<String>,
    cursors: HashMap<String, String>,
}

impl TestSink {
    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn messages(&self) -> Vec<Inbound> {
        self.lock().messages.clone()
    }

    fn cursor_value(&self, key: &str) -> Option<String> {
        self.lock().cursors.get(&format!("discord/{key}")).cloned()
    }
}

impl InboundSink for TestSink {
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        batch: Vec<Inbound>,
        cursor: Option<Cursor>,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let mut state = self.lock();
            for message in batch {
                if state.seen.insert(message.external_id.clone()) {
                    state.messages.push(message);
                }
            }
            if let Some(c) = cursor {
                state
                    .cursors
                    .insert(format!("{channel}/{}", c.key), c.value);
            }
            Ok(())
        })
    }

    fn cursor<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ChannelError>> {
        Box::pin(async move {
            Ok(self
                .lock()
                .cursors
                .get(&format!("{channel}/{key}"))
                .cloned())
        })
    }

    fn save_cursor<'a>(
        &'a self,
        channel: &'a str,
        cursor: Cursor,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let key = format!("{channel}/{}", cursor.key);
            self.lock().cursors.insert(key, cursor.value);
            Ok(())
        })
    }
}

fn config(fake: &FakeDiscord, token: &str) -> DiscordConfig {
    DiscordConfig {
        enabled: true,
        bot_token: Some(Secret::new(token)),
        api_base: fake.api_base(),
        ..DiscordConfig::default()
    }
}

/// A running adapter.
struct Running {
    channel: Arc<DiscordChannel>,
    sink: Arc<TestSink>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ChannelError>>,
}

impl Running {
    fn start(cfg: &DiscordConfig, sink: Arc<TestSink>) -> Self {
        let channel = Arc::new(DiscordChannel::new(cfg).expect("adapter builds"));
        let shutdown = CancellationToken::new();
        let task = {
            let (channel, sink, shutdown) = (channel.clone(), sink.clone(), shutdown.clone());
            tokio::spawn(async move { channel.run(sink, shutdown).await })
        };
        Self {
            channel,
            sink,
            shutdown,
            task,
        }
    }

    async fn connected(fake: &FakeDiscord) -> Self {
        let running = Self::start(&config(fake, TOKEN), Arc::new(TestSink::default()));
        running.wait_connected().await;
        running
    }

    async fn wait_connected(&self) {
        let channel = self.channel.clone();
        wait_for("state Connected", move || {
            channel.state() == ChannelState::Connected
        })
        .await;
    }

    async fn wait_messages(&self, n: usize) -> Vec<Inbound> {
        let sink = self.sink.clone();
        wait_for(&format!("{n} messages"), move || sink.messages().len() >= n).await;
        self.sink.messages()
    }

    async fn stop(self) -> Result<(), ChannelError> {
        self.shutdown.cancel();
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("run stops promptly on shutdown")
            .expect("run does not panic")
    }
}

async fn started_fake() -> FakeDiscord {
    let fake = FakeDiscord::start(TOKEN).await;
    fake.set_heartbeat_interval(HEARTBEAT);
    fake
}

/// Poll `condition` every 10 ms until it holds; panic naming `what` after [`WAIT`].
async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn run_result(running: Running) -> Result<(), ChannelError> {
    tokio::time::timeout(WAIT, running.task)
        .await
        .expect("run returns")
        .expect("run does not panic")
}

#[tokio::test]
async fn identifies_becomes_connected_and_saves_the_session() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    assert_eq!(fake.identify_count(), 1);
    assert_eq!(fake.resume_count(), 0);
    let saved = running
        .sink
        .cursor_value("gateway_session")
        .expect("session saved");
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("json");
    assert!(saved["session_id"].as_str().is_some_and(|s| !s.is_empty()));
    assert_eq!(saved["resume_gateway_url"], fake.gateway_url());
    assert_eq!(saved["user_id"], fake.bot_user_id());

    let channel = running.channel.clone();
    assert_eq!(running.stop().await, Ok(()));
    assert_eq!(channel.state(), ChannelState::Stopped);
}

#[tokio::test]
async fn a_direct_message_is_delivered() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    let id = fake.push_dm("500", "600", "ada", "hello bot");
    let messages = running.wait_messages(1).await;
    let m = &messages[0];
    assert_eq!(m.channel, "discord");
    assert_eq!(m.external_id, id);
    assert_eq!(m.chat_id, "500");
    assert_eq!(m.sender_id, "600");
    assert_eq!(m.sender_name.as_deref(), Some("ada"));
    assert_eq!(m.text, "hello bot");
    assert!(!m.is_group);
    assert_eq!(m.reply_to.as_deref(), Some(id.as_str()));
    // The sequence number travels with the message.
    let saved = running
        .sink
        .cursor_value("gateway_session")
        .expect("cursor");
    let saved: serde_json::Value = serde_json::from_str(&saved).expect("json");
    assert!(saved["seq"].as_u64().is_some_and(|s| s >= 2), "{saved}");
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn guild_messages_carry_the_mention_flag_without_the_mention() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    let bot = fake.bot_user_id();
    fake.push_guild_message(
        "900",
        "501",
        "601",
        &format!("<@{bot}> what time is it"),
        &[&bot],
    );
    fake.push_guild_message("900", "501", "602", "just chatting <@777>", &["777"]);
    let messages = running.wait_messages(2).await;
    assert!(messages[0].is_group && messages[0].mentioned);
    assert_eq!(messages[0].text, "what time is it");
    assert!(messages[1].is_group && !messages[1].mentioned);
    assert_eq!(messages[1].text, "just chatting <@777>");
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn own_and_other_bots_messages_are_ignored() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    fake.push_dm("500", &fake.bot_user_id(), "moltbot", "my own reply");
    fake.push_event(
        "MESSAGE_CREATE",
        json!({
            "id": "1300000000000000001", "type": 0, "channel_id": "500", "content": "beep",
            "author": {"id": "700", "username": "otherbot", "bot": true}, "mentions": [],
        }),
    );
    let marker = fake.push_dm("500", "600", "ada", "a person");
    let messages = running.wait_messages(1).await;
    // Dispatches arrive in order, so once the marker is in, the others were seen and dropped.
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].external_id, marker);
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn heartbeats_follow_the_interval_and_are_acked() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    let started = Instant::now();
    let beats_at_start = fake.heartbeats_received();
    wait_for("4 more heartbeats", || {
        fake.heartbeats_received() >= beats_at_start + 4
    })
    .await;
    let elapsed = started.elapsed();
    // Four beats at 200 ms take at least ~600 ms (the first may come early) and, with ACKs
    // arriving, nothing else happens: no reconnect.
    assert!(elapsed >= Duration::from_millis(550), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert_eq!(fake.identify_count(), 1);
    assert_eq!(fake.resume_count(), 0);
    assert_eq!(running.channel.state(), ChannelState::Connected);
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_missed_heartbeat_ack_reconnects_and_resumes() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    fake.set_ack_heartbeats(false);
    wait_for("a resume", || fake.resume_count() >= 1).await;
    fake.set_ack_heartbeats(true);
    running.wait_connected().await;
    assert_eq!(fake.identify_count(), 1);
    let id = fake.push_dm("500", "600", "ada", "still there?");
    assert_eq!(running.wait_messages(1).await[0].external_id, id);
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_dropped_connection_resumes_and_replays_missed_messages_once() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    let first = fake.push_dm("500", "600", "ada", "one");
    running.wait_messages(1).await;

    fake.drop_connections();
    let channel = running.channel.clone();
    wait_for("the adapter to notice", move || {
        matches!(channel.state(), ChannelState::Error { .. })
    })
    .await;
    let second = fake.push_dm("500", "600", "ada", "two");
    let third = fake.push_dm("500", "600", "ada", "three");

    let messages = running.wait_messages(3).await;
    running.wait_connected().await;
    assert_eq!(fake.resume_count(), 1);
    assert_eq!(fake.identify_count(), 1);
    let ids: Vec<&str> = messages.iter().map(|m| m.external_id.as_str()).collect();
    assert_eq!(ids, [first.as_str(), second.as_str(), third.as_str()]);
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn op7_reconnect_resumes_the_session() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    fake.send_reconnect();
    wait_for("a resume", || fake.resume_count() == 1).await;
    running.wait_connected().await;
    let id = fake.push_dm("500", "600", "ada", "after reconnect");
    assert_eq!(running.wait_messages(1).await[0].external_id, id);
    assert_eq!(fake.identify_count(), 1);
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_restart_resumes_the_saved_session() {
    let fake = started_fake().await;
    let running = Running::connected(&fake).await;
    fake.push_dm("500", "600", "ada", "before");
    running.wait_messages(1).await;
    let sink = running.sink.clone();
    running.stop().await.expect("clean stop");

    // Shutdown closed with 4000, so the session is still resumable.
    let during = fake.push_dm("500", "600", "ada", "while down");
    let again = Running::start(&config(&fake, TOKEN), sink);
    again.wait_connected().await;
    let messages = again.wait_messages(2).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].external_id, during);
    assert_eq!(fake.identify_count(), 1);
    assert_eq!(fake.resume_count(), 1);
    again.stop().await.expect("clean stop");
}

#[tokio::test]
async fn an_unknown_saved_session_falls_back_to_identify() {
    let fake = started_fake().await;
    let sink = Arc::new(TestSink::default());
    let stale = json!({
        "session_id": "gone", "resume_gateway_url": fake.gateway_url(), "user_id": "1", "seq": 9,
    });
    sink.save_cursor(
        "discord",
        Cursor {
            key: "gateway_session".into(),
            value: stale.to_string(),
        },
    )
    .await
    .expect("saved");
    let running = Running::start(&config(&fake, TOKEN), sink);
    // Op 9 `false` waits 1–5 s before identifying, as Discord asks.
    running.wait_connected().await;
    assert_eq!(fake.resume_count(), 1);
    assert_eq!(fake.identify_count(), 1);
    let saved = running
        .sink
        .cursor_value("gateway_session")
        .expect("cursor");
    assert!(!saved.contains("\"gone\""), "{saved}");
    running.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_wrong_token_stops_with_unauthorized_and_never_shows_the_token() {
    let fake = started_fake().await;
    let wrong = "MTEx.wrong-token-that-must-not-leak";

    // Through the gateway: Identify is answered with close 4004.
    let cfg = DiscordConfig {
        gateway_url: Some(fake.gateway_url()),
        ..config(&fake, wrong)
    };
    let running = Running::start(&cfg, Arc::new(TestSink::default()));
    let channel = running.channel.clone();
    let err = run_result(running).await.expect_err("refused");
    assert!(matches!(err, ChannelError::Unauthorized(_)), "{err:?}");
    assert!(err.to_string().contains("4004"), "{err}");
    assert!(matches!(channel.state(), ChannelState::Error { .. }));
    let mut texts = vec![
        err.to_string(),
        format!("{err:?}"),
        format!("{:?}", channel.state()),
    ];

    // Through REST: `GET /gateway/bot` answers 401.
    let running = Running::start(&config(&fake, wrong), Arc::new(TestSink::default()));
    let channel = running.channel.clone();
    let err = run_result(running).await.expect_err("refused");
    assert!(matches!(err, ChannelError::Unauthorized(_)), "{err:?}");
    texts.push(format!("{err} {err:?}"));

    // Sending with it.
    let msg = Outbound {
        chat_id: "500".into(),
        text: "hi".into(),
        reply_to: None,
        thread: None,
    };
    let err = channel.send(&msg).await.expect_err("refused");
    assert!(matches!(err, ChannelError::Unauthorized(_)), "{err:?}");
    texts.push(format!("{err} {err:?}"));
    texts.push(format!("{:?}", channel.typing("500").await));

    for text in texts {
        assert!(!text.contains("wrong-token"), "token leaked in: {text}");
    }
}

#[tokio::test]
async fn a_disallowed_message_content_intent_is_rejected_with_a_hint() {
    let fake = started_fake().await;
    fake.disallow_message_content();
    let running = Running::start(&config(&fake, TOKEN), Arc::new(TestSink::default()));
    let err = run_result(running).await.expect_err("refused");
    match err {
        ChannelError::Rejected(detail) => assert!(detail.contains("Message Content intent")),
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn send_replies_with_a_reference_and_typing_is_shown() {
    let fake = started_fake().await;
    let channel = DiscordChannel::new(&config(&fake, TOKEN)).expect("adapter builds");
    let msg = Outbound {
        chat_id: "500".into(),
        text: "**hi** there".into(),
        reply_to: Some("1200000000000000009".into()),
        thread: None,
    };
    let id = channel.send(&msg).await.expect("sent");
    assert!(!id.is_empty());
    channel.typing("500").await.expect("typing");
    let sent = fake.wait_sent(1, WAIT).await;
    assert_eq!(
        sent,
        [SentMessage {
            channel_id: "500".into(),
            content: "**hi** there".into(),
            reply_to: Some("1200000000000000009".into()),
        }]
    );
    assert_eq!(fake.typing_calls(), ["500"]);

    let bad = Outbound {
        chat_id: "../users/@me".into(),
        ..msg
    };
    assert!(matches!(
        channel.send(&bad).await,
        Err(ChannelError::Rejected(_))
    ));
}

#[tokio::test]
async fn rate_limits_are_reported_and_respected() {
    let fake = started_fake().await;
    let channel = DiscordChannel::new(&config(&fake, TOKEN)).expect("adapter builds");
    let msg = Outbound {
        chat_id: "500".into(),
        text: "hello".into(),
        reply_to: None,
        thread: None,
    };

    fake.rate_limit_next_sends(1, 0.3);
    let err = channel.send(&msg).await.expect_err("rate limited");
    assert_eq!(
        err,
        ChannelError::RateLimited {
            retry_after: Duration::from_millis(300)
        }
    );
    // The channel's bucket is blocked until the limit resets: the next send waits for it.
    let started = Instant::now();
    channel.send(&msg).await.expect("sent after the wait");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );

    // A success reporting an empty bucket makes the next send wait too.
    fake.exhaust_bucket_on_next_send(0.3);
    channel.send(&msg).await.expect("sent");
    let started = Instant::now();
    channel.send(&msg).await.expect("sent after the reset");
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fake.sent().len(), 3);
}
