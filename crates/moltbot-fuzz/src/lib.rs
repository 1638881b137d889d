//! Fuzz targets over every input moltbot takes from outside: HTTP request bodies, OpenClaw
//! WebSocket frames, channel webhooks, the config file, intents files, skills and GGUF
//! model files.
//!
//! Each target is a plain `fn(&[u8])` that panics when it finds a defect, so the same code
//! runs under libFuzzer (`fuzz/`, `scripts/fuzz.sh`, nightly toolchain) and, bounded, in the
//! ordinary test suite on stable (`tests/bounded.rs`, driven by [`mutate`]).
//!
//! The network targets talk to a real gateway (real router, real SQLite store, real webhook
//! adapters) served on loopback by [`Harness`], started once per process, with the fake
//! OpenAI server as its model. What they check, beyond "no panic":
//! - HTTP: no 500, every error is our JSON error body, every request is answered in time;
//! - WebSocket: a frame never kills the connection without a close frame, and the gateway
//!   keeps answering a probe afterwards;
//! - webhooks: a wrong secret or signature is always refused (401/403), a right one is never
//!   a server error.

pub mod mutate;

use futures::{SinkExt, StreamExt};
use moltbot_core::{Config, Secret};
use moltbot_engine::{Engine, EngineOptions, ModelSlot};
use moltbot_fakes::telegram::FakeTelegram;
use moltbot_fakes::whatsapp::FakeWhatsApp;
use moltbot_fakes::FakeOpenAi;
use moltbot_gateway::AppState;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_store::Store;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_tungstenite::tungstenite::Message;

/// The fuzz gateway's bearer token.
pub const TOKEN: &str = "fuzz-gateway-token";
/// Its admin token.
pub const ADMIN: &str = "fuzz-admin-token";
const BOT_TOKEN: &str = "123456:fuzz-bot-token";
const TELEGRAM_SECRET: &str = "fuzz-telegram-secret";
const WHATSAPP_APP_SECRET: &str = "fuzz-whatsapp-app-secret";
/// Longer than any answer may take; a request still open then is a hang, and a defect.
const PATIENCE: Duration = Duration::from_secs(20);

/// A fuzz target: panics on a defect.
pub type Target = fn(&[u8]);

/// Every target, by name (the seed folders under `fuzz/seeds/` and the cargo-fuzz binaries
/// carry the same names).
pub const TARGETS: &[(&str, Target)] = &[
    ("http_request", http_request),
    ("ws_frame", ws_frame),
    ("webhook", webhook),
    ("config", config),
    ("intents", intents),
    ("skill", skill),
    ("gguf", gguf),
];

/// A gateway on loopback, shared by the network targets of one process.
pub struct Harness {
    rt: tokio::runtime::Runtime,
    addr: SocketAddr,
    http: reqwest::Client,
    _peers: (FakeOpenAi, FakeTelegram, FakeWhatsApp),
    _dir: tempfile::TempDir,
}

