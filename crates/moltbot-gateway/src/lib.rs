//! The moltbot gateway: one port serving REST, SSE, the OpenAI-compatible API, the
//! OpenClaw-compatible WebSocket protocol, health probes, metrics and the Control UI.
//!
//! # Layout
//! - [`app`] builds the router from an [`AppState`]; [`run`] serves it until `shutdown`
//!   resolves, then drains in-flight turns within the configured grace period.
//! - [`state`]: [`AppState`] (engine, config, admission semaphore, metrics handle).
//! - [`error`]: [`ApiError`], the single mapping from failures to HTTP responses.
//! - [`extract`]: the JSON extractor with our error bodies (400 naming the field, 413).
//! - [`auth`]: the bearer-token middleware.
//! - [`metrics`]: the Prometheus recorder and the per-route HTTP middleware; [`gpu`]: GPU
//!   gauges read with `nvidia-smi` when a GPU is present.
//! - [`routes`]: `health` (probes, metrics), `chat` (`/api/v1/chat`, sessions), `openai`
//!   (`/v1/*`), `channels` (channel status, sending, pairing), `ui` (the Control UI).
//! - [`capabilities`]: the tool registry, approvals and the cron scheduler as the gateway
//!   runs them (`routes::capabilities` serves them).
//! - [`ws`]: OpenClaw gateway protocol v4 over WebSocket.
//! - [`turns`]: running a streamed turn in its own task.

pub mod auth;
pub mod capabilities;
pub mod error;
pub mod extract;
pub mod gpu;
pub mod metrics;
pub mod routes;
pub mod state;
pub mod turns;
pub mod ws;

pub use error::ApiError;
pub use state::AppState;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;

/// The whole HTTP surface.
pub fn app(state: AppState) -> Router {
    app_with(state, Router::new())
}

/// [`app`] plus `webhooks`: the channels' inbound routes (Telegram, WhatsApp, Slack). They
/// check their platform's own signature or secret instead of our bearer token, and are
/// served whatever the `Host` (platforms reach them through a public name).
pub fn app_with(state: AppState, webhooks: Router) -> Router {
    use routes::{capabilities, channels, chat, health, knowledge, openai, understand};
    let limit = state.config().gateway.max_body_bytes;
    let open = Router::new()
        .route("/health", get(health::health))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/ready", get(health::readyz))
        .route("/startupz", get(health::startupz))
        .route("/startup", get(health::startupz))
        .route("/", get(root))
        .route("/ui/app.js", get(routes::ui::script))
        .route("/ui/app.css", get(routes::ui::style));
    let metrics = Router::new().route("/metrics", get(health::metrics));
    let metrics = if state.config().gateway.public_metrics {
        metrics
    } else {
        metrics.route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
    };
    let admin_routes = Router::new()
        .route("/admin/models", get(routes::admin::models))
        .route("/admin/model/load", post(routes::admin::load))
        .route("/admin/model/promote", post(routes::admin::promote))
        .route("/admin/model/rollback", post(routes::admin::rollback))
        .route("/admin/traffic", post(routes::admin::traffic))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            routes::admin::require_admin,
        ));
    let api = Router::new()
        .route("/api/v1/chat", post(chat::chat))
        .route("/api/v1/sessions", get(chat::list_sessions))
        .route(
            "/api/v1/sessions/{id}",
            get(chat::get_session).delete(chat::delete_session),
        )
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{id}", get(openai::get_model))
        .route("/api/v1/channels", get(channels::status))
        .route("/api/v1/channels/send", post(channels::send))
        .route("/api/v1/pairing", get(channels::pairing_list))
        .route("/api/v1/pairing/approve", post(channels::pairing_approve))
        .route("/api/v1/understand", post(understand::understand))
        .route("/api/v1/understand/reload", post(understand::reload))
        .route("/api/v1/capabilities", get(capabilities::list))
        .route("/api/v1/approvals", get(capabilities::approvals))
        .route("/api/v1/approvals/{id}", post(capabilities::decide))
        .route(
            "/api/v1/cron",
            get(capabilities::cron_list).post(capabilities::cron_add),
        )
        .route(
            "/api/v1/cron/{id}",
            axum::routing::delete(capabilities::cron_remove),
        )
        .route("/api/v1/cron/{id}/run", post(capabilities::cron_run))
        .route("/api/v1/cron/{id}/runs", get(capabilities::cron_runs))
        .route("/api/v1/knowledge", get(knowledge::list))
        .route("/api/v1/knowledge/search", post(knowledge::search))
        .route("/api/v1/knowledge/ingest", post(knowledge::ingest))
        .route("/api/v1/knowledge/remove", post(knowledge::remove))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ));
    let guarded = open
        .merge(metrics)
        .merge(api)
        .merge(admin_routes)
        .fallback(fallback)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::loopback_guard,
        ))
        .with_state(state);
    webhooks
        .merge(guarded)
        .layer(DefaultBodyLimit::max(limit))
        .layer(Extension(extract::BodyLimit(limit)))
        .layer(middleware::from_fn(metrics::track_http))
}

