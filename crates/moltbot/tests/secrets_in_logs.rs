//! No configured secret ever reaches the logs. The real gateway runs at its most verbose
//! (`--verbose`, `RUST_LOG=debug`) with every kind of secret set: the gateway and admin
//! tokens, both model providers' API keys, the Telegram bot token (it sits in every Bot API
//! URL path), the WhatsApp access token, verify token and app secret, and the database
//! password when a PostgreSQL is available. The test then walks through the paths that
//! are most likely to print them: failed and successful auth over HTTP and WebSocket, a model
//! that fails (so the gateway fails over and logs the error), Telegram sends that fail and
//! are retried, the WhatsApp subscription check (the verify token comes in the query string)
//! and signed and forged webhook deliveries. Every secret, and the wrong tokens clients
//! presented, are then looked for in the gateway's log and in `moltbot doctor`'s output.

use futures::{SinkExt, StreamExt};
use moltbot_fakes::telegram::FakeTelegram;
use moltbot_fakes::whatsapp::FakeWhatsApp;
use moltbot_fakes::{FakeAnthropic, FakeOpenAi};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

const GATEWAY_TOKEN: &str = "gw-SECRET-7f3a1c0d";
const ADMIN_TOKEN: &str = "adm-SECRET-91b27e44";
const OPENAI_KEY: &str = "sk-SECRET-openai-55d1e0";
const ANTHROPIC_KEY: &str = "sk-ant-SECRET-0c9a77";
const BOT_TOKEN: &str = "777001:SECRET-telegram-aa12bb";
const WA_ACCESS: &str = "EAAG-SECRET-whatsapp-3e8f";
const WA_VERIFY: &str = "verify-SECRET-6b1d";
const WA_APP_SECRET: &str = "app-SECRET-whatsapp-d40c";
const DB_PASSWORD: &str = "pg-SECRET-pass-1a2b";
/// Wrong credentials clients present: a server must not echo those either.
const PRESENTED: &str = "presented-SECRET-wrong-5e5e";

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Peers {
    openai: FakeOpenAi,
    anthropic: FakeAnthropic,
    telegram: FakeTelegram,
    whatsapp: FakeWhatsApp,
}