impl Harness {
    /// The process's harness, started on first use.
    pub fn get() -> &'static Harness {
        static H: OnceLock<Harness> = OnceLock::new();
        H.get_or_init(|| Harness::start().expect("the fuzz gateway starts"))
    }

    fn start() -> Result<Harness, Box<dyn std::error::Error>> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let dir = tempfile::tempdir()?;
        let (addr, peers) = rt.block_on(async {
            let fake = FakeOpenAi::builder().reply("fuzzed reply").start().await;
            let fake_tg = FakeTelegram::start(BOT_TOKEN).await;
            let fake_wa = FakeWhatsApp::start("fuzz-access", "1555").await;
            let mut cfg = Config::default();
            cfg.gateway.token = Some(Secret::new(TOKEN));
            cfg.gateway.admin_token = Some(Secret::new(ADMIN));
            cfg.gateway.max_body_bytes = 64 * 1024;
            cfg.gateway.max_message_chars = 4000;
            cfg.data.dir = Some(dir.path().to_path_buf());
            cfg.model.openai.base_url = fake.base_url();
            cfg.model.openai.model = "fake-model".into();
            cfg.model.openai.max_retries = 0;
            let tg = &mut cfg.channels.telegram;
            tg.bot_token = Some(Secret::new(BOT_TOKEN));
            tg.api_base = fake_tg.base_url();
            tg.webhook_secret = Some(Secret::new(TELEGRAM_SECRET));
            tg.mode = moltbot_core::config::TelegramMode::Webhook;
            let wa = &mut cfg.channels.whatsapp;
            wa.access_token = Some(Secret::new("fuzz-access"));
            wa.verify_token = Some(Secret::new("fuzz-verify"));
            wa.app_secret = Some(Secret::new(WHATSAPP_APP_SECRET));
            wa.phone_number_id = "1555".into();
            wa.api_base = fake_wa.base_url();

            let store = Store::open(&dir.path().join("moltbot.db"))?;
            let sink = moltbot_channels::HubSink::new(store.clone());
            let telegram = Arc::new(moltbot_channels::telegram::TelegramChannel::new(
                &cfg.channels.telegram,
            )?);
            let whatsapp = Arc::new(moltbot_channels::whatsapp::WhatsAppChannel::new(
                &cfg.channels.whatsapp,
            )?);
            let webhooks = telegram
                .webhook_router(sink.clone())
                .merge(whatsapp.webhook_router(sink));
            let model = OpenAiProvider::new(&cfg.model.openai)?;
            let engine = Engine::new(
                store,
                ModelSlot::ready(Arc::new(model)),
                EngineOptions {
                    max_message_chars: cfg.gateway.max_message_chars,
                    ..EngineOptions::default()
                },
            );
            let state = AppState::new(engine, cfg);
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            tokio::spawn(moltbot_gateway::run_with(
                listener,
                state,
                webhooks,
                std::future::pending(),
            ));
            Ok::<_, Box<dyn std::error::Error>>((addr, (fake, fake_tg, fake_wa)))
        })?;
        let http = reqwest::Client::builder().timeout(PATIENCE).build()?;
        Ok(Harness {
            rt,
            addr,
            http,
            _peers: peers,
            _dir: dir,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn block_on<F: std::future::Future>(&self, what: &str, f: F) -> F::Output {
        self.rt.block_on(async {
            tokio::time::timeout(PATIENCE, f)
                .await
                .unwrap_or_else(|_| panic!("{what}: no answer within {PATIENCE:?} (a hang)"))
        })
    }

    /// Send a request; its status and body. Panics when the gateway does not answer.
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> (u16, Vec<u8>) {
        let resp = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{what}: the gateway did not answer: {e}"));
        let status = resp.status().as_u16();
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{what}: the answer was cut off: {e}"));
        (status, body.to_vec())
    }
}

/// Errors must be our JSON body `{"error": {"kind", "message"}}`.
fn assert_error_body(what: &str, status: u16, body: &[u8]) {
    let v: Value = serde_json::from_slice(body).unwrap_or_else(|e| {
        panic!(
            "{what}: HTTP {status} with a body that is not JSON ({e}): {}",
            String::from_utf8_lossy(&body[..body.len().min(300)])
        )
    });
    assert!(
        v["error"]["message"].is_string() && v["error"]["kind"].is_string(),
        "{what}: HTTP {status} without our error body: {v}"
    );
}

/// The routes that take a JSON body: method, path, whether the admin token opens it.
const ROUTES: &[(&str, &str, bool)] = &[
    ("POST", "/api/v1/chat", false),
    ("POST", "/v1/chat/completions", false),
    ("POST", "/api/v1/understand", false),
    ("POST", "/api/v1/knowledge/search", false),
    ("POST", "/api/v1/knowledge/ingest", false),
    ("POST", "/api/v1/channels/send", false),
    ("POST", "/api/v1/pairing/approve", false),
    ("POST", "/api/v1/cron", false),
    ("POST", "/api/v1/approvals/fuzz", false),
    ("POST", "/admin/traffic", true),
    ("POST", "/admin/model/promote", true),
];

/// Fuzz target: a request body (first byte picks the route) to a JSON endpoint.
pub fn http_request(data: &[u8]) {
    let Some((&sel, body)) = data.split_first() else {
        return;
    };
    let (method, path, admin) = ROUTES[sel as usize % ROUTES.len()];
    let h = Harness::get();
    let what = format!("{method} {path}");
    let (status, resp) = h.block_on(&what, async {
        let req = h
            .http
            .request(method.parse().expect("a method"), h.url(path))
            .bearer_auth(if admin { ADMIN } else { TOKEN })
            .header("content-type", "application/json")
            .body(body.to_vec());
        h.send(req, &what).await
    });
    assert_ne!(
        status,
        500,
        "{what}: internal error for body {:?}: {}",
        String::from_utf8_lossy(body),
        String::from_utf8_lossy(&resp)
    );
    if status >= 400 {
        assert_error_body(&what, status, &resp);
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Open a socket and read the challenge; with `handshake`, also send a good `connect`.
async fn ws_open(h: &Harness, handshake: bool) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}", h.addr))
        .await
        .expect("the gateway accepts a WebSocket");
    let challenge = ws.next().await;
    assert!(
        matches!(challenge, Some(Ok(Message::Text(_)))),
        "no challenge: {challenge:?}"
    );
    if handshake {
        let connect = json!({"type": "req", "id": "c", "method": "connect", "params": {
            "minProtocol": 3, "maxProtocol": 4,
            "client": {"id": "fuzz", "version": "1", "platform": "linux", "mode": "test"},
            "auth": {"token": TOKEN}}});
        ws.send(Message::text(connect.to_string()))
            .await
            .expect("connect sent");
        match wait_for(&mut ws, "c").await {
            Probe::Answered(v) => assert_eq!(v["ok"], true, "good connect refused: {v}"),
            Probe::Closed(c) => panic!("good connect closed the socket: {c}"),
        }
    }
    ws
}

enum Probe {
    Answered(Value),
    Closed(String),
}

/// Read until the `res` with id `id`, or the end of the socket. An end without a close frame
/// (the connection reset or dropped) is a defect.
async fn wait_for(ws: &mut Ws, id: &str) -> Probe {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap_or_else(|e| {
                    panic!("the gateway sent a frame that is not JSON ({e}): {t}")
                });
                if v["type"] == "res" && v["id"] == id {
                    return Probe::Answered(v);
                }
            }
            Some(Ok(Message::Close(frame))) => {
                return Probe::Closed(format!("{frame:?}"));
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => panic!("the socket broke without a close frame: {e}"),
            None => panic!("the socket ended without a close frame"),
        }
    }
}

