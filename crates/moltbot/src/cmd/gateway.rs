//! `moltbot gateway`: run the gateway in the foreground.

use crate::cli::GatewayArgs;
use crate::logging::init_logging;
use anyhow::Context;
use moltbot_channels::{ChannelHub, HubSink};
use moltbot_core::envinfo::EnvSnapshot;
use moltbot_core::Config;
use moltbot_engine::{Engine, EngineOptions, ModelSlot, ModelState};
use moltbot_gateway::AppState;
use moltbot_models::providers::versions::ModelVersions;
use moltbot_store::Store;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub fn run(config_path: Option<&Path>, args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let mut cfg = super::load_config(config_path)?;
    if let Some(p) = args.port {
        cfg.gateway.port = p;
    }
    if let Some(b) = args.bind {
        cfg.gateway.bind = b;
    }
    if let Some(d) = args.data_dir {
        cfg.data.dir = Some(d);
    }
    cfg.validate()?;
    cfg.check_bind_safety()?;
    init_logging(&cfg.log.level, args.verbose, args.json_logs || cfg.log.json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("moltbot-worker")
        // Blocking work is store reads on cache misses; a small pool keeps the number of
        // allocator arenas (and so idle RSS after a load spike) down.
        .max_blocking_threads(16)
        .build()?;
    rt.block_on(serve(cfg))?;
    Ok(ExitCode::SUCCESS)
}

/// Engine options from config.
pub fn engine_options(cfg: &Config) -> EngineOptions {
    EngineOptions {
        system_prompt: cfg.model.system_prompt.clone(),
        max_turns: cfg.sessions.max_turns,
        max_message_chars: cfg.gateway.max_message_chars,
        default_max_tokens: cfg.model.max_tokens,
        default_temperature: cfg.model.temperature,
        hot_cache_sessions: cfg.sessions.hot_cache_sessions,
        hot_cache_bytes: cfg.sessions.hot_cache_mb << 20,
        // A turn that arrives while the model loads (first run fetches it) waits this long.
        model_wait: Duration::from_secs(60),
    }
}

/// Open the store and start loading the model in the background; returns the engine at
/// once so the gateway can answer probes while the model loads.
pub async fn start_engine(cfg: &Config) -> anyhow::Result<Engine> {
    start_engine_with(cfg, None).await
}

/// The configured store. A database that is not reachable yet (PostgreSQL starting beside
/// the gateway) is waited for, up to a minute, before giving up.
async fn open_store_waiting(cfg: &Config) -> anyhow::Result<Store> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut pause = std::time::Duration::from_millis(250);
    loop {
        match Store::from_config(&cfg.data).await {
            Ok(store) => return Ok(store),
            Err(e) if e.is_unavailable() && std::time::Instant::now() < deadline => {
                tracing::warn!(cause = %e, "the store is not reachable yet; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_secs(5));
            }
            Err(e) => return Err(anyhow::Error::new(e).context("opening the store")),
        }
    }
}

/// [`start_engine`], also handing the loaded model, wrapped for hot swaps, to `versions`.
pub async fn start_engine_with(
    cfg: &Config,
    versions: Option<Arc<OnceLock<Arc<ModelVersions>>>>,
) -> anyhow::Result<Engine> {
    let data_dir = cfg.data.resolved_dir();
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data dir {}", data_dir.display()))?;
    let store = open_store_waiting(cfg).await?;
    tracing::info!(backend = store.backend_name(), "store open");
    let slot = ModelSlot::loading(format!(
        "loading {}",
        cfg.model
            .providers
            .iter()
            .map(|p| p.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    ));
    let loader_slot = slot.clone();
    let model_cfg = cfg.model.clone();
    std::thread::Builder::new()
        .name("moltbot-model-load".into())
        .spawn(move || {
            let env = EnvSnapshot::capture(&data_dir);
            match crate::providers::build_model(&model_cfg, &data_dir, &env) {
                Ok(model) => {
                    tracing::info!(model = model.id(), "model ready");
                    let model: Arc<dyn moltbot_core::ChatModel> = match &versions {
                        Some(cell) => {
                            let v = ModelVersions::new(model, "config");
                            let _ = cell.set(v.clone());
                            v
                        }
                        None => model,
                    };
                    loader_slot.set(ModelState::Ready(model));
                }
                Err(e) => {
                    tracing::error!(cause = format!("{e:#}"), "model failed to load");
                    loader_slot.set(ModelState::Failed(format!("{e:#}")));
                }
            }
        })?;
    Ok(Engine::new(store, slot, engine_options(cfg)))
}

/// Load the encoder, the intent model and the knowledge store on a thread (first start
/// fetches the encoder and trains from the intents pack); their routes answer 503 until
/// they are ready.
fn start_understanding(state: &AppState) {
    let ucfg = state.config().understanding.clone();
    let kcfg = state.config().knowledge.clone();
    let rcfg = state.config().router.clone();
    if !ucfg.enabled && !kcfg.enabled {
        return;
    }
    let data_dir = state.config().data.resolved_dir();
    let state = state.clone();
    let load = move || -> anyhow::Result<()> {
        let encoder = crate::understanding::configured_encoder(&ucfg, &data_dir, false)?;
        if let Some(u) = crate::understanding::load(&ucfg, encoder.clone(), &data_dir)? {
            let model = u.model();
            tracing::info!(
                intents = model.fine_labels().len(),
                encoder = model.encoder_name().unwrap_or("none"),
                "understanding ready"
            );
            let _ = state.inner.understanding.set(u);
        }
        let mcfg = state.config().tools.memory.clone();
        if let (true, Some(caps)) = (mcfg.enabled, state.inner.capabilities.get()) {
            // Facts live in an index of their own, out of reach of document answers.
            let memory_encoder: std::sync::Arc<dyn moltbot_core::Encoder> = match &encoder {
                Some(e) => e.clone(),
                None => std::sync::Arc::new(moltbot_knowledge::HashingEncoder::default()),
            };
            match moltbot_knowledge::Knowledge::open(data_dir.join("memory"), memory_encoder) {
                Ok(index) => caps.add_memory(std::sync::Arc::new(index), mcfg.recall_results),
                Err(e) => tracing::error!(cause = %e, "the memory index failed to open"),
            }
        }
        if kcfg.enabled {
            // A store that cannot open leaves routing on intents alone.
            match crate::understanding::open_knowledge(&kcfg, encoder, &data_dir) {
                Ok(knowledge) => {
                    tracing::info!(chunks = knowledge.chunk_count(), "knowledge store ready");
                    let _ = state.inner.knowledge.set(std::sync::Arc::new(knowledge));
                }
                Err(e) => tracing::error!(
                    cause = format!("{e:#}"),
                    "the knowledge store failed to open"
                ),
            }
        }
        let router = moltbot_engine::DialogueRouter::new(
            state.inner.understanding.get().cloned(),
            state.inner.knowledge.get().cloned(),
            rcfg,
            ucfg.min_confidence,
        );
        state.engine().set_router(std::sync::Arc::new(router));
        tracing::info!("turn router ready");
        Ok(())
    };
    let spawned = std::thread::Builder::new()
        .name("moltbot-understanding-load".into())
        .spawn(move || {
            if let Err(e) = load() {
                tracing::error!(
                    cause = format!("{e:#}"),
                    "understanding or knowledge failed to load"
                );
            }
        });
    if let Err(e) = spawned {
        tracing::error!(cause = %e, "cannot start the understanding loader thread");
    }
}

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::new(cfg.gateway.bind, cfg.gateway.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is another gateway running?)"))?;
    let versions = Arc::new(OnceLock::new());
    let engine = start_engine_with(&cfg, Some(versions.clone())).await?;
    let stop_channels = CancellationToken::new();
    // One supervisor restarts every background component and tells `/health` about them.
    let supervisor = moltbot_core::Supervisor::new();
    // Scale-out: turns go through Kafka to whichever replica owns their session. Stopped
    // only after HTTP has drained, so callers still waiting get their replies.
    let stop_bus = CancellationToken::new();
    if cfg.bus.kind == moltbot_core::config::BusKind::Kafka {
        let bus =
            moltbot_bus::KafkaBus::start(&cfg.bus, engine.clone(), &supervisor, stop_bus.clone())
                .await
                .context("cannot start the Kafka message bus (bus.kind = \"kafka\")")?;
        engine.set_bus(Arc::new(bus));
    }
    let (hub, webhooks) = start_channels(&cfg, &engine, &supervisor, stop_channels.clone())?;
    let cfg_grace = cfg.gateway.shutdown_grace_secs;
    let caps = moltbot_gateway::capabilities::Capabilities::build(&cfg, &engine);
    caps.start_scheduler(engine.clone(), &supervisor, stop_channels.clone());
    caps.watch_skills(stop_channels.clone());
    if let Some(hub) = &hub {
        caps.connect_channels(hub, &supervisor, stop_channels.clone());
    }
    let state = AppState::build(engine, cfg, hub.clone(), supervisor);
    let _ = state.inner.capabilities.set(caps.clone());
    let data_dir = state.config().data.resolved_dir();
    let _ = state
        .inner
        .model_admin
        .set(moltbot_gateway::routes::admin::ModelAdmin {
            versions,
            loader: Arc::new(crate::providers::ConfigLoader {
                cfg: state.config().model.clone(),
                env: EnvSnapshot::capture(&data_dir),
                data_dir,
            }),
        });
    start_understanding(&state);
    tracing::info!(
        "moltbot {} listening on http://{addr} (Control UI at /, OpenAI API at /v1, WebSocket at ws://{addr})",
        env!("CARGO_PKG_VERSION")
    );
    let grace = Duration::from_secs(cfg_grace);
    // On the signal, channels stop taking new turns at once (what they received stays in
    // the inbox and runs at the next start) while HTTP drains its in-flight turns.
    let signal = {
        let stop = stop_channels.clone();
        async move {
            shutdown_signal().await;
            stop.cancel();
        }
    };
    let served = moltbot_gateway::run_with(listener, state, webhooks, signal).await;
    stop_channels.cancel();
    if let Some(hub) = hub {
        if tokio::time::timeout(grace, hub.wait()).await.is_err() {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "channels did not stop within the grace period"
            );
        }
    }
    caps.shutdown().await;
    stop_bus.cancel();
    served?;
    tracing::info!("gateway stopped");
    Ok(())
}

/// Start the enabled messaging channels; returns the hub and the webhook routes.
pub fn start_channels(
    cfg: &Config,
    engine: &Engine,
    supervisor: &moltbot_core::Supervisor,
    stop: CancellationToken,
) -> anyhow::Result<(Option<ChannelHub>, axum::Router)> {
    let enabled = cfg.channels.enabled();
    if enabled.is_empty() {
        return Ok((None, axum::Router::new()));
    }
    let sink = HubSink::new(engine.store().clone());
    let built = moltbot_channels::registry::build(&cfg.channels, &sink)
        .context("cannot start the messaging channels")?;
    tracing::info!(channels = enabled.join(","), "messaging channels starting");
    let hub = ChannelHub::start_supervised(
        engine.clone(),
        cfg.channels.clone(),
        sink,
        built.channels,
        stop,
        supervisor.clone(),
        cfg.bus.resolved_replica_id(),
    );
    Ok((Some(hub), built.routes))
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