/// `/`: the Control UI, or the OpenClaw WebSocket protocol when the request is an upgrade.
async fn root(State(state): State<AppState>, req: Request) -> Response {
    upgrade_or(state, req, |_| routes::ui::page()).await
}

/// Any other path: OpenClaw clients may upgrade on any path; everything else is a JSON 404.
async fn fallback(State(state): State<AppState>, req: Request) -> Response {
    upgrade_or(state, req, |path| {
        ApiError::NotFound(format!("no route for {path}")).into_response()
    })
    .await
}

/// The OpenClaw WebSocket protocol when `req` is an upgrade (from an allowed origin), else
/// `otherwise(path)`.
async fn upgrade_or(
    state: AppState,
    req: Request,
    otherwise: impl FnOnce(&str) -> Response,
) -> Response {
    let peer = auth::peer_ip(&req);
    let (mut parts, _body) = req.into_parts();
    match <WebSocketUpgrade as axum::extract::FromRequestParts<AppState>>::from_request_parts(
        &mut parts, &state,
    )
    .await
    {
        Ok(ws) => match auth::check_ws_origin(&parts.headers) {
            Ok(()) => ws::upgrade(state, ws, peer),
            Err(e) => e.into_response(),
        },
        Err(_) => otherwise(parts.uri.path()),
    }
}

/// Serve until `shutdown` resolves; then stop accepting, close WebSocket sessions (their runs
/// stop with them), let
/// in-flight turns finish (bounded by `gateway.shutdown_grace_secs`) and return.
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    run_with(listener, state, Router::new(), shutdown).await
}

/// [`run`] serving [`app_with`]`(state, webhooks)`.
pub async fn run_with(
    listener: TcpListener,
    state: AppState,
    webhooks: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let grace = Duration::from_secs(state.config().gateway.shutdown_grace_secs);
    let token = state.inner.shutdown.clone();
    let turns = state.inner.turns.clone();
    // The Prometheus recorder keeps raw histogram samples until it is drained; without
    // this, memory would grow with every request on a gateway nobody scrapes.
    // It also reads the GPUs every 5 s when `nvidia-smi` is installed.
    if let Some(handle) = state.inner.metrics.clone() {
        let stop = token.clone();
        let smi = gpu::find_nvidia_smi();
        state
            .inner
            .supervisor
            .spawn("metrics.upkeep", token.clone(), move || {
                let (handle, stop, smi) = (handle.clone(), stop.clone(), smi.clone());
                async move {
                    let mut every = tokio::time::interval(Duration::from_secs(5));
                    loop {
                        tokio::select! {
                            _ = every.tick() => {}
                            () = stop.cancelled() => return Ok(()),
                        }
                        handle.run_upkeep();
                        if let Some(smi) = &smi {
                            match gpu::sample(smi).await {
                                Ok(samples) => gpu::record(&samples),
                                Err(e) => tracing::debug!(cause = %e, "no GPU reading"),
                            }
                        }
                    }
                }
            });
    }
    let signal_token = token.clone();
    let drain_delay = Duration::from_secs(state.config().gateway.drain_delay_secs);
    let drain_state = state.clone();
    let app = app_with(state, webhooks);
    let signal = async move {
        shutdown.await;
        if !drain_delay.is_zero() {
            // Out of rotation first: probes say 503 while requests are still served.
            drain_state
                .inner
                .draining
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(
                delay_secs = drain_delay.as_secs(),
                "shutdown requested: probes report draining; still serving meanwhile"
            );
            tokio::time::sleep(drain_delay).await;
        }
        tracing::info!("shutdown: no new connections; draining in-flight turns");
        signal_token.cancel();
    };
    // Small frames (SSE deltas, WebSocket events) must not wait for Nagle's algorithm.
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    // Connection info gives the auth limiter each client's address.
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(signal);
    let mut server = tokio::spawn(async move { server.await });
    tokio::select! {
        finished = &mut server => {
            // The server stopped on its own (an accept error): report it.
            return finished.map_err(std::io::Error::other)?;
        }
        () = token.cancelled() => {}
    }
    turns.close();
    let abort = server.abort_handle();
    let drained = tokio::time::timeout(grace, async {
        turns.wait().await;
        server.await
    })
    .await;
    match drained {
        Ok(Ok(result)) => result,
        Ok(Err(join)) => Err(std::io::Error::other(join)),
        Err(_) => {
            tracing::warn!(
                grace_secs = grace.as_secs(),
                "shutdown grace period over; closing remaining connections"
            );
            abort.abort();
            Ok(())
        }
    }
}
