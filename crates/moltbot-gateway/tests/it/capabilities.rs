//! The capability layer end to end, from a chat: the real gateway with the built-in tools
//! from config, a fake OpenAI model that asks for tool calls (the real OpenAI provider and
//! wire format), real Chromium opening a page served on loopback, the real cron scheduler
//! delivering through the channel hub to a fake Telegram, and real processes for `exec`.

use crate::context::TOKEN;
use moltbot_channels::{registry, ChannelHub, HubSink};
use moltbot_core::config::ExecPolicy;
use moltbot_core::{Config, Secret};
use moltbot_engine::{Engine, EngineOptions, ModelSlot};
use moltbot_fakes::telegram::FakeTelegram;
use moltbot_fakes::FakeOpenAi;
use moltbot_gateway::capabilities::Capabilities;
use moltbot_gateway::AppState;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_store::Store;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TG_TOKEN: &str = "123456:TEST-telegram-token";
const WAIT: Duration = Duration::from_secs(30);

const ARTICLE: &str = "<html><head><title>Otters</title><style>p{color:red}</style></head>\
    <body><h1>River otters return</h1><p>Otters were seen again in the Elbe near Dresden \
    after forty years.</p><a href='/more'>Read more</a></body></html>";

/// Serves `/article` on loopback.
async fn page_server() -> SocketAddr {
    let app = axum::Router::new().route(
        "/article",
        axum::routing::get(|| async { axum::response::Html(ARTICLE) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

struct World {
    gateway: SocketAddr,
    model: FakeOpenAi,
    tg: FakeTelegram,
    state: AppState,
    dir: tempfile::TempDir,
    stop: CancellationToken,
    _hub: ChannelHub,
}

impl World {
    async fn start() -> World {
        Self::start_with(|_| {}).await
    }

    async fn start_with(adjust: impl FnOnce(&mut Config)) -> World {
        let pages = page_server().await;
        let url = format!("http://{pages}/article");
        let model = FakeOpenAi::builder()
            .tool_rule(
                "summarise",
                "browser",
                json!({"action": "open", "url": url}).to_string(),
            )
            .tool_rule(
                "remind me",
                "cron",
                json!({"action": "add", "message": "call Anna", "cron": "0 9 * * *",
                       "tz": "Europe/Berlin"})
                .to_string(),
            )
            .tool_rule("which files", "exec", r#"{"command": "ls"}"#)
            .tool_rule(
                "inventory and fetch",
                "web_fetch",
                json!({"url": url}).to_string(),
            )
            .tool_rule("inventory", "exec", r#"{"command": "ls"}"#)
            .tool_rule("wipe", "exec", r#"{"command": "rm -rf notes"}"#)
            .start()
            .await;
        let tg = FakeTelegram::start(TG_TOKEN).await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::default();
        cfg.gateway.token = Some(Secret::new(TOKEN));
        cfg.data.dir = Some(dir.path().to_path_buf());
        cfg.model.openai.base_url = model.base_url();
        cfg.model.openai.model = "fake-model".into();
        cfg.model.openai.max_retries = 0;
        cfg.tools.browser.allow_hosts = vec!["127.0.0.1".into()];
        cfg.tools.exec.policy = ExecPolicy::Allowlist;
        cfg.tools.exec.allow = vec!["ls".into()];
        cfg.channels.telegram.enabled = true;
        cfg.channels.telegram.bot_token = Some(Secret::new(TG_TOKEN));
        cfg.channels.telegram.api_base = tg.base_url();
        cfg.channels.telegram.poll_timeout_secs = 1;
        cfg.channels.telegram.dm_policy = moltbot_core::config::DmPolicy::Open;
        adjust(&mut cfg);
        std::fs::create_dir_all(dir.path().join("workspace/notes")).unwrap();
        // A skill that may only list files (exec), triggered by "inventory".
        let skill = dir.path().join("skills/inventory");
        std::fs::create_dir_all(&skill).unwrap();
        std::fs::write(
            skill.join("SKILL.md"),
            "---\nname: inventory\ndescription: Lists what is in the workspace.\n\
             triggers: [inventory]\ntools: [exec]\n---\nALWAYS answer with a bullet list of \
             file names.\n",
        )
        .unwrap();
        std::fs::write(dir.path().join("workspace/report-2026.txt"), "q4").unwrap();

        let store = Store::open(&dir.path().join("moltbot.db")).unwrap();
        let provider = OpenAiProvider::new(&cfg.model.openai).unwrap();
        let engine = Engine::new(
            store.clone(),
            ModelSlot::ready(Arc::new(provider)),
            EngineOptions {
                // The shipped prompt, so the prompt-size test measures what users send.
                system_prompt: cfg.model.system_prompt.clone(),
                default_max_tokens: 32_768,
                ..EngineOptions::default()
            },
        );
        let stop = CancellationToken::new();
        let caps = Capabilities::build(&cfg, &engine);
        let supervisor = moltbot_core::Supervisor::new();
        caps.start_scheduler(engine.clone(), &supervisor, stop.clone());
        let sink = HubSink::new(store.clone());
        let built = registry::build(&cfg.channels, &sink).unwrap();
        let hub = ChannelHub::start_supervised(
            engine.clone(),
            cfg.channels.clone(),
            sink,
            built.channels,
            stop.clone(),
            supervisor.clone(),
            "test-replica".into(),
        );
        caps.connect_channels(&hub, &supervisor, stop.clone());
        let state = AppState::build(engine, cfg, Some(hub.clone()), supervisor);
        let _ = state.inner.capabilities.set(caps);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gateway = listener.local_addr().unwrap();
        let server_state = state.clone();
        let server_stop = stop.clone();
        tokio::spawn(async move {
            let _ = moltbot_gateway::run(listener, server_state, async move {
                server_stop.cancelled().await;
            })
            .await;
        });
        World {
            gateway,
            model,
            tg,
            state,
            dir,
            stop,
            _hub: hub,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.gateway)
    }

    async fn get(&self, path: &str) -> Value {
        let r = reqwest::Client::new()
            .get(self.url(path))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{path}: {}", r.status());
        r.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = reqwest::Client::new()
            .post(self.url(path))
            .bearer_auth(TOKEN)
            .json(&body)
            .timeout(WAIT)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    async fn chat(&self, session: &str, message: &str) -> Value {
        let (status, body) = self
            .post(
                "/api/v1/chat",
                json!({"session_id": session, "message": message}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }

    /// The tool names offered in the model request at `index`.
    fn offered(&self, index: usize) -> Vec<String> {
        let body = self.model.recent_requests()[index].json();
        body["tools"]
            .as_array()
            .map(|t| {
                t.iter()
                    .map(|t| t["function"]["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn chromium_present() -> bool {
    let found = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .any(|b| {
            std::env::var_os("PATH")
                .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
        });
    if !found && std::env::var_os("CI").is_some() {
        panic!("CI must have Chromium installed (scripts/setup-deps.sh installs it)");
    }
    if !found {
        eprintln!("skipped: no Chromium on PATH");
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_opens_a_page_in_chromium_and_summarises_it() {
    if !chromium_present() {
        return;
    }
    let w = World::start().await;
    let caps = w.get("/api/v1/capabilities").await;
    let loaded: Vec<&str> = caps["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "loaded")
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for tool in ["browser", "cron", "exec", "web_fetch"] {
        assert!(loaded.contains(&tool), "{tool} not loaded: {caps}");
    }

    let out = w
        .chat("web", "Please summarise the otter article for me")
        .await;
    let reply = out["reply"].as_str().unwrap();
    // The page text came back from Chromium, through the tool result, to the model.
    assert!(
        reply.contains("Otters were seen again in the Elbe"),
        "{reply}"
    );
    assert!(!reply.contains("color:red"), "{reply}");
    let tools = out["tools"].as_array().unwrap();
    assert_eq!(tools[0]["name"], "browser");
    assert_eq!(tools[0]["phase"], "start");
    assert_eq!(tools[1]["phase"], "result");
    assert_eq!(tools[1]["ok"], true, "{}", tools[1]);
    // Lean prompt: the model was offered the browser (and not cron or exec).
    let offered = w.offered(0);
    assert!(offered.contains(&"browser".to_string()), "{offered:?}");
    assert!(!offered.contains(&"cron".to_string()), "{offered:?}");
    assert!(!offered.contains(&"exec".to_string()), "{offered:?}");

    // A greeting is offered no tools at all.
    w.chat("web", "hi").await;
    let last = w.model.recent_requests().len() - 1;
    assert!(w.offered(last).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daily_reminder_set_in_telegram_arrives_in_telegram() {
    let w = World::start().await;
    w.tg.push_message(42, 42, "remind me every day at 9 to call Anna");
    let sent = w.tg.wait_sent(1, WAIT).await;
    // The model saw the cron tool's confirmation and the user got it.
    assert!(sent[0].text.contains("09:00"), "{}", sent[0].text);
    let jobs = w.get("/api/v1/cron").await;
    let job = &jobs["jobs"][0];
    assert_eq!(job["schedule_expr"], "0 9 * * *", "{jobs}");
    assert_eq!(job["tz"], "Europe/Berlin");
    assert_eq!(job["target"]["chat_id"], "42", "{jobs}");
    assert_eq!(job["target"]["channel"], "telegram", "{jobs}");
    // Fire it now (the schedule itself is tested with paused time in moltbot-tools).
    let id = job["id"].as_str().unwrap();
    let (status, _) = w.post(&format!("/api/v1/cron/{id}/run"), json!({})).await;
    assert_eq!(status, 200);
    let sent = w.tg.wait_sent(2, WAIT).await;
    assert!(sent[1].text.contains("call Anna"), "{}", sent[1].text);
    assert_eq!(sent[1].chat_id, "42");
    let runs = w.get(&format!("/api/v1/cron/{id}/runs")).await;
    assert_eq!(runs["runs"][0]["status"], "ok", "{runs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chat_runs_an_allowed_command_and_not_others() {
    let w = World::start().await;
    let out = w.chat("ops", "which files are in my workspace?").await;
    let reply = out["reply"].as_str().unwrap();
    assert!(reply.contains("report-2026.txt"), "{reply}");
    assert!(reply.contains("exit code: 0"), "{reply}");

    let out = w.chat("ops", "wipe the notes folder").await;
    let reply = out["reply"].as_str().unwrap();
    assert!(reply.contains("not allowed"), "{reply}");
    assert_eq!(out["tools"][1]["error_kind"], "tool_denied");
    assert!(w.dir.path().join("workspace/notes").exists());
    // Approvals are listed (none pending under the allowlist policy).
    let approvals = w.get("/api/v1/approvals").await;
    assert_eq!(approvals["approvals"], json!([]));
    let _ = &w.state;
}

/// Lean prompts: the bytes sent to the model for a greeting and for a tool turn (request
/// bodies as the OpenAI provider sends them, with the shipped system prompt). Recorded in
/// BENCHMARKS.md; rerun with `cargo test -p moltbot-gateway --test it prompt_bytes --
/// --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_bytes_of_a_greeting_and_a_tool_turn() {
    let w = World::start().await;
    w.chat("lean", "hi").await;
    let hi = w.model.last_request().unwrap().body_len();
    w.chat("lean2", "which files are in my workspace?").await;
    let recent = w.model.recent_requests();
    let tool_first = recent[recent.len() - 2].body_len();
    let tool_second = recent[recent.len() - 1].body_len();
    println!("prompt bytes: greeting {hi}, tool turn step 1 {tool_first}, step 2 {tool_second}");
    // Peers send 53–58 KB for "hi"; the budget here is 2 KB.
    assert!(hi < 2048, "greeting sent {hi} bytes");
    assert!(tool_first < 4096, "tool turn sent {tool_first} bytes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_skill_adds_its_instructions_and_only_its_tools() {
    let w = World::start().await;
    let caps = w.get("/api/v1/capabilities").await;
    let skill = caps["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "skill")
        .cloned()
        .unwrap_or_default();
    assert_eq!(skill["name"], "inventory", "{caps}");
    assert_eq!(skill["status"], "loaded", "{caps}");
    assert_eq!(skill["tools"], json!(["exec"]));

    let out = w.chat("sk", "make an inventory please").await;
    assert!(
        out["reply"].as_str().unwrap().contains("report-2026.txt"),
        "{out}"
    );
    let first = &w.model.recent_requests()[0].json();
    let system = first["messages"][0]["content"].as_str().unwrap();
    assert!(
        system.contains("ALWAYS answer with a bullet list"),
        "{system}"
    );
    assert_eq!(w.offered(0), ["exec"]);

    // Asking the skill's turn for a tool it does not declare fails for the model, not
    // the user.
    let out = w.chat("sk2", "inventory and fetch the article").await;
    assert_eq!(out["tools"][1]["error_kind"], "tool_unavailable", "{out}");
    assert!(!w
        .offered(w.model.recent_requests().len() - 2)
        .contains(&"web_fetch".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_approves_a_command_from_telegram() {
    let w = World::start_with(|cfg| {
        cfg.tools.exec.policy = ExecPolicy::Ask;
        cfg.channels.telegram.allow_from = vec!["42".into()];
    })
    .await;
    w.tg.push_message(42, 42, "wipe the notes folder");
    // The approval request arrives in the owner's chat with its id.
    let sent = w.tg.wait_sent(1, WAIT).await;
    let ask = &sent[0].text;
    assert!(
        ask.contains("Approval needed: run `rm -rf notes`?"),
        "{ask}"
    );
    let id = ask
        .split("/approve ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let pending = w.get("/api/v1/approvals").await;
    assert_eq!(pending["approvals"][0]["id"], id.as_str(), "{pending}");
    assert!(w.dir.path().join("workspace/notes").exists());
    // A stranger cannot answer it; the owner can.
    w.tg.push_message(7, 7, &format!("/approve {id}"));
    let sent = w.tg.wait_sent(2, WAIT).await;
    assert!(sent[1].text.contains("Only the owner"), "{}", sent[1].text);
    w.tg.push_message(42, 42, &format!("/approve {id}"));
    let sent = w.tg.wait_sent(4, WAIT).await;
    let texts: Vec<&str> = sent.iter().map(|m| m.text.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains(&format!("Approved {id}"))),
        "{texts:?}"
    );
    // The command ran (through the shell, in the workspace) and the turn finished.
    assert!(
        texts.iter().any(|t| t.contains("exit code: 0")),
        "{texts:?}"
    );
    assert!(!w.dir.path().join("workspace/notes").exists());
}

/// Tool steps stream: SSE `tool` events on `/api/v1/chat`, and OpenClaw `agent` events on
/// the `tool` stream over the WebSocket protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_steps_stream_over_sse_and_websocket() {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let w = World::start().await;

    let sse = reqwest::Client::new()
        .post(w.url("/api/v1/chat"))
        .bearer_auth(TOKEN)
        .json(
            &json!({"session_id": "sse", "message": "which files are in my workspace?",
                      "stream": true}),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let tool_events: Vec<Value> = sse
        .split("\n\n")
        .filter(|block| block.contains("event: tool"))
        .filter_map(|block| block.lines().find_map(|l| l.strip_prefix("data: ")))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert_eq!(tool_events.len(), 2, "{sse}");
    assert_eq!(tool_events[0]["phase"], "start");
    assert_eq!(tool_events[0]["name"], "exec");
    assert_eq!(tool_events[1]["phase"], "result");
    assert!(tool_events[1]["output"]
        .as_str()
        .unwrap()
        .contains("report-2026.txt"));
    let done = sse.find("event: done").expect("done event");
    assert!(sse.find("event: tool").unwrap() < done);

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/", w.gateway))
        .await
        .unwrap();
    let challenge = loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        if let Message::Text(t) = msg {
            break serde_json::from_str::<Value>(&t).unwrap();
        }
    };
    assert_eq!(challenge["event"], "connect.challenge", "{challenge}");
    ws.send(Message::text(
        json!({"type": "req", "id": "1", "method": "connect", "params": {
            "minProtocol": 3, "maxProtocol": 4,
            "client": {"id": "cli", "version": "test", "platform": "linux", "mode": "cli"},
            "role": "operator", "scopes": ["operator.admin"], "auth": {"token": TOKEN}}})
        .to_string(),
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"type": "req", "id": "2", "method": "chat.send", "params": {
            "sessionKey": "agent:main:tools", "message": "which files are in my workspace?",
            "deliver": false, "idempotencyKey": "run-tools"}})
        .to_string(),
    ))
    .await
    .unwrap();
    let mut tool = Vec::new();
    let final_text = loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .unwrap()
            .unwrap();
        let Message::Text(t) = msg else { continue };
        let v: Value = serde_json::from_str(&t).unwrap();
        if v["event"] == "agent" && v["payload"]["stream"] == "tool" {
            assert_eq!(v["payload"]["runId"], "run-tools");
            tool.push(v["payload"]["data"].clone());
        }
        if v["event"] == "chat" && v["payload"]["state"] == "final" {
            break v["payload"]["message"]["content"][0]["text"]
                .as_str()
                .unwrap()
                .to_string();
        }
    };
    assert_eq!(tool.len(), 2, "{tool:?}");
    assert_eq!(tool[0]["phase"], "start");
    assert_eq!(tool[0]["name"], "exec");
    assert_eq!(tool[0]["args"]["command"], "ls");
    assert_eq!(tool[1]["phase"], "result");
    assert_eq!(tool[1]["isError"], false);
    assert!(final_text.contains("report-2026.txt"), "{final_text}");
}
