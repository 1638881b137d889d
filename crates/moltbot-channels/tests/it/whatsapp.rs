//! The WhatsApp adapter against the fake Cloud API, with its webhook router served on a real
//! loopback socket and the fake acting as Meta.

use futures::future::BoxFuture;
use moltbot_channels::whatsapp::{WhatsAppChannel, WEBHOOK_PATH};
use moltbot_core::channel::Cursor;
use moltbot_core::config::WhatsAppConfig;
use moltbot_core::{Channel, ChannelError, ChannelState, Inbound, InboundSink, Outbound, Secret};
use moltbot_fakes::whatsapp::{signature, FakeWhatsApp};
use serde_json::Value;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "EAAGfakeAccessToken0123456789";
const APP_SECRET: &str = "fake-app-secret-4f1c2e";
const VERIFY_TOKEN: &str = "fake-verify-token-9b7d";
const PHONE_NUMBER_ID: &str = "106540352242922";
const USER: &str = "16315551234";
const WAIT: Duration = Duration::from_secs(5);

/// An in-memory [`InboundSink`] de-duplicating by `external_id`, like the hub's inbox; it can
/// be told to fail the next `accept`. Shared with the Slack tests.
#[derive(Default)]
pub(crate) struct MemorySink {
    // A std mutex: held only to read or push, never across an `.await`.
    state: Mutex<SinkState>,
}

#[derive(Default)]
struct SinkState {
    messages: Vec<Inbound>,
    fail_next: bool,
}

impl MemorySink {
    pub(crate) fn messages(&self) -> Vec<Inbound> {
        self.lock().messages.clone()
    }

    pub(crate) fn fail_next(&self) {
        self.lock().fail_next = true;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SinkState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl InboundSink for MemorySink {
    fn accept<'a>(
        &'a self,
        _channel: &'a str,
        batch: Vec<Inbound>,
        _cursor: Option<Cursor>,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async move {
            let mut state = self.lock();
            if std::mem::take(&mut state.fail_next) {
                return Err(ChannelError::Internal("the disk is full".into()));
            }
            for m in batch {
                if !state
                    .messages
                    .iter()
                    .any(|s| s.external_id == m.external_id)
                {
                    state.messages.push(m);
                }
            }
            Ok(())
        })
    }

    fn cursor<'a>(
        &'a self,
        _channel: &'a str,
        _key: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, ChannelError>> {
        Box::pin(async { Ok(None) })
    }

    fn save_cursor<'a>(
        &'a self,
        _channel: &'a str,
        _cursor: Cursor,
    ) -> BoxFuture<'a, Result<(), ChannelError>> {
        Box::pin(async { Ok(()) })
    }
}

