//! The whole channel layer for end-to-end tests: a real store in a temp dir, the engine on
//! a fake OpenAI server, adapters built from config and pointed at loopback fakes of the
//! platforms, the hub, and the webhook routes served on a real socket. `restart` stops
//! everything but the data dir and the fakes, and starts again, like a process restart.

use moltbot_channels::registry;
use moltbot_channels::{ChannelHub, HubSink};
use moltbot_core::config::ChannelsConfig;
use moltbot_engine::{Engine, EngineOptions, ModelSlot};
use moltbot_fakes::FakeOpenAi;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Harness {
    pub model: FakeOpenAi,
    pub cfg: ChannelsConfig,
    pub dir: tempfile::TempDir,
    pub hub: ChannelHub,
    pub store: Store,
    /// Where the webhook routes listen.
    pub addr: SocketAddr,
    stop: CancellationToken,
    server: Option<JoinHandle<()>>,
}

async fn start_parts(
    dir: &std::path::Path,
    model: &FakeOpenAi,
    cfg: &ChannelsConfig,
) -> (
    ChannelHub,
    Store,
    SocketAddr,
    CancellationToken,
    JoinHandle<()>,
) {
    let store = Store::open(&dir.join("moltbot.db")).unwrap();
    let mut model_cfg = moltbot_core::config::OpenAiConfig {
        base_url: model.base_url(),
        ..Default::default()
    };
    model_cfg.model = "fake-model".into();
    model_cfg.max_retries = 0;
    let provider = OpenAiProvider::new(&model_cfg).unwrap();
    let engine = Engine::new(
        store.clone(),
        ModelSlot::ready(Arc::new(provider)),
        EngineOptions {
            system_prompt: "You are a test assistant.".into(),
            // The fake model cuts its reply at `max_tokens` words: leave room for long ones.
            default_max_tokens: 32_768,
            ..EngineOptions::default()
        },
    );
    let sink = HubSink::new(store.clone());
    let built = registry::build(cfg, &sink).unwrap();
    let stop = CancellationToken::new();
    let hub = ChannelHub::start(engine, cfg.clone(), sink, built.channels, stop.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = built.routes;
    let server_stop = stop.clone();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, routes)
            .with_graceful_shutdown(async move { server_stop.cancelled().await })
            .await;
    });
    (hub, store, addr, stop, server)
}

impl Harness {
    /// Start with `cfg` (the test enables channels and points them at its fakes) and a
    /// model that echoes (`echo: <message>`), or answers `reply` when given.
    pub async fn start(cfg: ChannelsConfig, reply: Option<&str>) -> Harness {
        let mut b = FakeOpenAi::builder();
        if let Some(r) = reply {
            b = b.reply(r);
        }
        let model = b.start().await;
        let dir = tempfile::tempdir().unwrap();
        let (hub, store, addr, stop, server) = start_parts(dir.path(), &model, &cfg).await;
        Harness {
            model,
            cfg,
            dir,
            hub,
            store,
            addr,
            stop,
            server: Some(server),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Stop the hub and its routes (turns in flight are cut short and stay pending).
    pub async fn stop(&mut self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(10), self.hub.wait())
            .await
            .expect("hub stops within 10 s");
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }

    /// Stop and start again on the same data dir (a new webhook port).
    pub async fn restart(&mut self) {
        self.stop().await;
        let (hub, store, addr, stop, server) =
            start_parts(self.dir.path(), &self.model, &self.cfg).await;
        self.hub = hub;
        self.store = store;
        self.addr = addr;
        self.stop = stop;
        self.server = Some(server);
    }

    /// Wait until `cond` holds, checking every 20 ms, for at most `secs`.
    pub async fn until<F, Fut>(&self, secs: u64, what: &str, mut cond: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond().await {
            assert!(Instant::now() < deadline, "timed out waiting for: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The pairing code waiting for `sender` on `channel`.
    pub async fn pairing_code(&self, channel: &str, sender: &str) -> String {
        self.store
            .pairing_get(channel, sender)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("no pairing request for {sender} on {channel}"))
            .code
    }

    /// Approve `sender`'s pending code, as `moltbot pairing approve` does.
    pub async fn approve(&self, channel: &str, sender: &str) {
        let code = self.pairing_code(channel, sender).await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        self.store
            .pairing_approve(channel, &code, now)
            .await
            .unwrap()
            .expect("code approved");
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
