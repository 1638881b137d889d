//! Health, probes and metrics. None of these need the bearer token.

use crate::state::AppState;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use moltbot_engine::ModelState;
use serde_json::{json, Value};

/// Whether the gateway as a whole can serve turns, whether every supervised component is
/// healthy (from the same snapshot as the JSON), and each component's status.
async fn components(state: &AppState) -> (bool, bool, Value) {
    let backend = state.engine().store().backend_name();
    let store = match state.engine().store().ping().await {
        Ok(()) => json!({"status": "ok", "backend": backend}),
        Err(e) => json!({"status": "down", "backend": backend, "error": e.to_string()}),
    };
    let store_ok = store["status"] == "ok";
    let model_state = state.engine().model().state();
    let model = match &model_state {
        ModelState::Ready(m) => json!({"status": "ok", "id": m.id()}),
        ModelState::Loading(what) => json!({"status": "loading", "detail": what}),
        ModelState::Failed(e) => {
            tracing::debug!(cause = %e, "health: model failed to load");
            json!({"status": "down", "error": "the model failed to load; see the gateway log"})
        }
    };
    let admission = &state.inner.admission;
    let limit = state.config().gateway.max_concurrent_turns;
    let (cached, cache_limit, cached_bytes, cache_budget) = state.engine().session_cache_usage();
    let gateway = json!({
        "status": "ok",
        "turns_in_flight": limit - admission.available_permits(),
        "max_concurrent_turns": limit,
        "session_cache": {"sessions": cached, "limit": cache_limit,
            "bytes": cached_bytes, "budget_bytes": cache_budget},
    });
    // With a message bus, turns need it: a replica that cannot reach the broker is unready.
    let (bus, bus_ok) = match state.engine().bus() {
        Some(bus) => {
            let h = bus.health();
            let status = if h.ok { "ok" } else { "down" };
            (
                json!({"status": status, "kind": h.kind, "detail": h.detail}),
                h.ok,
            )
        }
        None => (json!({"status": "ok", "kind": "in_process"}), true),
    };
    let ok = store_ok && bus_ok && matches!(model_state, ModelState::Ready(_));
    // Channels are reported but do not make the gateway unready: HTTP and the other
    // channels keep serving while one platform is unreachable.
    let mut channels = serde_json::Map::new();
    if let Some(hub) = &state.inner.channels {
        for s in hub.status().await {
            channels.insert(
                s.channel.to_string(),
                serde_json::to_value(&s).unwrap_or(Value::Null),
            );
        }
    }
    // Background components are reported the same way: a restarting scheduler degrades
    // the gateway but HTTP turns still work.
    let statuses = state.inner.supervisor.statuses();
    let supervised_ok = statuses
        .values()
        .all(moltbot_core::supervise::ComponentStatus::is_healthy);
    let supervised = serde_json::to_value(statuses).unwrap_or(Value::Null);
    (
        ok,
        supervised_ok,
        json!({
            "store": store,
            "bus": bus,
            "model": model,
            "gateway": gateway,
            "channels": channels,
            "supervised": supervised,
        }),
    )
}

/// `GET /health`: overall status, components, version, uptime and the environment.
pub async fn health(State(state): State<AppState>) -> Response {
    let (ok, supervised_ok, components) = components(&state).await;
    let loading = matches!(state.engine().model().state(), ModelState::Loading(_));
    let channel_down = components["channels"]
        .as_object()
        .is_some_and(|m| m.values().any(|c| c["status"] == "error"));
    let component_down = !supervised_ok;
    let draining = state.draining();
    let status = if draining {
        "draining"
    } else if ok && (channel_down || component_down) {
        "degraded"
    } else if ok {
        "ok"
    } else if loading {
        "starting"
    } else {
        "degraded"
    };
    let mut env = serde_json::to_value(&state.inner.env).unwrap_or(Value::Null);
    // `/health` is open to anyone who can reach the port: no host name (paths and load
    // errors are left out of the components for the same reason; `doctor` shows them).
    if let Some(obj) = env.as_object_mut() {
        obj.remove("hostname");
    }
    // Memory changes; the rest of the snapshot is fixed for the process lifetime.
    if let Some(avail) = live_available_memory() {
        env["memory_available_bytes"] = json!(avail);
    }
    let body = json!({
        "ok": ok,
        "status": status,
        "version": state.inner.version,
        "uptime_ms": state.uptime_ms(),
        "components": components,
        "environment": env,
    });
    let code = if draining {
        StatusCode::SERVICE_UNAVAILABLE
    } else if ok || loading {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

fn live_available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `GET /healthz`: liveness. The process answers, so it is live.
pub async fn healthz() -> Json<Value> {
    Json(json!({"ok": true, "status": "live"}))
}

/// `GET /readyz`: ready to serve turns (store reachable, model loaded).
pub async fn readyz(State(state): State<AppState>) -> Response {
    let (ok, _, components) = components(&state).await;
    let failing: Vec<String> = components
        .as_object()
        .map(|m| {
            m.iter()
                // Only the components that decide readiness have a top-level `status`;
                // the maps of channels and supervised components do not.
                .filter(|(_, v)| v.get("status").is_some() && v["status"] != "ok")
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let ok = ok && !state.draining();
    let mut body = json!({"ready": ok, "failing": failing, "uptimeMs": state.uptime_ms()});
    if state.draining() {
        body["draining"] = json!(true);
    }
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body)).into_response()
}

/// `GET /startupz`: 503 while the model is still loading, 200 after.
pub async fn startupz(State(state): State<AppState>) -> Response {
    match state.engine().model().state() {
        ModelState::Loading(what) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "starting", "pendingReason": what})),
        )
            .into_response(),
        ModelState::Ready(_) | ModelState::Failed(_) => Json(json!({
            "ok": true,
            "status": "started",
            "version": state.inner.version,
            "uptimeMs": state.uptime_ms(),
        }))
        .into_response(),
    }
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Response {
    metrics::gauge!("moltbot_uptime_seconds").set(state.inner.started.elapsed().as_secs_f64());
    crate::metrics::collect_process();
    match &state.inner.metrics {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            handle.render(),
        )
            .into_response(),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed\n",
        )
            .into_response(),
    }
}
