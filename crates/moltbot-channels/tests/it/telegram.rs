//! The Telegram adapter against the loopback fake Bot API: polling with a durable offset,
//! mentions, sending with MarkdownV2 and its fallback, error mapping, webhook mode, and the
//! bot token staying out of every error.

use futures::future::BoxFuture;
use moltbot_channels::telegram::{TelegramChannel, OFFSET_KEY, SECRET_HEADER, WEBHOOK_PATH};
use moltbot_core::channel::Cursor;
use moltbot_core::config::{TelegramConfig, TelegramMode};
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use moltbot_fakes::telegram::{too_many_requests, FakeTelegram};
use serde_json::{json, Value};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "4242:AAE-fake-token_value";
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// Fixtures.

/// An in-memory sink that behaves like the store: it drops `external_id`s it has seen and
/// saves the cursor with the batch, or fails as a whole.
#[derive(Default)]
struct MemorySink {
    state: Mutex<SinkState>,
    changed: Notify,
    fail_next_accepts: AtomicUsize,
}

#[derive(Default)]
struct SinkState {
    messages: Vec<Inbound>,
    seen: HashSet<String>,
    cursors: HashMap<(String, String), String>,
    /// Every message handed to a successful `accept`, duplicates included.
    delivered: usize,
    accept_calls: usize,
}

impl MemorySink {
    fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    fn messages(&self) -> Vec<Inbound> {
        self.state.lock().unwrap().messages.clone()
    }

    fn delivered(&self) -> usize {
        self.state.lock().unwrap().delivered
    }

    fn accept_calls(&self) -> usize {
        self.state.lock().unwrap().accept_calls
    }

    fn offset(&self) -> Option<String> {
        let state = self.state.lock().unwrap();
        state
            .cursors
            .get(&("telegram".to_string(), OFFSET_KEY.to_string()))
            .cloned()
    }

    /// Wait until `n` distinct messages were stored.
    async fn wait_messages(&self, n: usize) -> Vec<Inbound> {
        let waited = tokio::time::timeout(WAIT, async {
            loop {
                let changed = self.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let messages = self.messages();
                if messages.len() >= n {
                    return messages;
                }
                changed.await;
            }
        })
        .await;
        waited.unwrap_or_else(|_| panic!("{n} messages, got {:?}", self.messages()))
    }

    async fn wait_offset(&self, expected: i64) {
        let expected = expected.to_string();
        wait_for("the stored offset", || {
            self.offset().as_deref() == Some(&expected)
        })
        .await;
    }
}

impl InboundSink for MemorySink {
    fn accept<'a>(
        &'a self,
        channel: &'a str,
        batch: Vec<Inbound>,
        cursor: Option<Cursor>,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            {
                let mut state = self.state.lock().unwrap();
                state.accept_calls += 1;
                let fail = self
                    .fail_next_accepts
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok();
                if fail {
                    return Err(ChannelError::Internal("the disk is full".into()));
                }
                state.delivered += batch.len();
                for message in batch {
                    if state.seen.insert(message.external_id.clone()) {
                        state.messages.push(message);
                    }
                }
                if let Some(cursor) = cursor {
                    state
                        .cursors
                        .insert((channel.to_string(), cursor.key), cursor.value);
                }
            }
            self.changed.notify_waiters();
            Ok(())
        })
    }

    fn cursor<'a>(
        &'a self,
        channel: &'a str,
        key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ChannelError>> {
        Box::pin(async move {
            let state = self.state.lock().unwrap();
            Ok(state
                .cursors
                .get(&(channel.to_string(), key.to_string()))
                .cloned())
        })
    }

    fn save_cursor<'a>(
        &'a self,
        channel: &'a str,
        cursor: Cursor,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let mut state = self.state.lock().unwrap();
            state
                .cursors
                .insert((channel.to_string(), cursor.key), cursor.value);
            Ok(())
        })
    }
}

/// Wait for a condition on state the test cannot be notified about (the fake's counters).
async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn config(api_base: &str, token: &str) -> TelegramConfig {
    TelegramConfig {
        enabled: true,
        bot_token: Some(Secret::new(token)),
        api_base: api_base.to_string(),
        poll_timeout_secs: 1,
        ..TelegramConfig::default()
    }
}

fn channel(cfg: &TelegramConfig) -> Arc<TelegramChannel> {
    let channel = TelegramChannel::new(cfg).expect("a valid config");
    Arc::new(channel.with_retry_backoff(Duration::from_millis(20), Duration::from_millis(100)))
}