/// A router served on `127.0.0.1:0`; stops when dropped.
pub(crate) struct Served {
    pub(crate) base: String,
    task: JoinHandle<()>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn serve(router: axum::Router) -> Served {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("bound address");
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Served {
        base: format!("http://{addr}"),
        task,
    }
}

struct Ctx {
    fake: FakeWhatsApp,
    channel: Arc<WhatsAppChannel>,
    sink: Arc<MemorySink>,
    url: String,
    _served: Served,
}

fn config(api_base: String, token: &str) -> WhatsAppConfig {
    WhatsAppConfig {
        enabled: true,
        access_token: Some(Secret::new(token)),
        phone_number_id: PHONE_NUMBER_ID.into(),
        verify_token: Some(Secret::new(VERIFY_TOKEN)),
        app_secret: Some(Secret::new(APP_SECRET)),
        api_base,
        ..WhatsAppConfig::default()
    }
}

async fn ctx() -> Ctx {
    ctx_with_token(TOKEN).await
}

async fn ctx_with_token(token: &str) -> Ctx {
    let fake = FakeWhatsApp::start(TOKEN, PHONE_NUMBER_ID).await;
    let channel = Arc::new(WhatsAppChannel::new(&config(fake.base_url(), token)).expect("channel"));
    let sink = Arc::new(MemorySink::default());
    let served = serve(channel.webhook_router(sink.clone())).await;
    let url = format!("{}{WEBHOOK_PATH}", served.base);
    Ctx {
        fake,
        channel,
        sink,
        url,
        _served: served,
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    response.json().await.expect("a JSON body")
}

fn no_secret_in(text: &str) {
    for secret in [TOKEN, APP_SECRET, VERIFY_TOKEN] {
        assert!(!text.contains(secret), "a secret leaked into {text:?}");
    }
}

fn outbound(text: &str, reply_to: Option<&str>) -> Outbound {
    Outbound {
        chat_id: USER.into(),
        text: text.into(),
        reply_to: reply_to.map(str::to_string),
        thread: None,
    }
}

#[tokio::test]
async fn capabilities_and_kind() {
    let c = ctx().await;
    assert_eq!(c.channel.kind(), "whatsapp");
    let caps = c.channel.capabilities();
    assert_eq!(caps.max_message_chars, 4096);
    assert!(caps.typing && caps.media);
}

#[tokio::test]
async fn subscription_check_echoes_the_challenge_only_for_our_token() {
    let c = ctx().await;
    let http = reqwest::Client::new();
    let get = |query: &[(&str, &str)]| http.get(&c.url).query(query).send();

    let ok = get(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", VERIFY_TOKEN),
        ("hub.challenge", "1158201444"),
    ])
    .await
    .expect("request");
    assert_eq!(ok.status(), 200);
    let content_type = ok.headers()["content-type"]
        .to_str()
        .expect("ascii")
        .to_string();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    assert_eq!(ok.text().await.expect("body"), "1158201444");

    let wrong = get(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", "guess"),
        ("hub.challenge", "1158201444"),
    ])
    .await
    .expect("request");
    assert_eq!(wrong.status(), 403);
    let body = json_of(wrong).await;
    assert_eq!(body["error"]["kind"], "forbidden");
    no_secret_in(&body.to_string());

    let missing = get(&[
        ("hub.mode", "subscribe"),
        ("hub.verify_token", VERIFY_TOKEN),
    ])
    .await
    .expect("request");
    assert_eq!(missing.status(), 400);
    let body = json_of(missing).await;
    assert_eq!(body["error"]["kind"], "invalid_request");
    assert!(body["error"]["message"]
        .as_str()
        .expect("message")
        .contains("hub.challenge"));

    let no_mode = get(&[]).await.expect("request");
    assert_eq!(no_mode.status(), 400);
    assert!(json_of(no_mode).await.to_string().contains("hub.mode"));

    let bad_mode = get(&[
        ("hub.mode", "unsubscribe"),
        ("hub.verify_token", VERIFY_TOKEN),
        ("hub.challenge", "1"),
    ])
    .await
    .expect("request");
    assert_eq!(bad_mode.status(), 400);
}

#[tokio::test]
async fn unsigned_or_forged_posts_are_refused() {
    let c = ctx().await;
    let (_, payload) = c.fake.text_payload(USER, "Ana", "hello", None);
    let body = payload.to_string();

    let forged = c
        .fake
        .deliver_raw(
            &c.url,
            body.clone(),
            Some(signature("not-the-secret", body.as_bytes())),
        )
        .await;
    assert_eq!(forged.status(), 401);
    let json = json_of(forged).await;
    assert_eq!(json["error"]["kind"], "unauthorized");
    no_secret_in(&json.to_string());

    let missing = c.fake.deliver_raw(&c.url, body.clone(), None).await;
    assert_eq!(missing.status(), 401);
    assert_eq!(json_of(missing).await["error"]["kind"], "unauthorized");

    let garbage = c
        .fake
        .deliver_raw(&c.url, body.clone(), Some("sha256=zz".into()))
        .await;
    assert_eq!(garbage.status(), 401);

    // A right signature over a different body.
    let other = c
        .fake
        .deliver_raw(
            &c.url,
            format!("{body} "),
            Some(signature(APP_SECRET, body.as_bytes())),
        )
        .await;
    assert_eq!(other.status(), 401);

    assert!(c.sink.messages().is_empty());
}

