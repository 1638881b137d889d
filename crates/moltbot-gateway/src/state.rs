//! Shared state of the gateway.

use moltbot_channels::ChannelHub;
use moltbot_core::envinfo::EnvSnapshot;
use moltbot_core::{Config, Secret, Supervisor};
use moltbot_engine::Engine;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub inner: Arc<StateInner>,
}

pub struct StateInner {
    pub engine: Engine,
    pub config: Config,
    pub token: Option<Secret>,
    pub started: Instant,
    pub boot_id: String,
    pub admission: Arc<Semaphore>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Snapshot taken at start-up; `/health` refreshes memory and disk on demand.
    pub env: EnvSnapshot,
    /// Fires when shutdown begins: streams and WebSocket connections end.
    pub shutdown: CancellationToken,
    /// In-flight turns; shutdown waits for them.
    pub turns: TaskTracker,
    pub version: &'static str,
    /// The messaging channels, when any is enabled.
    pub channels: Option<ChannelHub>,
    /// The intent model and encoder, set once they are loaded (start-up does not wait).
    pub understanding: std::sync::OnceLock<std::sync::Arc<moltbot_understand::Understanding>>,
    /// The knowledge store, set once it is open.
    pub knowledge: std::sync::OnceLock<std::sync::Arc<moltbot_knowledge::Knowledge>>,
    /// The tool registry, approvals and scheduled jobs, once started.
    pub capabilities: std::sync::OnceLock<Arc<crate::capabilities::Capabilities>>,
    /// Model versions and their loader for the admin API, once set up.
    pub model_admin: std::sync::OnceLock<crate::routes::admin::ModelAdmin>,
    /// The background components (channel loops, cron, notifiers); `/health` reads their
    /// states.
    pub supervisor: Supervisor,
    /// Set when shutdown was asked for and the gateway still serves during
    /// `gateway.drain_delay_secs`: the probes answer 503 `draining`.
    pub draining: std::sync::atomic::AtomicBool,
    /// Failed token checks per client address (`gateway.auth_failures_per_minute`).
    pub auth_limiter: crate::auth::AuthLimiter,
}

impl AppState {
    pub fn new(engine: Engine, config: Config) -> AppState {
        Self::with_channels(engine, config, None)
    }

    /// State with a running [`ChannelHub`] (its webhook routes are passed to [`crate::app`]
    /// separately, through [`crate::app_with`]).
    pub fn with_channels(engine: Engine, config: Config, channels: Option<ChannelHub>) -> AppState {
        Self::build(engine, config, channels, Supervisor::new())
    }

    /// State whose `/health` reports the components run by `supervisor` (the same one the
    /// channel hub and the scheduler were started with).
    pub fn build(
        engine: Engine,
        config: Config,
        channels: Option<ChannelHub>,
        supervisor: Supervisor,
    ) -> AppState {
        let data_dir = config.data.resolved_dir();
        let token = config.gateway.token.clone().filter(|t| !t.is_empty());
        AppState {
            inner: Arc::new(StateInner {
                engine,
                admission: Arc::new(Semaphore::new(config.gateway.max_concurrent_turns)),
                token,
                started: Instant::now(),
                boot_id: uuid::Uuid::new_v4().to_string(),
                metrics: crate::metrics::install(),
                env: EnvSnapshot::capture(&data_dir),
                shutdown: CancellationToken::new(),
                turns: TaskTracker::new(),
                version: env!("CARGO_PKG_VERSION"),
                channels,
                understanding: std::sync::OnceLock::new(),
                knowledge: std::sync::OnceLock::new(),
                capabilities: std::sync::OnceLock::new(),
                model_admin: std::sync::OnceLock::new(),
                supervisor,
                draining: std::sync::atomic::AtomicBool::new(false),
                auth_limiter: crate::auth::AuthLimiter::new(
                    config.gateway.auth_failures_per_minute,
                ),
                config,
            }),
        }
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// Admit one turn or refuse with 429. The permit lives as long as the turn, including
    /// a streamed response.
    pub fn admit(&self) -> Result<OwnedSemaphorePermit, ApiError> {
        self.inner
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| ApiError::TooManyRequests {
                limit: self.inner.config.gateway.max_concurrent_turns,
                retry_after_secs: 1,
            })
    }

    /// Constant-time check of a presented token. With no token configured, everything passes.
    pub fn token_ok(&self, presented: Option<&str>) -> bool {
        use subtle::ConstantTimeEq;
        match &self.inner.token {
            None => true,
            Some(expected) => presented
                .is_some_and(|p| bool::from(p.as_bytes().ct_eq(expected.expose().as_bytes()))),
        }
    }

    pub fn draining(&self) -> bool {
        self.inner
            .draining
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn uptime_ms(&self) -> u64 {
        self.inner.started.elapsed().as_millis() as u64
    }
}