/// An adapter running in the background.
struct Running {
    channel: Arc<TelegramChannel>,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), ChannelError>>,
}

impl Running {
    fn start(channel: Arc<TelegramChannel>, sink: Arc<MemorySink>) -> Self {
        let shutdown = CancellationToken::new();
        let task = tokio::spawn({
            let (channel, shutdown) = (channel.clone(), shutdown.clone());
            async move { channel.run(sink, shutdown).await }
        });
        Self {
            channel,
            shutdown,
            task,
        }
    }

    async fn stop(self) -> Result<(), ChannelError> {
        self.shutdown.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task)
            .await
            .expect("run stops promptly on shutdown")
            .expect("run did not panic")
    }
}

fn outbound(chat_id: &str, text: &str) -> Outbound {
    Outbound {
        chat_id: chat_id.to_string(),
        text: text.to_string(),
        reply_to: None,
        thread: None,
    }
}

// ---------------------------------------------------------------------------------------------
// Polling.

#[tokio::test]
async fn polling_delivers_a_direct_message_and_stores_the_offset() {
    let fake = FakeTelegram::start(TOKEN).await;
    let update_id = fake.push_message(5, 5, "hello there");
    let sink = MemorySink::new();
    let running = Running::start(channel(&config(&fake.base_url(), TOKEN)), sink.clone());

    let messages = sink.wait_messages(1).await;
    let m = &messages[0];
    assert_eq!(m.channel, "telegram");
    assert_eq!((m.chat_id.as_str(), m.sender_id.as_str()), ("5", "5"));
    assert_eq!(m.sender_name.as_deref(), Some("user5"));
    assert_eq!(m.text, "hello there");
    assert!(!m.is_group && !m.mentioned);
    let message_id = m.reply_to.clone().expect("the message id to reply to");
    assert_eq!(m.external_id, format!("5:{message_id}"));
    assert_eq!(sink.offset(), Some((update_id + 1).to_string()));

    // The next poll confirms the batch to Telegram, which then forgets it.
    wait_for("the offset to be confirmed", || {
        fake.confirmed_offset() == update_id + 1
    })
    .await;
    assert_eq!(fake.pending_updates(), 0);
    let poll = fake.last_get_updates().expect("a getUpdates call");
    assert_eq!(poll["timeout"], json!(1));
    assert_eq!(poll["allowed_updates"], json!(["message"]));
    assert_eq!(running.channel.state(), ChannelState::Connected);

    let channel = running.channel.clone();
    assert_eq!(running.stop().await, Ok(()));
    assert_eq!(channel.state(), ChannelState::Stopped);
}

#[tokio::test]
async fn a_restart_resumes_at_the_stored_offset_without_repeats() {
    let fake = FakeTelegram::start(TOKEN).await;
    let cfg = config(&fake.base_url(), TOKEN);
    let sink = MemorySink::new();
    fake.push_message(5, 5, "one");
    fake.push_message(6, 6, "two");

    let first = Running::start(channel(&cfg), sink.clone());
    sink.wait_messages(2).await;
    first.stop().await.unwrap();

    // Written while the gateway was down.
    let third = fake.push_message(5, 5, "three");

    let second = Running::start(channel(&cfg), sink.clone());
    let messages = sink.wait_messages(3).await;
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    assert_eq!(texts, ["one", "two", "three"]);
    sink.wait_offset(third + 1).await;
    second.stop().await.unwrap();
    // Nothing was handed to the sink twice: the new instance started at the stored offset.
    assert_eq!(sink.delivered(), 3);
}

#[tokio::test]
async fn a_failed_store_fetches_the_same_updates_again() {
    let fake = FakeTelegram::start(TOKEN).await;
    let update_id = fake.push_message(5, 5, "do not lose me");
    let sink = MemorySink::new();
    sink.fail_next_accepts.store(1, Ordering::SeqCst);

    let running = Running::start(channel(&config(&fake.base_url(), TOKEN)), sink.clone());
    let messages = sink.wait_messages(1).await;
    assert_eq!(messages[0].text, "do not lose me");
    assert!(sink.accept_calls() >= 2, "the batch was offered again");
    assert_eq!(sink.offset(), Some((update_id + 1).to_string()));
    running.stop().await.unwrap();
}