#[tokio::test]
async fn a_signed_text_message_is_stored_once_even_when_redelivered() {
    let c = ctx().await;
    let (id, response) = c
        .fake
        .deliver_text(&c.url, APP_SECRET, USER, "Ana Souza", "hi there")
        .await;
    assert_eq!(response.status(), 200);
    assert!(id.starts_with("wamid."));
    let stored = c.sink.messages();
    assert_eq!(
        stored,
        vec![Inbound {
            channel: "whatsapp".into(),
            external_id: id.clone(),
            chat_id: USER.into(),
            sender_id: USER.into(),
            sender_name: Some("Ana Souza".into()),
            text: "hi there".into(),
            is_group: false,
            mentioned: true,
            reply_to: Some(id.clone()),
            thread: None,
        }]
    );

    let again = c.fake.redeliver(&c.url, APP_SECRET).await;
    assert_eq!(again.status(), 200);
    assert_eq!(c.sink.messages().len(), 1);
}

#[tokio::test]
async fn statuses_other_numbers_and_non_text_messages_are_acknowledged_and_ignored() {
    let c = ctx().await;
    for status in ["sent", "delivered", "read", "failed"] {
        let r = c
            .fake
            .deliver_status(&c.url, APP_SECRET, "wamid.X", USER, status)
            .await;
        assert_eq!(r.status(), 200, "{status}");
    }

    let (_, mut image) = c.fake.text_payload(USER, "Ana", "", None);
    let message = &mut image["entry"][0]["changes"][0]["value"]["messages"][0];
    message["type"] = "image".into();
    message["image"] = serde_json::json!({"id": "1479537139650973", "mime_type": "image/jpeg"});
    if let Some(m) = message.as_object_mut() {
        m.remove("text");
    }
    let r = c.fake.deliver_payload(&c.url, APP_SECRET, &image).await;
    assert_eq!(r.status(), 200);

    let (_, mut elsewhere) = c.fake.text_payload(USER, "Ana", "for another number", None);
    elsewhere["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999".into();
    let r = c.fake.deliver_payload(&c.url, APP_SECRET, &elsewhere).await;
    assert_eq!(r.status(), 200);

    assert!(c.sink.messages().is_empty());
}

#[tokio::test]
async fn a_sink_failure_answers_500_so_meta_delivers_again() {
    let c = ctx().await;
    c.sink.fail_next();
    let (_, r) = c
        .fake
        .deliver_text(&c.url, APP_SECRET, USER, "Ana", "hi")
        .await;
    assert_eq!(r.status(), 500);
    let body = json_of(r).await;
    assert_eq!(body["error"]["kind"], "internal");
    assert!(
        !body.to_string().contains("disk"),
        "the cause stays in the log: {body}"
    );
    assert!(c.sink.messages().is_empty());

    let again = c.fake.redeliver(&c.url, APP_SECRET).await;
    assert_eq!(again.status(), 200);
    assert_eq!(c.sink.messages().len(), 1);
}

#[tokio::test]
async fn bad_json_and_huge_bodies_are_refused() {
    let c = ctx().await;
    let body = "{not json";
    let r = c
        .fake
        .deliver_raw(&c.url, body, Some(signature(APP_SECRET, body.as_bytes())))
        .await;
    assert_eq!(r.status(), 400);

    let huge = vec![b' '; 1024 * 1024 + 1];
    let r = c
        .fake
        .deliver_raw(&c.url, huge, Some("sha256=00".into()))
        .await;
    assert_eq!(r.status(), 413);
    assert_eq!(json_of(r).await["error"]["kind"], "payload_too_large");
}

#[tokio::test]
async fn send_posts_text_with_the_reply_context() {
    let c = ctx().await;
    let id = c
        .channel
        .send(&outbound("*bold* answer", Some("wamid.IN1")))
        .await
        .expect("sent");
    let plain = c
        .channel
        .send(&outbound("second", None))
        .await
        .expect("sent");
    let sent = c.fake.wait_sent(2, WAIT).await;
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0].id, id);
    assert_eq!(sent[0].to, USER);
    assert_eq!(sent[0].body, "*bold* answer");
    assert_eq!(sent[0].context_message_id.as_deref(), Some("wamid.IN1"));
    assert!(!sent[0].preview_url);
    assert_eq!(sent[1].id, plain);
    assert_eq!(sent[1].context_message_id, None);
}