/// Fuzz target: one WebSocket frame, sent as the first frame (instead of `connect`) or after a
/// good handshake, as text or binary (bits 0 and 1 of the first byte); then a `health` probe.
pub fn ws_frame(data: &[u8]) {
    let Some((&mode, frame)) = data.split_first() else {
        return;
    };
    let after_handshake = mode & 1 == 0;
    let h = Harness::get();
    h.block_on("ws frame", async {
        let mut ws = ws_open(h, after_handshake).await;
        let msg = if mode & 2 == 0 {
            Message::text(String::from_utf8_lossy(frame).into_owned())
        } else {
            Message::binary(frame.to_vec())
        };
        if ws.send(msg).await.is_err() {
            // The server closed first (a refused frame); it must still serve others.
            drop(ws);
        } else {
            let probe = json!({"type": "req", "id": "probe-health", "method": "health"});
            let sent = ws.send(Message::text(probe.to_string())).await.is_ok();
            if sent {
                if let Probe::Answered(v) = wait_for(&mut ws, "probe-health").await {
                    if after_handshake {
                        assert_eq!(v["ok"], true, "health probe failed after a frame: {v}");
                    }
                }
            }
        }
        // Whatever the frame did to its own socket, the gateway serves the next one.
        let mut fresh = ws_open(h, true).await;
        let probe = json!({"type": "req", "id": "after", "method": "health"});
        fresh
            .send(Message::text(probe.to_string()))
            .await
            .expect("probe sent");
        match wait_for(&mut fresh, "after").await {
            Probe::Answered(v) => assert_eq!(v["ok"], true, "{v}"),
            Probe::Closed(c) => panic!("a fresh socket was closed: {c}"),
        }
    });
}