#[tokio::test]
async fn updates_without_text_still_advance_the_offset() {
    let fake = FakeTelegram::start(TOKEN).await;
    let sticker = fake.push_update(json!({
        "message": {
            "message_id": 90, "date": 0,
            "from": {"id": 5, "is_bot": false, "first_name": "Ann"},
            "chat": {"id": 5, "type": "private"},
            "sticker": {"file_id": "abc", "width": 512, "height": 512},
        }
    }));
    let from_a_bot = fake.push_update(json!({
        "message": {
            "message_id": 91, "date": 0,
            "from": {"id": 77, "is_bot": true, "first_name": "OtherBot"},
            "chat": {"id": -100, "type": "supergroup"}, "text": "beep",
        }
    }));
    assert_eq!(from_a_bot, sticker + 1);
    let sink = MemorySink::new();
    let running = Running::start(channel(&config(&fake.base_url(), TOKEN)), sink.clone());
    sink.wait_offset(from_a_bot + 1).await;
    assert!(sink.messages().is_empty());
    wait_for("the offset to be confirmed", || fake.pending_updates() == 0).await;
    running.stop().await.unwrap();
}

#[tokio::test]
async fn group_messages_carry_whether_the_bot_was_mentioned() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.push_group_message(-100, 5, "just chatting among ourselves");
    fake.push_group_message(-100, 6, "@Moltbot_Test_Bot what's the weather?");
    fake.push_group_message(-100, 7, "/status@moltbot_test_bot");
    let sink = MemorySink::new();
    let running = Running::start(channel(&config(&fake.base_url(), TOKEN)), sink.clone());

    let messages = sink.wait_messages(3).await;
    assert!(messages.iter().all(|m| m.is_group && m.chat_id == "-100"));
    assert!(!messages[0].mentioned);
    assert_eq!(messages[0].text, "just chatting among ourselves");
    assert!(messages[1].mentioned);
    assert_eq!(messages[1].text, "what's the weather?");
    assert!(messages[2].mentioned);
    assert_eq!(messages[2].text, "/status");
    running.stop().await.unwrap();
}

#[tokio::test]
async fn a_webhook_conflict_is_reported_and_polling_recovers() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.set_webhook("https://example.com/hook", None);
    let sink = MemorySink::new();
    let running = Running::start(channel(&config(&fake.base_url(), TOKEN)), sink.clone());

    let channel = running.channel.clone();
    wait_for("the conflict to show in the state", || {
        matches!(channel.state(), ChannelState::Error { detail } if detail.contains("409") && detail.contains("webhook"))
    })
    .await;
    fake.delete_webhook();
    fake.push_message(5, 5, "back again");
    assert_eq!(sink.wait_messages(1).await[0].text, "back again");
    assert_eq!(channel.state(), ChannelState::Connected);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn get_updates_rate_limits_are_waited_out() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.fail_next("getUpdates", 1, 429, too_many_requests(1));
    fake.push_message(5, 5, "patience");
    let sink = MemorySink::new();
    let started = tokio::time::Instant::now();
    let running = Running::start(channel(&config(&fake.base_url(), TOKEN)), sink.clone());
    sink.wait_messages(1).await;
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retry_after was honoured"
    );
    running.stop().await.unwrap();
}

#[tokio::test]
async fn shutdown_interrupts_a_long_poll() {
    let fake = FakeTelegram::start(TOKEN).await;
    let mut cfg = config(&fake.base_url(), TOKEN);
    cfg.poll_timeout_secs = 50;
    let running = Running::start(channel(&cfg), MemorySink::new());
    wait_for("a long poll", || fake.get_updates_calls() >= 1).await;
    // `stop` allows two seconds; the poll would hold for fifty.
    assert_eq!(running.stop().await, Ok(()));
}

#[tokio::test]
async fn a_wrong_token_ends_run_with_unauthorized() {
    let fake = FakeTelegram::start(TOKEN).await;
    let wrong = "4242:not-the-right-one";
    let channel = channel(&config(&fake.base_url(), wrong));
    let result = tokio::time::timeout(
        WAIT,
        channel.run(MemorySink::new(), CancellationToken::new()),
    )
    .await
    .expect("run gives up on a bad token");
    let err = result.expect_err("a bad token is not recoverable");
    assert_eq!(err.kind(), "unauthorized");
    let ChannelState::Error { detail } = channel.state() else {
        panic!("state is {:?}", channel.state());
    };
    for text in [format!("{err}"), format!("{err:?}"), detail] {
        assert!(!text.contains(wrong), "the token leaked: {text}");
    }
}

// ---------------------------------------------------------------------------------------------
// Sending.

