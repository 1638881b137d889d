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

    let config_file = config_path
        .map(Path::to_path_buf)
        .unwrap_or_else(moltbot_core::config::default_config_path);
    if config_file.is_file() {
        // The config may hold tokens and API keys: only its owner should read it.
        checks.push(private_mode(
            "config permissions",
            &config_file,
            0o600,
            args.fix,
        ));
    }

    let data_dir = cfg.data.resolved_dir();
    if !data_dir.exists() {
        if args.fix {
            match create_private_dir(&data_dir) {
                Ok(()) => checks.push(check(
                    "data dir",
                    Level::Ok,
                    format!("fixed: created {}", data_dir.display()),
                )),
                Err(e) => checks.push(check(
                    "data dir",
                    Level::Fail,
                    format!("cannot create {}: {e}", data_dir.display()),
                )),
            }
        } else {
            checks.push(check(
                "data dir",
                Level::Warn,
                format!(
                    "{} does not exist yet (the gateway creates it; `doctor --fix` creates it now)",
                    data_dir.display()
                ),
            ));
        }
    }
    if data_dir.exists() {
        let probe = data_dir.join(".doctor-write-test");
        match std::fs::write(&probe, b"ok") {
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
        // Conversations, pairing codes and memories live here.
        checks.push(private_mode(
            "data dir permissions",
            &data_dir,
            0o700,
            args.fix,
        ));
    }

    let rt = super::small_runtime()?;
    let db = data_dir.join("moltbot.db");
    if cfg.data.database_url.is_some() {
        // Replicas share PostgreSQL: it must answer, and its schema is brought up to date.
        let opened = rt.block_on(async {
            let store = moltbot_store::Store::from_config(&cfg.data).await?;
            store.ping().await
        });
        checks.push(match opened {
            Ok(()) => check(
                "store",
                Level::Ok,
                "PostgreSQL (data.database_url) answers; schema up to date",
            ),
            Err(e) => check("store", Level::Fail, format!("PostgreSQL: {e}")),
        });
    } else if db.is_file() {
        checks.push(store_integrity(&db));
        checks.push(private_mode("store permissions", &db, 0o600, args.fix));
    } else if data_dir.exists() {
        match moltbot_store::Store::open(&db) {
            Ok(_) => checks.push(check(
                "store",
                Level::Ok,
                format!("{} (new, empty)", db.display()),
            )),
            Err(e) => checks.push(check("store", Level::Fail, e.to_string())),
        }
    } else {
        checks.push(check(
            "store",
            Level::Ok,
            format!("{} not created yet (the gateway creates it)", db.display()),
        ));
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
                    Ok(p) if built && args.fix => {
                        match crate::providers::local_model_path(&cfg.model, &data_dir, true) {
                            Ok(p) => checks.push(check(
                                "model",
                                Level::Ok,
                                format!("fixed: fetched local GGUF {}", p.display()),
                            )),
                            Err(e) => checks.push(check(
                                "model",
                                Level::Fail,
                                format!("{} is missing and the fetch failed: {e:#}", p.display()),
                            )),
                        }
                    }
                    Ok(p) if built => checks.push(check(
                        "model",
                        Level::Warn,
                        format!(
                            "{} is missing; the gateway fetches it on first run \
                             (or run `moltbot models fetch`, or `doctor --fix`)",
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
    for c in rt.block_on(channel_checks(&cfg)) {
        checks.push(c);
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
    let mut service = super::daemon::service_state();
    let mut fixed = "";
    if service.is_down() && args.fix {
        match super::daemon::start_service() {
            Ok(_) => {
                service = super::daemon::service_state();
                fixed = "fixed: started; ";
            }
            Err(e) => checks.push(check("daemon", Level::Fail, format!("cannot start: {e:#}"))),
        }
    }
    let level = if service.is_down() {
        Level::Warn
    } else {
        Level::Ok
    };
    checks.push(check(
        "daemon",
        level,
        format!("{fixed}{}", service.summary()),
    ));
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

/// Whether `path` is private to its owner (no bits outside `max_mode`); with `fix`, take
/// away the extra bits.
fn private_mode(name: &'static str, path: &Path, max_mode: u32, fix: bool) -> Check {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = match std::fs::metadata(path) {
            Ok(m) => m.permissions().mode() & 0o777,
            Err(e) => return check(name, Level::Warn, format!("{}: {e}", path.display())),
        };
        let extra = mode & !max_mode;
        if extra == 0 {
            return check(name, Level::Ok, format!("{mode:o} {}", path.display()));
        }
        if fix {
            let wanted = mode & max_mode;
            return match std::fs::set_permissions(path, std::fs::Permissions::from_mode(wanted)) {
                Ok(()) => check(
                    name,
                    Level::Ok,
                    format!("fixed: {mode:o} -> {wanted:o} {}", path.display()),
                ),
                Err(e) => check(
                    name,
                    Level::Fail,
                    format!("cannot change the mode of {}: {e}", path.display()),
                ),
            };
        }
        check(
            name,
            Level::Warn,
            format!(
                "{} is mode {mode:o}: others can read it (want {max_mode:o}; `doctor --fix` sets it)",
                path.display()
            ),
        )
    }
    #[cfg(not(unix))]
    {
        let _ = (max_mode, fix);
        check(name, Level::Ok, path.display().to_string())
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// SQLite's own check of the store's pages and indexes (read-only; a gateway may be
/// running). There is no safe automatic repair: a damaged store is restored from a backup.
fn store_integrity(db: &Path) -> Check {
    use rusqlite::OpenFlags;
    let conn = match rusqlite::Connection::open_with_flags(
        db,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    ) {
        Ok(c) => c,
        Err(e) => return check("store", Level::Fail, format!("{}: {e}", db.display())),
    };
    let _ = conn.busy_timeout(std::time::Duration::from_secs(5));
    let problems: Result<Vec<String>, rusqlite::Error> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut st| st.query_map([], |r| r.get::<_, String>(0))?.collect());
    let sessions: Result<i64, rusqlite::Error> =
        conn.query_row("SELECT count(*) FROM sessions", [], |r| r.get(0));
    match (problems, sessions) {
        (Ok(p), Ok(n)) if p == ["ok"] => check(
            "store",
            Level::Ok,
            format!("{} (integrity ok, {n} sessions)", db.display()),
        ),
        (Ok(p), _) if p != ["ok"] => check(
            "store",
            Level::Fail,
            format!(
                "{} is damaged: {}; restore it from a backup",
                db.display(),
                p.join("; ")
            ),
        ),
        (Err(e), _) | (_, Err(e)) => check("store", Level::Fail, format!("{}: {e}", db.display())),
        (Ok(_), Ok(_)) => unreachable!("both arms above cover an Ok pair"),
    }
}

/// Each enabled channel's platform, asked who we are with the configured credentials: a
/// refused token fails, an unreachable platform warns (the gateway retries).
async fn channel_checks(cfg: &moltbot_core::Config) -> Vec<Check> {
    let http = match reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(8))
        .build()
    {
        Ok(c) => c,
        Err(e) => return vec![check("channels", Level::Warn, e.to_string())],
    };
    let ch = &cfg.channels;
    let mut probes: Vec<(&'static str, Option<reqwest::RequestBuilder>)> = Vec::new();
    if ch.telegram.enabled {
        probes.push((
            "telegram",
            ch.telegram.bot_token.as_ref().map(|t| {
                http.get(format!(
                    "{}/bot{}/getMe",
                    ch.telegram.api_base.trim_end_matches('/'),
                    t.expose()
                ))
            }),
        ));
    }
    if ch.whatsapp.enabled {
        probes.push((
            "whatsapp",
            ch.whatsapp.access_token.as_ref().map(|t| {
                http.get(format!(
                    "{}/{}?fields=id",
                    ch.whatsapp.api_base.trim_end_matches('/'),
                    ch.whatsapp.phone_number_id
                ))
                .bearer_auth(t.expose())
            }),
        ));
    }
    if ch.discord.enabled {
        probes.push((
            "discord",
            ch.discord.bot_token.as_ref().map(|t| {
                http.get(format!(
                    "{}/users/@me",
                    ch.discord.api_base.trim_end_matches('/')
                ))
                .header("Authorization", format!("Bot {}", t.expose()))
            }),
        ));
    }
    if ch.slack.enabled {
        probes.push((
            "slack",
            ch.slack.bot_token.as_ref().map(|t| {
                http.post(format!(
                    "{}/auth.test",
                    ch.slack.api_base.trim_end_matches('/')
                ))
                .bearer_auth(t.expose())
            }),
        ));
    }
    let mut out = Vec::new();
    for (name, probe) in probes {
        let Some(probe) = probe else {
            out.push(check(
                "channel",
                Level::Fail,
                format!("{name}: enabled but its token is not set"),
            ));
            continue;
        };
        out.push(match probe.send().await {
            Ok(resp) if resp.status().is_success() => {
                // Slack answers 200 with `ok: false` for a bad token.
                let body: serde_json::Value = resp.json().await.unwrap_or_default();
                if body.get("ok") == Some(&serde_json::Value::Bool(false)) {
                    check(
                        "channel",
                        Level::Fail,
                        format!(
                            "{name}: the platform refused the token ({})",
                            body["error"].as_str().unwrap_or("no reason given")
                        ),
                    )
                } else {
                    check(
                        "channel",
                        Level::Ok,
                        format!("{name}: reachable, token accepted"),
                    )
                }
            }
            Ok(resp) if matches!(resp.status().as_u16(), 401 | 403 | 404) => check(
                "channel",
                Level::Fail,
                format!(
                    "{name}: the platform refused the token (HTTP {})",
                    resp.status().as_u16()
                ),
            ),
            Ok(resp) => check(
                "channel",
                Level::Warn,
                format!(
                    "{name}: the platform answered HTTP {}",
                    resp.status().as_u16()
                ),
            ),
            // The error text of reqwest holds the URL, and Telegram's URL holds the token.
            Err(e) => check(
                "channel",
                Level::Warn,
                format!(
                    "{name}: unreachable ({}); the gateway keeps retrying",
                    if e.is_timeout() {
                        "timed out"
                    } else if e.is_connect() {
                        "cannot connect"
                    } else {
                        "request failed"
                    }
                ),
            ),
        });
    }
    out
}

fn report(
    args: &DoctorArgs,
    checks: Vec<Check>,
    env: Option<EnvSnapshot>,
) -> anyhow::Result<ExitCode> {
    let failed = checks.iter().any(|c| c.level == Level::Fail);
    if args.json {
        outln!(
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
            outln!("[{mark}] {:<9} {}", c.name, c.detail);
        }
        if let Some(e) = env {
            outln!(
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
        outln!(
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
