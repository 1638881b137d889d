//! The admin API: hot model swap with warm-up and a canary, under steady load, with no
//! failed request. Two fake OpenAI servers stand for the old and the new model version.

use crate::context::{config, Options, TOKEN};
use moltbot_core::config::OpenAiConfig;
use moltbot_core::{ChatModel, Secret};
use moltbot_engine::{Engine, EngineOptions, ModelSlot};
use moltbot_fakes::FakeOpenAi;
use moltbot_gateway::routes::admin::{LoadSpec, ModelAdmin, ModelLoader};
use moltbot_gateway::AppState;
use moltbot_models::providers::openai::OpenAiProvider;
use moltbot_models::providers::versions::ModelVersions;
use moltbot_store::Store;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const ADMIN: &str = "admin-secret-1";

fn provider(base_url: String) -> Arc<dyn ChatModel> {
    let cfg = OpenAiConfig {
        base_url,
        model: "fake-model".into(),
        max_retries: 0,
        ..OpenAiConfig::default()
    };
    Arc::new(OpenAiProvider::new(&cfg).unwrap())
}

/// Loads OpenAI-compatible providers named in the request.
struct ProviderLoader;

impl ModelLoader for ProviderLoader {
    fn describe(&self, spec: &LoadSpec) -> String {
        format!("{:?}", spec.provider.as_ref().map(|p| &p.base_url))
    }
    fn load(&self, spec: &LoadSpec) -> Result<Arc<dyn ChatModel>, String> {
        let p = spec
            .provider
            .as_ref()
            .ok_or("this test loads providers only")?;
        Ok(provider(p.base_url.clone().ok_or("no base_url")?))
    }
}

struct Admin {
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Admin {
    async fn start(v1: &FakeOpenAi) -> Admin {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(&Options::default(), dir.path(), v1.base_url());
        cfg.gateway.admin_token = Some(Secret::new(ADMIN));
        let versions = ModelVersions::new(provider(v1.base_url()), "config");
        let store = Store::open(&dir.path().join("moltbot.db")).unwrap();
        let engine = Engine::new(
            store,
            ModelSlot::ready(versions.clone()),
            EngineOptions::default(),
        );
        let state = AppState::new(engine, cfg);
        let cell = Arc::new(OnceLock::new());
        let _ = cell.set(versions);
        let _ = state.inner.model_admin.set(ModelAdmin {
            versions: cell,
            loader: Arc::new(ProviderLoader),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(moltbot_gateway::run(
            listener,
            state,
            std::future::pending(),
        ));
        Admin { addr, _dir: dir }
    }

    async fn admin(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
        token: &str,
    ) -> (u16, Value) {
        let c = reqwest::Client::new();
        let url = format!("http://{}{path}", self.addr);
        let req = match method {
            "GET" => c.get(url),
            _ => c.post(url).json(&body.unwrap_or(json!({}))),
        };
        let r = req.bearer_auth(token).send().await.unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swap_under_load_fails_no_request() {
    let v1 = FakeOpenAi::builder()
        .reply("from v1")
        .chunk_delay(Duration::from_millis(5))
        .start()
        .await;
    let v2 = FakeOpenAi::builder()
        .reply("from v2")
        .chunk_delay(Duration::from_millis(5))
        .start()
        .await;
    let gw = Admin::start(&v1).await;

    // The admin API wants its own token, and the admin token opens nothing else.
    assert_eq!(gw.admin("GET", "/admin/models", None, TOKEN).await.0, 401);
    assert_eq!(gw.admin("GET", "/admin/models", None, "").await.0, 401);
    let as_admin = reqwest::Client::new()
        .post(format!("http://{}/api/v1/chat", gw.addr))
        .bearer_auth(ADMIN)
        .json(&json!({"session_id": "s", "message": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        as_admin.status(),
        401,
        "the admin token is not a gateway token"
    );

    // Steady load: four clients, each turn checked.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let from_v2 = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for i in 0..4 {
        let (stop, ok, failed, from_v2) =
            (stop.clone(), ok.clone(), failed.clone(), from_v2.clone());
        let url = format!("http://{}/api/v1/chat", gw.addr);
        clients.push(tokio::spawn(async move {
            let c = reqwest::Client::new();
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let r = c
                    .post(&url)
                    .bearer_auth(TOKEN)
                    .json(&json!({"session_id": format!("load-{i}-{n}"), "message": "hi"}))
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status() == 200 => {
                        let v: Value = r.json().await.unwrap();
                        if v["reply"] == "from v2" {
                            from_v2.fetch_add(1, Ordering::Relaxed);
                        }
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    let settle = || tokio::time::sleep(Duration::from_millis(400));
    settle().await;

    // Load v2 with three warm-up requests; it takes no traffic until it is ready.
    let body = json!({"provider": {"kind": "openai", "base_url": v2.base_url(), "model": "fake-model"},
                      "warmup": true, "warmup_requests": 3});
    let (status, loaded) = gw
        .admin("POST", "/admin/model/load", Some(body.clone()), ADMIN)
        .await;
    assert_eq!(status, 202, "{loaded}");
    assert_eq!(loaded["version"], "v2");
    // A second load while v2 is tried is a conflict.
    assert_eq!(
        gw.admin("POST", "/admin/model/load", Some(body), ADMIN)
            .await
            .0,
        409
    );
    let mut ready = false;
    for _ in 0..100 {
        let (_, list) = gw.admin("GET", "/admin/models", None, ADMIN).await;
        if list["versions"][1]["state"] == "ready" {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);
    assert!(v2.requests() >= 3, "warm-up requests reached v2");
    assert_eq!(
        from_v2.load(Ordering::Relaxed),
        0,
        "no traffic before the shift"
    );

    // Out-of-range weights are refused with the range named.
    let (status, err) = gw
        .admin(
            "POST",
            "/admin/traffic",
            Some(json!({"new_model_weight": 150})),
            ADMIN,
        )
        .await;
    assert_eq!(status, 400);
    assert!(err["error"]["message"]
        .as_str()
        .unwrap()
        .contains("between 0 and 100, got 150"));

    // Rollout: 10 % then 100 %, then promote (the old version is unloaded).
    for weight in [10, 100] {
        let (status, list) = gw
            .admin(
                "POST",
                "/admin/traffic",
                Some(json!({"new_model_weight": weight})),
                ADMIN,
            )
            .await;
        assert_eq!(status, 200, "{list}");
        assert_eq!(list["new_model_weight"], weight as f64);
        settle().await;
    }
    assert!(from_v2.load(Ordering::Relaxed) > 0);
    let (status, list) = gw.admin("POST", "/admin/model/promote", None, ADMIN).await;
    assert_eq!(status, 200, "{list}");
    assert_eq!(list["versions"].as_array().unwrap().len(), 1);
    assert_eq!(list["versions"][0]["version"], "v2");
    let v1_before = v1.requests();
    settle().await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(failed.load(Ordering::Relaxed), 0, "no request failed");
    assert!(ok.load(Ordering::Relaxed) > 20, "the load really ran");
    // After the promotion, v1 gets nothing new (a request picked just before may finish).
    assert!(v1.requests() <= v1_before + 4);
    // Nothing to roll back any more.
    assert_eq!(
        gw.admin("POST", "/admin/model/rollback", None, ADMIN)
            .await
            .0,
        409
    );
}