/// Fuzz target: a webhook delivery to Telegram or WhatsApp (bit 0 of the first byte), with the
/// right secret or signature or a wrong one (bit 1).
pub fn webhook(data: &[u8]) {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let whatsapp = mode & 1 == 1;
    let signed = mode & 2 == 0;
    let h = Harness::get();
    let (path, header, value) = if whatsapp {
        let sig = moltbot_channels::signature::hmac_sha256(WHATSAPP_APP_SECRET.as_bytes(), &[body]);
        let mut hex = hex::encode(sig);
        if !signed {
            hex.replace_range(0..1, if hex.starts_with('0') { "1" } else { "0" });
        }
        (
            moltbot_channels::whatsapp::WEBHOOK_PATH,
            "x-hub-signature-256",
            format!("sha256={hex}"),
        )
    } else {
        let secret = if signed {
            TELEGRAM_SECRET
        } else {
            "not-the-secret"
        };
        (
            moltbot_channels::telegram::WEBHOOK_PATH,
            moltbot_channels::telegram::SECRET_HEADER,
            secret.to_string(),
        )
    };
    let what = format!("webhook {path} (signed: {signed})");
    let (status, resp) = h.block_on(&what, async {
        let req = h
            .http
            .post(h.url(path))
            .header(header, value)
            .header("content-type", "application/json")
            .body(body.to_vec());
        h.send(req, &what).await
    });
    if signed {
        assert!(
            status < 500,
            "{what}: HTTP {status} for {:?}: {}",
            String::from_utf8_lossy(body),
            String::from_utf8_lossy(&resp)
        );
    } else {
        assert!(
            status == 401 || status == 403,
            "{what}: a forged delivery got HTTP {status}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
}

/// Write `data` to `name` in a fresh temporary folder.
fn temp_file(name: &str, data: &[u8]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().expect("a temporary folder");
    let path = dir.path().join(name);
    std::fs::write(&path, data).expect("the input is written");
    (dir, path)
}

/// Fuzz target: a config file (`moltbot.toml`), loaded as the gateway loads it.
pub fn config(data: &[u8]) {
    let (_dir, path) = temp_file("moltbot.toml", data);
    if let Ok(cfg) = Config::load_with_env(Some(&path), &[]) {
        // What loads must pass validation again (the CLI re-validates after its flags).
        if let Err(e) = cfg.validate() {
            panic!("a loaded config fails validation: {e}");
        }
    }
}

/// Fuzz target: an intents file; the first byte picks the format (YAML, JSON or TSV).
pub fn intents(data: &[u8]) {
    let Some((&sel, text)) = data.split_first() else {
        return;
    };
    let name = ["intents.yaml", "intents.json", "intents.tsv"][sel as usize % 3];
    let (_dir, path) = temp_file(name, text);
    if let Ok(set) = moltbot_understand::dataset::Dataset::load(&[path], None) {
        assert!(
            !set.examples.is_empty(),
            "a loaded intents file has no example"
        );
    }
}

/// Fuzz target: a skill's `SKILL.md`.
pub fn skill(data: &[u8]) {
    let (dir, _path) = temp_file(moltbot_tools::skills::SKILL_FILE, data);
    if let Ok(s) = moltbot_tools::skills::parse_skill(dir.path()) {
        assert!(!s.name.trim().is_empty(), "a skill loaded without a name");
    }
}

/// Fuzz target: a GGUF model file, opened as the local provider opens it (llama.cpp). It
/// finds inputs that make llama.cpp abort the process (a `GGML_ASSERT`, such as a layer
/// count past its limit); the gateway survives those by loading a model file in a child
/// process first (`moltbot models check`), so this target is for finding them, under
/// libFuzzer.
pub fn gguf(data: &[u8]) {
    let (_dir, path) = temp_file("model.gguf", data);
    let cfg = moltbot_core::config::LocalModelConfig {
        context_size: 256,
        ..Default::default()
    };
    let _ = moltbot_models::providers::local::LocalModel::load(&path, &cfg, 1);
}
