//! The single-node default (SQLite, no bus) killed with SIGKILL in the middle of answering
//! a Telegram chat, then started again: every message it had accepted is answered exactly
//! once, in order, through the outbox, and the conversation holds each question and answer
//! once (each channel turn carries its message's id as turn id, so the half-done turn does
//! not store its question twice). Telegram and the model are fakes on loopback speaking
//! their wire formats.

use moltbot_fakes::telegram::FakeTelegram;
use moltbot_fakes::FakeOpenAi;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const BOT_TOKEN: &str = "515151:crash-test-token";
const MESSAGES: usize = 6;

struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn gateway(home: &Path, port: u16, openai: &str, telegram: &str, log: &str) -> Gateway {
    let log = std::fs::File::create(home.join(log)).unwrap();
    Gateway(
        Command::new(env!("CARGO_BIN_EXE_moltbot"))
            .env_clear()
            .env("HOME", home)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("MOLTBOT_DATA__DIR", home.join("data"))
            .env("MOLTBOT_GATEWAY__PORT", port.to_string())
            .env("MOLTBOT_GATEWAY_TOKEN", "crash-test")
            .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
            .env("MOLTBOT_ROUTER__ENABLED", "false")
            .env("MOLTBOT_KNOWLEDGE__ENABLED", "false")
            .env("MOLTBOT_TOOLS__MEMORY__ENABLED", "false")
            .env("MOLTBOT_TOOLS__AGENT__ENABLED", "false")
            .env("MOLTBOT_MODEL__PROVIDERS", "[\"openai\"]")
            .env("MOLTBOT_MODEL__OPENAI__BASE_URL", openai)
            .env("MOLTBOT_CHANNELS__TELEGRAM__ENABLED", "true")
            .env("MOLTBOT_CHANNELS__TELEGRAM__BOT_TOKEN", BOT_TOKEN)
            .env("MOLTBOT_CHANNELS__TELEGRAM__API_BASE", telegram)
            .env("MOLTBOT_CHANNELS__TELEGRAM__POLL_TIMEOUT_SECS", "1")
            .env("MOLTBOT_CHANNELS__TELEGRAM__ALLOW_FROM", "[\"42\"]")
            .arg("gateway")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_chat_then_restart_answers_every_accepted_message_once() {
    // Slow streams: each answer takes about a second, so the kill lands inside one.
    let fake = FakeOpenAi::builder()
        .chunk_delay(Duration::from_millis(250))
        .start()
        .await;
    let tg = FakeTelegram::start(BOT_TOKEN).await;
    let home = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut first = gateway(
        home.path(),
        port,
        &fake.base_url(),
        &tg.base_url(),
        "first.log",
    );
    for i in 0..MESSAGES {
        tg.push_message(42, 42, &format!("message {i}"));
    }
    // Two answers out, then half an answer's time: the third is being generated (its
    // question stored), the rest are accepted and waiting. Not right after a send: between
    // Telegram taking a message and the outbox recording it a crash resends it (Telegram's
    // sendMessage has no idempotency key, so the outbox is at-least-once in that window).
    let sent = tg.wait_sent(2, Duration::from_secs(60)).await;
    assert!(sent.len() >= 2, "no answers before the kill");
    tokio::time::sleep(Duration::from_millis(900)).await;
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let before = tg.sent().len();
    assert!(before < MESSAGES, "the kill landed after the last answer");

    let _second = gateway(
        home.path(),
        port,
        &fake.base_url(),
        &tg.base_url(),
        "second.log",
    );
    let sent = tg.wait_sent(MESSAGES, Duration::from_secs(90)).await;
    // A little longer: a duplicate would show up now.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sent = if tg.sent().len() > sent.len() {
        tg.sent()
    } else {
        sent
    };
    let texts: Vec<&str> = sent.iter().map(|m| m.rendered.as_str()).collect();
    let want: Vec<String> = (0..MESSAGES)
        .map(|i| format!("echo: message {i}"))
        .collect();
    let logs = || {
        let read = |f: &str| std::fs::read_to_string(home.path().join(f)).unwrap_or_default();
        format!(
            "--- first\n{}\n--- second\n{}",
            read("first.log"),
            read("second.log")
        )
    };
    assert_eq!(texts, want, "killed after {before} answers\n{}", logs());
    eprintln!("killed after {before}/{MESSAGES} answers; the rest answered once after restart");

    // The conversation holds each question and answer once.
    let store = moltbot_store::Store::open(&home.path().join("data/moltbot.db")).unwrap();
    let (sessions, _) = store.list_sessions(10, 0).await.unwrap();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let history: Vec<String> = store
        .recent_messages(&sessions[0].id, 100)
        .await
        .unwrap()
        .into_iter()
        .map(|m| m.content)
        .collect();
    let want: Vec<String> = (0..MESSAGES)
        .flat_map(|i| [format!("message {i}"), format!("echo: message {i}")])
        .collect();
    assert_eq!(history, want);
}