/// The gateway's environment: every secret set, everything else pointed at the fakes.
fn env(home: &Path, port: u16, p: &Peers, database_url: Option<&str>) -> Vec<(String, String)> {
    let mut env: Vec<(&str, String)> = vec![
        ("HOME", home.display().to_string()),
        ("PATH", std::env::var("PATH").unwrap_or_default()),
        ("RUST_LOG", "debug".into()),
        ("MOLTBOT_DATA__DIR", home.join("data").display().to_string()),
        ("MOLTBOT_GATEWAY__PORT", port.to_string()),
        ("MOLTBOT_GATEWAY_TOKEN", GATEWAY_TOKEN.into()),
        ("MOLTBOT_GATEWAY__ADMIN_TOKEN", ADMIN_TOKEN.into()),
        ("MOLTBOT_UNDERSTANDING__ENCODER", "none".into()),
        ("MOLTBOT_ROUTER__ENABLED", "false".into()),
        ("MOLTBOT_KNOWLEDGE__ENABLED", "false".into()),
        ("MOLTBOT_TOOLS__MEMORY__ENABLED", "false".into()),
        ("MOLTBOT_TOOLS__AGENT__ENABLED", "false".into()),
        (
            "MOLTBOT_MODEL__PROVIDERS",
            "[\"openai\", \"anthropic\"]".into(),
        ),
        ("MOLTBOT_MODEL__OPENAI__BASE_URL", p.openai.base_url()),
        ("MOLTBOT_MODEL__OPENAI__API_KEY", OPENAI_KEY.into()),
        ("MOLTBOT_MODEL__OPENAI__MAX_RETRIES", "0".into()),
        ("MOLTBOT_MODEL__ANTHROPIC__BASE_URL", p.anthropic.base_url()),
        ("MOLTBOT_MODEL__ANTHROPIC__API_KEY", ANTHROPIC_KEY.into()),
        ("MOLTBOT_CHANNELS__TELEGRAM__ENABLED", "true".into()),
        ("MOLTBOT_CHANNELS__TELEGRAM__BOT_TOKEN", BOT_TOKEN.into()),
        (
            "MOLTBOT_CHANNELS__TELEGRAM__API_BASE",
            p.telegram.base_url(),
        ),
        ("MOLTBOT_CHANNELS__TELEGRAM__POLL_TIMEOUT_SECS", "1".into()),
        ("MOLTBOT_CHANNELS__TELEGRAM__ALLOW_FROM", "[\"42\"]".into()),
        ("MOLTBOT_CHANNELS__WHATSAPP__ENABLED", "true".into()),
        ("MOLTBOT_CHANNELS__WHATSAPP__ACCESS_TOKEN", WA_ACCESS.into()),
        ("MOLTBOT_CHANNELS__WHATSAPP__VERIFY_TOKEN", WA_VERIFY.into()),
        (
            "MOLTBOT_CHANNELS__WHATSAPP__APP_SECRET",
            WA_APP_SECRET.into(),
        ),
        (
            "MOLTBOT_CHANNELS__WHATSAPP__PHONE_NUMBER_ID",
            p.whatsapp.phone_number_id().into(),
        ),
        (
            "MOLTBOT_CHANNELS__WHATSAPP__API_BASE",
            p.whatsapp.base_url(),
        ),
        (
            "MOLTBOT_CHANNELS__WHATSAPP__ALLOW_FROM",
            "[\"4915550001\"]".into(),
        ),
    ];
    if let Some(url) = database_url {
        env.push(("MOLTBOT_DATA__DATABASE_URL", url.into()));
        env.push((
            "MOLTBOT_DATA__DATABASE_SCHEMA",
            format!("t_{}", uuid::Uuid::new_v4().simple()),
        ));
    }
    env.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn command(env: &[(String, String)]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moltbot"));
    c.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    c
}

/// `postgres://user:DB_PASSWORD@host/db` from the test PostgreSQL, when there is one (its
/// trust authentication accepts any password, so the secret can be a made-up one).
fn database_url() -> Option<String> {
    let url = std::env::var("MOLTBOT_TEST_POSTGRES").ok()?;
    let rest = url.strip_prefix("postgres://")?;
    let (user_part, host_part) = rest.split_once('@')?;
    let user = user_part.split(':').next()?;
    Some(format!("postgres://{user}:{DB_PASSWORD}@{host_part}"))
}

async fn ws_connect(port: u16, token: &str) -> (bool, Option<Ws>) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}"))
        .await
        .unwrap();
    ws.next().await.unwrap().unwrap(); // challenge
    let connect = json!({"type": "req", "id": "c", "method": "connect", "params": {
        "minProtocol": 3, "maxProtocol": 4,
        "client": {"id": "cli", "version": "1", "platform": "linux", "mode": "cli"},
        "auth": {"token": token}}});
    ws.send(Message::text(connect.to_string())).await.unwrap();
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "res" && v["id"] == "c" {
                let ok = v["ok"] == true;
                return (ok, ok.then_some(ws));
            }
        }
    }
    (false, None)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_configured_secret_reaches_the_logs() {
    let peers = Peers {
        // The first two model calls fail, so the gateway logs the failure and fails over.
        openai: FakeOpenAi::builder()
            .fail_first(2, 500)
            .require_api_key(OPENAI_KEY)
            .reply("from openai")
            .start()
            .await,
        anthropic: FakeAnthropic::builder()
            .require_api_key(ANTHROPIC_KEY)
            .reply("from anthropic")
            .start()
            .await,
        telegram: FakeTelegram::start(BOT_TOKEN).await,
        whatsapp: FakeWhatsApp::start(WA_ACCESS, "105550001").await,
    };
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let db = database_url();
    let env = env(home.path(), port, &peers, db.as_deref());
    let log_path = home.path().join("gateway.log");
    let gw = Gateway(
        command(&env)
            .args(["gateway", "--verbose"])
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(home.path().join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut up = false;
    for _ in 0..600 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status().is_success() {
                up = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        up,
        "gateway not ready: {}",
        std::fs::read_to_string(&log_path).unwrap_or_default()
    );

    // HTTP: wrong tokens (a presented one, the admin token on the chat API), then good turns
    // (the first two fail over to Anthropic), then the admin API with a wrong and a right token.
    let chat = |token: &str, msg: &str| {
        http.post(format!("{base}/api/v1/chat"))
            .bearer_auth(token)
            .json(&json!({"session_id": "s", "message": msg}))
            .send()
    };
    assert_eq!(chat(PRESENTED, "x").await.unwrap().status(), 401);
    assert_eq!(chat(ADMIN_TOKEN, "x").await.unwrap().status(), 401);
    for i in 0..3 {
        let r = chat(GATEWAY_TOKEN, &format!("hello {i}")).await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    }
    let admin = |token: &str| {
        http.get(format!("{base}/admin/models"))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(admin(GATEWAY_TOKEN).await.unwrap().status(), 401);
    assert!(admin(ADMIN_TOKEN).await.unwrap().status().as_u16() != 401);

    // WebSocket: a refused connect, then a good one with a turn.
    assert!(!ws_connect(port, PRESENTED).await.0);
    let (ok, ws) = ws_connect(port, GATEWAY_TOKEN).await;
    assert!(ok);
    let mut ws = ws.unwrap();
    let send = json!({"type": "req", "id": "1", "method": "chat.send", "params": {
        "sessionKey": "ws", "message": "hi", "idempotencyKey": "k1"}});
    ws.send(Message::text(send.to_string())).await.unwrap();
    let mut finished = false;
    while let Some(Ok(msg)) = ws.next().await {
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(&t).unwrap();
            if v["event"] == "chat" && v["payload"]["state"] == "final" {
                finished = true;
                break;
            }
        }
    }
    assert!(finished, "the WebSocket turn did not finish");

    // Telegram: the first two sends fail (the bot token is in the URL of each call), then go.
    peers.telegram.fail_next_sends(
        2,
        500,
        json!({"ok": false, "error_code": 500, "description": "boom"}),
    );
    peers.telegram.push_message(42, 42, "hello from telegram");
    let sent = peers.telegram.wait_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent.len(), 1, "no Telegram reply");

    // WhatsApp: the subscription check with the right and a wrong verify token, a forged and
    // a signed delivery, and a reply whose first send fails.
    let hook = format!("{base}{}", moltbot_channels::whatsapp::WEBHOOK_PATH);
    let verify = |token: &str| {
        http.get(format!(
            "{hook}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=12345"
        ))
        .send()
    };
    assert_eq!(verify(WA_VERIFY).await.unwrap().status(), 200);
    assert_eq!(verify(PRESENTED).await.unwrap().status(), 403);
    let forged = peers
        .whatsapp
        .deliver_text(&hook, PRESENTED, "4915550001", "Ann", "forged")
        .await
        .1;
    assert!(matches!(forged.status().as_u16(), 401 | 403));
    peers.whatsapp.fail_next_sends(1, 500, 1);
    let (_, r) = peers
        .whatsapp
        .deliver_text(
            &hook,
            WA_APP_SECRET,
            "4915550001",
            "Ann",
            "hello from whatsapp",
        )
        .await;
    assert_eq!(r.status(), 200);
    let sent = peers.whatsapp.wait_sent(1, Duration::from_secs(30)).await;
    assert_eq!(sent.len(), 1, "no WhatsApp reply");

    // `doctor` prints the configuration and checks every provider and channel.
    let doctor = command(&env).arg("doctor").output().unwrap();
    drop(gw);

    let log = std::fs::read_to_string(&log_path).unwrap();
    let doctor_out = format!(
        "{}{}",
        String::from_utf8_lossy(&doctor.stdout),
        String::from_utf8_lossy(&doctor.stderr)
    );
    // The log was written at debug level and saw the traffic above, so an empty grep means
    // something (a log that says nothing would pass any grep).
    assert!(
        log.lines().count() > 20 && log.contains("DEBUG"),
        "the gateway log is too thin to prove anything:\n{log}"
    );
    assert!(
        log.contains("telegram") && log.contains("whatsapp"),
        "{log}"
    );
    eprintln!(
        "gateway log: {} lines ({} warnings); doctor: {} lines",
        log.lines().count(),
        log.lines().filter(|l| l.contains("WARN")).count(),
        doctor_out.lines().count()
    );
    let mut secrets = vec![
        ("gateway token", GATEWAY_TOKEN),
        ("admin token", ADMIN_TOKEN),
        ("OpenAI key", OPENAI_KEY),
        ("Anthropic key", ANTHROPIC_KEY),
        ("Telegram bot token", BOT_TOKEN),
        // The part after the bot id, in case a URL is logged cut or encoded.
        ("Telegram token secret part", &BOT_TOKEN[7..]),
        ("WhatsApp access token", WA_ACCESS),
        ("WhatsApp verify token", WA_VERIFY),
        ("WhatsApp app secret", WA_APP_SECRET),
        ("presented wrong token", PRESENTED),
    ];
    if db.is_some() {
        secrets.push(("database password", DB_PASSWORD));
    }
    for (what, secret) in &secrets {
        for (name, text) in [("gateway log", &log), ("doctor output", &doctor_out)] {
            if let Some(at) = text.find(secret) {
                let line = text[..at].rsplit('\n').next().unwrap_or("");
                let end = text[at..].find('\n').map_or(text.len(), |e| at + e);
                panic!("the {what} is in the {name}: {line}{}", &text[at..end]);
            }
        }
    }
    // The paths above really ran: the failures were logged, and the fail-over answered.
    assert!(
        peers.openai.requests() >= 2,
        "the OpenAI fake saw {} requests",
        peers.openai.requests()
    );
    assert!(peers.anthropic.requests() >= 1, "no fail-over to Anthropic");
}
