//! `moltbot status`: one screen with the config path, data dir, service state and the
//! running gateway's health (components, model, version, uptime).
//!
//! Exit codes: 0 (a stopped gateway is a state, not a failure), 1 the config is invalid.

use super::daemon::{service_state, ServiceState};
use moltbot_core::config::default_config_path;
use moltbot_core::Config;
use serde_json::Value;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub fn run(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let path = config_path
        .map(Path::to_path_buf)
        .unwrap_or_else(default_config_path);
    let cfg = match super::load_config(config_path) {
        Ok(cfg) => {
            if path.exists() {
                outln!("config:   {}", path.display());
            } else {
                outln!(
                    "config:   {} (not found: built-in defaults; run `moltbot onboard`)",
                    path.display()
                );
            }
            cfg
        }
        Err(e) => {
            outln!("config:   {} (invalid)", path.display());
            eprintln!("error: {e:#}");
            return Ok(ExitCode::from(1));
        }
    };
    outln!("data dir: {}", cfg.data.resolved_dir().display());
    print_service(&service_state());
    print_health(&cfg)?;
    Ok(ExitCode::SUCCESS)
}

pub fn print_service(state: &ServiceState) {
    outln!("service:  {}", state.summary());
}

/// The gateway's base URL from the config (a wildcard bind is reached on loopback).
pub fn gateway_url(cfg: &Config) -> String {
    let bind = cfg.gateway.bind;
    let host = if bind.is_unspecified() {
        "127.0.0.1".to_string()
    } else if bind.is_ipv6() {
        format!("[{bind}]")
    } else {
        bind.to_string()
    };
    format!("http://{host}:{}", cfg.gateway.port)
}

/// Ask `/health` (no token needed) and print a summary, or "not running".
pub fn print_health(cfg: &Config) -> anyhow::Result<()> {
    let url = format!("{}/health", gateway_url(cfg));
    let rt = super::small_runtime()?;
    let body = rt.block_on(async {
        let resp = reqwest::Client::new()
            .get(&url)
            .timeout(Duration::from_secs(3))
            .send()
            .await
            .ok()?;
        resp.json::<Value>().await.ok()
    });
    match body {
        None => outln!("gateway:  not running (nothing answers at {url})"),
        Some(h) => {
            for line in health_lines(&h) {
                outln!("{line}");
            }
        }
    }
    Ok(())
}

/// The `/health` body as a few lines.
pub fn health_lines(h: &Value) -> Vec<String> {
    let c = &h["components"];
    let uptime = h["uptime_ms"].as_u64().map(|ms| human_duration(ms / 1000));
    let mut lines = vec![format!(
        "gateway:  {} (version {}, up {})",
        h["status"].as_str().unwrap_or("unknown"),
        h["version"].as_str().unwrap_or("?"),
        uptime.as_deref().unwrap_or("?"),
    )];
    let model = &c["model"];
    let model_detail = model["id"]
        .as_str()
        .or_else(|| model["detail"].as_str())
        .or_else(|| model["error"].as_str())
        .unwrap_or("");
    lines.push(format!(
        "  model:  {} {model_detail}",
        model["status"].as_str().unwrap_or("?")
    ));
    lines.push(format!(
        "  store:  {}",
        c["store"]["status"].as_str().unwrap_or("?")
    ));
    let g = &c["gateway"];
    if let (Some(n), Some(max)) = (
        g["turns_in_flight"].as_u64(),
        g["max_concurrent_turns"].as_u64(),
    ) {
        lines.push(format!("  turns:  {n} in flight (limit {max})"));
    }
    if let Some(channels) = c["channels"].as_object().filter(|m| !m.is_empty()) {
        let list: Vec<String> = channels
            .iter()
            .map(|(name, s)| format!("{name} {}", s["status"].as_str().unwrap_or("?")))
            .collect();
        lines.push(format!("  channels: {}", list.join(", ")));
    }
    lines
}

fn human_duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_summary() {
        let h = serde_json::json!({
            "ok": true, "status": "ok", "version": "0.1.0", "uptime_ms": 7_384_000,
            "components": {
                "store": {"status": "ok"},
                "model": {"status": "ok", "id": "smollm2-135m"},
                "gateway": {"status": "ok", "turns_in_flight": 1, "max_concurrent_turns": 256},
                "channels": {"telegram": {"status": "connected"}}
            }
        });
        let lines = health_lines(&h);
        assert_eq!(lines[0], "gateway:  ok (version 0.1.0, up 2h 3m)");
        assert!(lines.iter().any(|l| l == "  model:  ok smollm2-135m"));
        assert!(lines.iter().any(|l| l == "  channels: telegram connected"));
        assert_eq!(human_duration(59), "59s");
        assert_eq!(human_duration(90_000), "1d 1h");
    }
}