#[tokio::test]
async fn send_failures_map_to_error_kinds_without_secrets() {
    let c = ctx().await;
    let msg = outbound("hi", None);

    c.fake.rate_limit_next_sends(1);
    let err = c.channel.send(&msg).await.expect_err("rate limited");
    assert_eq!(
        err,
        ChannelError::RateLimited {
            retry_after: Duration::from_secs(2)
        }
    );

    // Rate-limit codes count even under a plain 400.
    c.fake.fail_next_sends(1, 400, 131_056);
    assert_eq!(
        c.channel.send(&msg).await.expect_err("pair limit").kind(),
        "rate_limited"
    );

    c.fake.fail_next_sends(1, 500, 131_000);
    let transient = c.channel.send(&msg).await.expect_err("5xx");
    assert_eq!(transient.kind(), "transient");

    c.fake.fail_next_sends(1, 400, 131_026);
    let rejected = c.channel.send(&msg).await.expect_err("undeliverable");
    assert_eq!(rejected.kind(), "rejected");

    let too_long = c
        .channel
        .send(&outbound(&"x".repeat(4097), None))
        .await
        .expect_err("too long");
    assert_eq!(too_long.kind(), "rejected");
    assert!(too_long.to_string().contains("4096"), "{too_long}");

    let wrong = ctx_with_token("EAAGrevokedToken").await;
    let unauthorized = wrong.channel.send(&msg).await.expect_err("bad token");
    assert_eq!(unauthorized.kind(), "unauthorized");
    assert!(unauthorized.to_string().contains("190"), "{unauthorized}");

    for e in [err, transient, rejected, too_long, unauthorized] {
        no_secret_in(&e.to_string());
        no_secret_in(&format!("{e:?}"));
    }
    assert!(!wrong
        .channel
        .send(&msg)
        .await
        .expect_err("x")
        .to_string()
        .contains("EAAGrevokedToken"));
}

#[tokio::test]
async fn typing_marks_the_last_message_read_once_per_refresh() {
    let c = ctx().await;
    c.channel
        .typing(USER)
        .await
        .expect("nothing to attach to is fine");
    assert!(c.fake.typing_indicators().is_empty());

    let (id, r) = c
        .fake
        .deliver_text(&c.url, APP_SECRET, USER, "Ana", "hi")
        .await;
    assert_eq!(r.status(), 200);
    c.channel.typing(USER).await.expect("typing");
    c.channel
        .typing(USER)
        .await
        .expect("repeated within the refresh");
    assert_eq!(c.fake.typing_indicators(), vec![id]);
}

#[tokio::test]
async fn run_checks_the_token_and_reports_connected_until_shutdown() {
    let c = ctx().await;
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
    assert_eq!(c.fake.token_checks(), 1);
    shutdown.cancel();
    let ended = tokio::time::timeout(WAIT, running)
        .await
        .expect("stops in time");
    assert_eq!(ended.expect("no panic"), Ok(()));
    assert_eq!(c.channel.state(), ChannelState::Stopped);
}

#[tokio::test]
async fn run_gives_up_on_a_refused_token() {
    let c = ctx_with_token("EAAGrevokedToken").await;
    let sink: Arc<dyn InboundSink> = c.sink.clone();
    let ended = tokio::time::timeout(WAIT, c.channel.run(sink, CancellationToken::new()))
        .await
        .expect("ends in time");
    let err = ended.expect_err("unauthorized");
    assert_eq!(err.kind(), "unauthorized");
    match c.channel.state() {
        ChannelState::Error { detail } => {
            assert!(!detail.contains("EAAGrevokedToken"), "{detail}");
        }
        other => panic!("expected an error state, got {other:?}"),
    }
}

#[test]
fn missing_credentials_are_refused_at_construction() {
    let mut cfg = config("http://127.0.0.1:9".into(), TOKEN);
    cfg.app_secret = None;
    let err = WhatsAppChannel::new(&cfg).err().expect("no app secret");
    assert!(err.to_string().contains("app_secret"), "{err}");
}