#[tokio::test]
async fn send_writes_markdown_v2_that_telegram_accepts() {
    let fake = FakeTelegram::start(TOKEN).await;
    let channel = channel(&config(&fake.base_url(), TOKEN));
    let text =
        "## Result\n**Total:** 1.5 + 2 = 3.5!\n- see [the docs](https://example.com/a_(b))\n\
                - run `cargo test -p x_y`\n```sh\necho \"a\\b\"\n```\n*unbalanced _markers ~~here";
    let mut msg = outbound("5", text);
    msg.reply_to = Some("17".into());

    let id = channel
        .send(&msg)
        .await
        .expect("Telegram accepts the conversion");
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(id, sent[0].message_id.to_string());
    assert_eq!(sent[0].parse_mode.as_deref(), Some("MarkdownV2"));
    assert_eq!(
        sent[0].rendered,
        "Result\nTotal: 1.5 + 2 = 3.5!\n• see the docs\n• run cargo test -p x_y\necho \"a\\b\"\n\
         \n*unbalanced _markers ~~here"
    );
    let link = sent[0].entities.iter().find(|e| e.kind == "text_link");
    assert_eq!(
        link.and_then(|e| e.url.as_deref()),
        Some("https://example.com/a_(b)")
    );
    assert_eq!(sent[0].reply_to, Some(17));
    assert_eq!(sent[0].chat_id, "5");
    assert_eq!(
        sent[0].params["link_preview_options"]["is_disabled"],
        json!(true)
    );
    assert_eq!(
        sent[0].params["reply_parameters"]["allow_sending_without_reply"],
        json!(true)
    );

    channel.typing("5").await.unwrap();
    let actions = fake.chat_actions();
    assert_eq!(actions.len(), 1);
    assert_eq!(
        (actions[0].chat_id.as_str(), actions[0].action.as_str()),
        ("5", "typing")
    );
}

#[tokio::test]
async fn refused_markup_is_sent_again_as_plain_text() {
    let fake = FakeTelegram::start(TOKEN).await;
    fake.reject_markdown(true);
    let channel = channel(&config(&fake.base_url(), TOKEN));
    let text = "**Heads up:** it's 3.5 degrees!";

    channel
        .send(&outbound("5", text))
        .await
        .expect("the plain-text fallback is delivered");
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].parse_mode, None);
    assert_eq!(sent[0].text, text, "the original text, not the escaped one");
    assert_eq!(fake.calls("sendMessage"), 2);
}

#[tokio::test]
async fn send_failures_map_to_channel_errors() {
    let fake = FakeTelegram::start(TOKEN).await;
    let channel = channel(&config(&fake.base_url(), TOKEN));
    let msg = outbound("5", "hi");

    fake.rate_limit_next_sends(1, 7);
    assert_eq!(
        channel.send(&msg).await,
        Err(ChannelError::RateLimited {
            retry_after: Duration::from_secs(7)
        })
    );

    let blocked = json!({"ok": false, "error_code": 403, "description": "Forbidden: bot was blocked by the user"});
    fake.fail_next_sends(1, 403, blocked);
    let err = channel.send(&msg).await.unwrap_err();
    assert_eq!(err.kind(), "rejected");
    assert!(err.to_string().contains("blocked by the user"), "{err}");

    let missing =
        json!({"ok": false, "error_code": 400, "description": "Bad Request: chat not found"});
    fake.fail_next_sends(1, 400, missing);
    let calls = fake.calls("sendMessage");
    assert_eq!(channel.send(&msg).await.unwrap_err().kind(), "rejected");
    assert_eq!(
        fake.calls("sendMessage"),
        calls + 1,
        "no plain-text retry for other 400s"
    );

    let down = json!({"ok": false, "error_code": 502, "description": "Bad Gateway"});
    fake.fail_next_sends(1, 502, down);
    assert_eq!(channel.send(&msg).await.unwrap_err().kind(), "transient");

    let too_long = "x".repeat(4097);
    assert_eq!(
        channel
            .send(&outbound("5", &too_long))
            .await
            .unwrap_err()
            .kind(),
        "rejected"
    );

    assert!(channel.send(&msg).await.is_ok(), "failures were one-offs");
}

