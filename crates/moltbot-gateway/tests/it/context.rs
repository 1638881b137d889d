use moltbot_core::{Config, Secret};
use moltbot_engine::{Engine, EngineOptions, ModelSlot};
use moltbot_fakes::FakeOpenAi;
use moltbot_gateway::AppState;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TOKEN: &str = "test-token-123";

/// A running gateway backed by a fake OpenAI server.
pub struct TestContext {
    pub addr: SocketAddr,
    pub fake: FakeOpenAi,
    pub state: AppState,
    /// Kept so the data dir outlives the gateway.
    _dir: Arc<tempfile::TempDir>,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

pub struct Options {
    pub token: Option<&'static str>,
    pub max_concurrent_turns: usize,
    pub max_body_bytes: usize,
    pub fake_delay: Duration,
    pub fake_chunk_delay: Duration,
    pub fake_reply: Option<&'static str>,
    pub dir: Option<Arc<tempfile::TempDir>>,
    pub tick_interval_ms: u64,
    pub drain_delay_secs: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            token: Some(TOKEN),
            max_concurrent_turns: 64,
            max_body_bytes: 64 * 1024,
            fake_delay: Duration::ZERO,
            fake_chunk_delay: Duration::ZERO,
            fake_reply: None,
            dir: None,
            tick_interval_ms: 30_000,
            drain_delay_secs: 0,
        }
    }
}

pub fn config(opts: &Options, dir: &std::path::Path, base_url: String) -> Config {
    let mut cfg = Config::default();
    cfg.gateway.token = opts.token.map(Secret::new);
    cfg.gateway.max_concurrent_turns = opts.max_concurrent_turns;
    cfg.gateway.max_body_bytes = opts.max_body_bytes;
    cfg.gateway.max_message_chars = 1000;
    cfg.gateway.shutdown_grace_secs = 10;
    cfg.gateway.tick_interval_ms = opts.tick_interval_ms;
    cfg.gateway.drain_delay_secs = opts.drain_delay_secs;
    cfg.data.dir = Some(dir.to_path_buf());
    cfg.model.openai.base_url = base_url;
    cfg.model.openai.model = "fake-model".into();
    cfg.model.openai.max_retries = 0;
    cfg
}

impl TestContext {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Self {
        let mut fake = FakeOpenAi::builder()
            .delay(opts.fake_delay)
            .chunk_delay(opts.fake_chunk_delay);
        if let Some(r) = opts.fake_reply {
            fake = fake.reply(r);
        }
        let fake = fake.start().await;
        let dir = opts
            .dir
            .clone()
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let cfg = config(&opts, dir.path(), fake.base_url());
        let store = Store::open(&dir.path().join("moltbot.db")).unwrap();
        let model = OpenAiProvider::new(&cfg.model.openai).unwrap();
        let engine = Engine::new(
            store,
            ModelSlot::ready(Arc::new(model)),
            EngineOptions {
                max_message_chars: cfg.gateway.max_message_chars,
                system_prompt: "You are a test assistant.".into(),
                ..EngineOptions::default()
            },
        );
        let state = AppState::new(engine, cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let server = tokio::spawn(moltbot_gateway::run(listener, state.clone(), async move {
            let _ = rx.await;
        }));
        TestContext {
            addr,
            fake,
            state,
            _dir: dir,
            stop: Some(tx),
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}", self.addr)
    }

    pub fn client(&self) -> reqwest::Client {
        reqwest::Client::new()
    }

    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.client().post(self.url(path)).bearer_auth(TOKEN)
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.client().get(self.url(path)).bearer_auth(TOKEN)
    }

    /// `GET path` with the token, parsed as JSON.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        self.get(path).send().await.unwrap().json().await.unwrap()
    }

    /// `POST path` with the token and a JSON body; asserts 200 and returns the answer.
    pub async fn post_ok(&self, path: &str, body: &serde_json::Value) -> serde_json::Value {
        let resp = self.post(path).json(body).send().await.unwrap();
        assert_eq!(resp.status(), 200, "POST {path} {body}");
        resp.json().await.unwrap()
    }

    /// The Prometheus text of `/metrics` (which needs the token like the API).
    pub async fn metrics(&self) -> String {
        let resp = self.get("/metrics").send().await.unwrap();
        assert_eq!(resp.status(), 200);
        resp.text().await.unwrap()
    }

    /// Trigger shutdown and wait for the server to finish draining.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.server.take() {
            Some(s) => s.await.unwrap(),
            None => Ok(()),
        }
    }

    /// Ask for shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.server.take().unwrap()
    }
}
