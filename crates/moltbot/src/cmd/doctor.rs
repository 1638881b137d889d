//! `moltbot doctor`: check what the gateway needs, print the environment, exit 1 on failure.

use crate::cli::DoctorArgs;
use moltbot_core::config::ProviderKind;
use moltbot_core::envinfo::EnvSnapshot;
use serde::Serialize;
use std::path::Path;
use std::process::ExitCode;

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Level {
    Ok,
    Warn,
    Fail,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    level: Level,
    detail: String,
}

fn check(name: &'static str, level: Level, detail: impl Into<String>) -> Check {
    Check {
        name,
        level,
        detail: detail.into(),
    }
}

pub fn run(config_path: Option<&Path>, args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let mut checks = Vec::new();
    let cfg = match super::load_config(config_path) {
        Ok(c) => {
            let source = config_path
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| {
                    let p = moltbot_core::config::default_config_path();
                    if p.exists() {
                        p.display().to_string()
                    } else {
                        "built-in defaults (no config file)".into()
                    }
                });
            checks.push(check("config", Level::Ok, source));
            c
        }
        Err(e) => {
            checks.push(check("config", Level::Fail, format!("{e:#}")));
            return report(&args, checks, None);
        }
    };
    match cfg.check_bind_safety() {
        Ok(()) => checks.push(check(
            "auth",
            Level::Ok,
            if cfg.gateway.token.is_some() {
                "bearer token set".to_string()
            } else {
                format!("no token; bound to loopback {}", cfg.gateway.bind)
            },
        )),
        Err(e) => checks.push(check("auth", Level::Fail, e.to_string())),
    }

    let data_dir = cfg.data.resolved_dir();
    let probe = data_dir.join(".doctor-write-test");
    match std::fs::create_dir_all(&data_dir).and_then(|()| std::fs::write(&probe, b"ok")) {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            checks.push(check("data dir", Level::Ok, data_dir.display().to_string()));
        }
        Err(e) => checks.push(check(
            "data dir",
            Level::Fail,
            format!("{} is not writable: {e}", data_dir.display()),
        )),
    }

    let rt = super::small_runtime()?;
    let db = data_dir.join("moltbot.db");
    match moltbot_store::Store::open(&db) {
        Ok(store) => match rt.block_on(store.list_sessions(1, 0)) {
            Ok((_, n)) => checks.push(check(
                "store",
                Level::Ok,
                format!("{} ({n} sessions)", db.display()),
            )),
            Err(e) => checks.push(check("store", Level::Fail, e.to_string())),
        },
        Err(e) => checks.push(check("store", Level::Fail, e.to_string())),
    }

    let addr = std::net::SocketAddr::new(cfg.gateway.bind, cfg.gateway.port);
    match std::net::TcpListener::bind(addr) {
        Ok(_) => checks.push(check("port", Level::Ok, format!("{addr} is free"))),
        Err(_) => {
            let running = rt.block_on(async {
                let url = format!("http://{addr}/health");
                reqwest::Client::new()
                    .get(url)
                    .timeout(std::time::Duration::from_secs(2))
                    .send()
                    .await
                    .ok()
                    .and_then(|r| r.status().is_success().then_some(()))
            });
            match running {
                Some(()) => checks.push(check(
                    "port",
                    Level::Ok,
                    format!("{addr} is in use by a running moltbot gateway (healthy)"),
                )),
                None => checks.push(check(
                    "port",
                    Level::Fail,
                    format!("{addr} is in use by another program; set gateway.port or --port"),
                )),
            }
        }
    }

    for kind in &cfg.model.providers {
        match kind {
            ProviderKind::Local => {
                let built = cfg!(feature = "local");
                match crate::providers::local_model_path(&cfg.model, &data_dir, false) {
                    Ok(p) if p.is_file() && built => checks.push(check(
                        "model",
                        Level::Ok,
                        format!("local GGUF {}", p.display()),
                    )),
                    Ok(p) if built => checks.push(check(
                        "model",
                        Level::Warn,
                        format!(
                            "{} is missing; the gateway fetches it on first run \
                             (or run `moltbot models fetch`)",
                            p.display()
                        ),
                    )),
                    Ok(_) => checks.push(check(
                        "model",
                        Level::Fail,
                        "provider \"local\" configured but this build lacks the `local` feature",
                    )),
                    Err(e) => checks.push(check("model", Level::Fail, format!("{e:#}"))),
                }
            }
            ProviderKind::Openai => {
                let o = &cfg.model.openai;
                let level = if o.api_key.is_none() && o.base_url.starts_with("https://") {
                    Level::Warn
                } else {
                    Level::Ok
                };
                let key = if o.api_key.is_some() {
                    "key set"
                } else {
                    "no key"
                };
                checks.push(check(
                    "model",
                    level,
                    format!("openai-compatible {} model {} ({key})", o.base_url, o.model),
                ));
            }
            ProviderKind::Anthropic => {
                let a = &cfg.model.anthropic;
                let level = if a.api_key.is_none() {
                    Level::Fail
                } else {
                    Level::Ok
                };
                checks.push(check(
                    "model",
                    level,
                    format!(
                        "anthropic {} model {} ({})",
                        a.base_url,
                        a.model,
                        if a.api_key.is_some() {
                            "key set"
                        } else {
                            "no key: set model.anthropic.api_key"
                        }
                    ),
                ));
            }
        }
    }
    if cfg.tools.skills.enabled {
        // A broken skill fails the doctor (it is left out at run time, which is easy to
        // miss); a missing folder is fine: skills are optional.
        let dir = moltbot_tools::skills::resolve_dir(&cfg.tools.skills.dir, &data_dir);
        for c in moltbot_tools::skills::check(&dir) {
            let level = if c.ok { Level::Ok } else { Level::Fail };
            checks.push(check("skill", level, format!("{}: {}", c.name, c.message)));
        }
    }
    if let Some(browser) = cfg
        .tools
        .browser
        .enabled
        .then(|| moltbot_tools::browser::find_executable(&cfg.tools.browser.executable))
    {
        checks.push(match browser {
            Ok(p) => check("browser", Level::Ok, p.display().to_string()),
            Err(e) => check(
                "browser",
                Level::Warn,
                format!("{e}; the browser tool is unavailable (install chromium)"),
            ),
        });
    }
    let service = super::daemon::service_state();
    let level = if service.is_down() {
        Level::Warn
    } else {
        Level::Ok
    };
    checks.push(check("daemon", level, service.summary()));
    let env = EnvSnapshot::capture(&data_dir);
    if let Some(free) = env.disk_free_bytes {
        let level = if free < 500_000_000 {
            Level::Warn
        } else {
            Level::Ok
        };
        checks.push(check(
            "disk",
            level,
            format!("{:.1} GB free", free as f64 / 1e9),
        ));
    }
    report(&args, checks, Some(env))
}