#[tokio::test]
async fn the_token_never_appears_in_errors() {
    // Connection refused: a port that was just free.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let closed = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let offline = channel(&config(&closed, TOKEN));
    let mut errors = vec![
        offline.send(&outbound("5", "hi")).await.unwrap_err(),
        offline.typing("5").await.unwrap_err(),
    ];
    assert_eq!(errors[0].kind(), "transient");

    // The state while run retries against the closed port.
    let running = Running::start(offline.clone(), MemorySink::new());
    wait_for("an error state", || {
        matches!(offline.state(), ChannelState::Error { .. })
    })
    .await;
    let state = format!("{:?}", offline.state());
    running.stop().await.unwrap();

    // Refused credentials.
    let fake = FakeTelegram::start("1:other").await;
    let refused = channel(&config(&fake.base_url(), TOKEN));
    errors.push(refused.send(&outbound("5", "hi")).await.unwrap_err());
    assert_eq!(errors[2].kind(), "unauthorized");

    let mut texts: Vec<String> = errors
        .iter()
        .flat_map(|e| [e.to_string(), format!("{e:?}")])
        .collect();
    texts.push(state);
    for text in texts {
        assert!(!text.contains(TOKEN), "the token leaked: {text}");
        assert!(
            !text.contains("AAE-fake"),
            "part of the token leaked: {text}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Webhook mode.

struct Webhook {
    url: String,
    channel: Arc<TelegramChannel>,
    sink: Arc<MemorySink>,
    server: JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn webhook(fake: &FakeTelegram) -> Webhook {
    let mut cfg = config(&fake.base_url(), TOKEN);
    cfg.mode = TelegramMode::Webhook;
    cfg.webhook_secret = Some(Secret::new("hook-secret"));
    let channel = channel(&cfg);
    let sink = MemorySink::new();
    let app = channel.webhook_router(sink.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{WEBHOOK_PATH}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Webhook {
        url,
        channel,
        sink,
        server,
    }
}

async fn error_kind(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.expect("a JSON error body");
    (
        status,
        body["error"]["kind"].as_str().unwrap_or("").to_string(),
    )
}

#[tokio::test]
async fn webhook_deliveries_need_the_secret() {
    let fake = FakeTelegram::start(TOKEN).await;
    let hook = webhook(&fake).await;
    let running = Running::start(hook.channel.clone(), hook.sink.clone());
    let channel = hook.channel.clone();
    wait_for("getMe", || channel.state() == ChannelState::Connected).await;

    let update = fake.private_message_update(5, 5, "via webhook");
    let missing = fake.post_webhook(&hook.url, None, update.clone()).await;
    assert_eq!(error_kind(missing).await, (401, "unauthorized".to_string()));
    let wrong = fake
        .post_webhook(&hook.url, Some("hook-secreT"), update.clone())
        .await;
    assert_eq!(error_kind(wrong).await, (401, "unauthorized".to_string()));
    assert!(hook.sink.messages().is_empty());

    let good = fake
        .post_webhook(&hook.url, Some("hook-secret"), update.clone())
        .await;
    assert_eq!(good.status(), 200);
    let messages = hook.sink.messages();
    assert_eq!(messages.len(), 1, "stored before the 200");
    assert_eq!(messages[0].text, "via webhook");

    // A redelivery is answered 200 and stored once.
    let again = fake
        .post_webhook(&hook.url, Some("hook-secret"), update)
        .await;
    assert_eq!(again.status(), 200);
    assert_eq!(hook.sink.messages().len(), 1);
    // Polling is off in webhook mode.
    assert_eq!(fake.get_updates_calls(), 0);
    running.stop().await.unwrap();
}

#[tokio::test]
async fn webhook_answers_500_when_the_store_fails_and_400_for_garbage() {
    let fake = FakeTelegram::start(TOKEN).await;
    let hook = webhook(&fake).await;
    let secret = Some("hook-secret");

    // No `run` here: the route identifies the bot on its own.
    hook.sink.fail_next_accepts.store(1, Ordering::SeqCst);
    let update = fake.group_message_update(-100, 5, "@moltbot_test_bot hi");
    let failed = fake.post_webhook(&hook.url, secret, update.clone()).await;
    assert_eq!(error_kind(failed).await, (500, "internal".to_string()));
    // Telegram delivers again, and this time it is stored.
    let retried = fake.post_webhook(&hook.url, secret, update).await;
    assert_eq!(retried.status(), 200);
    let messages = hook.sink.messages();
    assert!(messages[0].mentioned && messages[0].is_group);
    assert_eq!(messages[0].text, "hi");

    let garbage = reqwest::Client::new()
        .post(&hook.url)
        .header(SECRET_HEADER, "hook-secret")
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(
        error_kind(garbage).await,
        (400, "invalid_request".to_string())
    );

    let huge = json!({"update_id": 1, "padding": "x".repeat(1024 * 1024)});
    let too_big = fake.post_webhook(&hook.url, secret, huge).await;
    assert_eq!(too_big.status(), 413);
}