fn report(
    args: &DoctorArgs,
    checks: Vec<Check>,
    env: Option<EnvSnapshot>,
) -> anyhow::Result<ExitCode> {
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if args.json {
        println!(
            "{}",
            serde_json::json!({"ok": !failed, "checks": checks, "environment": env})
        );
    } else {
        for c in &checks {
            let mark = match c.level {
                Level::Ok => "ok  ",
                Level::Warn => "warn",
                Level::Fail => "FAIL",
            };
            println!("[{mark}] {:<9} {}", c.name, c.detail);
        }
        if let Some(e) = env {
            println!(
                "environment: {} {} ({}), {} CPUs ({} cores) {}, {:.1} GB RAM ({:.1} GB available){}",
                e.os,
                e.os_version.as_deref().unwrap_or(""),
                e.arch,
                e.cpu_count,
                e.physical_cores.map(|c| c.to_string()).unwrap_or_else(|| "?".into()),
                e.cpu_brand,
                e.memory_total_bytes as f64 / 1e9,
                e.memory_available_bytes as f64 / 1e9,
                if e.gpus.is_empty() {
                    ", no GPU".to_string()
                } else {
                    format!(", GPU: {}", e.gpus.join(", "))
                }
            );
        }
        println!(
            "{}",
            if failed {
                "doctor: problems found"
            } else {
                "doctor: all good"
            }
        );
    }
    Ok(if failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
