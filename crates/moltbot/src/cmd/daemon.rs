//! `moltbot daemon install|status|start|stop|uninstall`: run the gateway as a service of
//! the user's own service manager, with no root needed.
//!
//! - Linux: a systemd user unit `~/.config/systemd/user/moltbot.service` (or under
//!   `$XDG_CONFIG_HOME`), managed with `systemctl --user`; logs go to the journal:
//!   `journalctl --user -u moltbot.service -f`.
//! - macOS: a launchd agent `~/Library/LaunchAgents/ai.moltbot.gateway.plist`, loaded with
//!   `launchctl`; logs go to `<data dir>/logs/gateway.log`.
//!
//! `MOLTBOT_SYSTEMCTL=none` skips every `systemctl`/`launchctl` call (the files are still
//! written and removed): tests use it so they never touch the real user manager. Any
//! other value is the `systemctl` program to run.
//!
//! Exit codes: 0 done (also when the service manager is unreachable and the unit was
//! written: the commands to run are printed), 1 failure.

use anyhow::Context;
use clap::Subcommand;
use moltbot_core::config::default_config_path;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

pub const UNIT_NAME: &str = "moltbot.service";
pub const LAUNCHD_LABEL: &str = "ai.moltbot.gateway";
pub const JOURNAL_HINT: &str = "journalctl --user -u moltbot.service -f";

#[derive(Debug, Subcommand)]
pub enum DaemonCommand {
    /// Write the service (systemd user unit; launchd agent on macOS) for this binary and
    /// config, enable it and start it now.
    Install,
    /// Installed? enabled? active? and the gateway's health.
    Status,
    /// Start the installed service.
    Start,
    /// Stop the service (it starts again at the next login unless uninstalled).
    Stop,
    /// Stop, disable and remove the service.
    Uninstall,
}

pub fn run(config_path: Option<&Path>, command: DaemonCommand) -> anyhow::Result<ExitCode> {
    match command {
        DaemonCommand::Install => install(config_path),
        DaemonCommand::Status => {
            super::status::print_service(&service_state());
            let cfg = super::load_config(config_path)?;
            super::status::print_health(&cfg)?;
            Ok(ExitCode::SUCCESS)
        }
        DaemonCommand::Start => control(Action::Start),
        DaemonCommand::Stop => control(Action::Stop),
        DaemonCommand::Uninstall => uninstall(),
    }
}

/// What goes into the service definition.
#[derive(Debug, Clone)]
pub struct ServiceSpec {
    /// The `moltbot` binary, absolute.
    pub exe: PathBuf,
    /// The config file, absolute.
    pub config: PathBuf,
    /// Where launchd writes stdout/stderr (systemd uses the journal).
    pub log_file: PathBuf,
}

/// The systemd user unit. Hardening is limited to options that work without root in a user
/// manager (no `ProtectSystem=`/`PrivateTmp=`, which need namespaces a user manager may
/// not be allowed to create).
pub fn systemd_unit(spec: &ServiceSpec) -> String {
    format!(
        "# Written by `moltbot daemon install`; remove with `moltbot daemon uninstall`.\n\
         [Unit]\n\
         Description=moltbot AI assistant gateway\n\
         After=network-online.target\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={} gateway --config {}\n\
         Restart=on-failure\n\
         RestartSec=5\n\
         # The gateway drains in-flight turns for gateway.shutdown_grace_secs (30) on SIGTERM.\n\
         TimeoutStopSec=45\n\
         # Log filter override, e.g. RUST_LOG=debug (default: log.level in the config).\n\
         # Environment=RUST_LOG=info\n\
         UMask=0077\n\
         NoNewPrivileges=true\n\
         LockPersonality=true\n\
         RestrictRealtime=true\n\
         RestrictSUIDSGID=true\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        systemd_quote(&spec.exe),
        systemd_quote(&spec.config),
    )
}

/// One `ExecStart=` word: double-quoted, with `\`, `"` and systemd's `%` and `$`
/// specifiers escaped.
fn systemd_quote(p: &Path) -> String {
    let s = p.to_string_lossy();
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The launchd agent: started at login, restarted when it exits with an error.
pub fn launchd_plist(spec: &ServiceSpec) -> String {
    let x = |p: &Path| xml_escape(&p.to_string_lossy());
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">
<!-- Written by `moltbot daemon install`; remove with `moltbot daemon uninstall`. -->
<plist version="1.0">
<dict>
  <key>Label</key>
  <string>{LAUNCHD_LABEL}</string>
  <key>ProgramArguments</key>
  <array>
    <string>{}</string>
    <string>gateway</string>
    <string>--config</string>
    <string>{}</string>
  </array>
  <key>RunAtLoad</key>
  <true/>
  <key>KeepAlive</key>
  <dict>
    <key>SuccessfulExit</key>
    <false/>
  </dict>
  <key>ThrottleInterval</key>
  <integer>5</integer>
  <key>Umask</key>
  <integer>63</integer>
  <key>StandardOutPath</key>
  <string>{}</string>
  <key>StandardErrorPath</key>
  <string>{}</string>
</dict>
</plist>
"#,
        x(&spec.exe),
        x(&spec.config),
        x(&spec.log_file),
        x(&spec.log_file),
    )
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Manager {
    Systemd,
    Launchd,
}

impl Manager {
    pub fn current() -> Self {
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }

    /// Where the service file lives.
    pub fn service_file(self) -> PathBuf {
        let home = PathBuf::from(std::env::var_os("HOME").unwrap_or_else(|| ".".into()));
        match self {
            Manager::Systemd => std::env::var_os("XDG_CONFIG_HOME")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".config"))
                .join("systemd/user")
                .join(UNIT_NAME),
            Manager::Launchd => home
                .join("Library/LaunchAgents")
                .join(format!("{LAUNCHD_LABEL}.plist")),
        }
    }
}

/// The `systemctl` program, or `None` when `MOLTBOT_SYSTEMCTL=none`.
fn systemctl_program() -> Option<String> {
    match std::env::var("MOLTBOT_SYSTEMCTL") {
        Ok(v) if v == "none" => None,
        Ok(v) if !v.is_empty() => Some(v),
        _ => Some("systemctl".into()),
    }
}

/// Run a service-manager command. `Ok(None)`: skipped by `MOLTBOT_SYSTEMCTL=none`.
fn manager_cmd(manager: Manager, args: &[&str]) -> anyhow::Result<Option<std::process::Output>> {
    let Some(systemctl) = systemctl_program() else {
        return Ok(None);
    };
    let (program, full): (String, Vec<&str>) = match manager {
        Manager::Systemd => (systemctl, [&["--user"][..], args].concat()),
        Manager::Launchd => ("launchctl".into(), args.to_vec()),
    };
    let out = Command::new(&program)
        .args(&full)
        .stdin(std::process::Stdio::null())
        .output()
        .with_context(|| format!("running `{program} {}`", full.join(" ")))?;
    Ok(Some(out))
}

/// Like [`manager_cmd`], but a non-zero exit is an error carrying the tool's message.
fn manager_ok(manager: Manager, args: &[&str]) -> anyhow::Result<bool> {
    match manager_cmd(manager, args)? {
        None => Ok(false),
        Some(out) if out.status.success() => Ok(true),
        Some(out) => anyhow::bail!(
            "`{} {}` failed: {}",
            if manager == Manager::Systemd {
                "systemctl --user"
            } else {
                "launchctl"
            },
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
    }
}

pub fn install(config_path: Option<&Path>) -> anyhow::Result<ExitCode> {
    let manager = Manager::current();
    let config = config_path
        .map(Path::to_path_buf)
        .unwrap_or_else(default_config_path);
    anyhow::ensure!(
        config.is_file(),
        "no config at {}\nhint: run `moltbot onboard` first (or pass --config)",
        config.display()
    );
    let config = std::fs::canonicalize(&config)
        .with_context(|| format!("resolving {}", config.display()))?;
    // Refuse to install a service that would fail at once.
    let cfg = super::load_config(Some(&config))?;
    cfg.check_bind_safety()?;
    let exe = std::env::current_exe()
        .and_then(std::fs::canonicalize)
        .context("finding the path of this moltbot binary")?;
    let log_file = cfg.data.resolved_dir().join("logs").join("gateway.log");
    let spec = ServiceSpec {
        exe,
        config,
        log_file: log_file.clone(),
    };
    let path = manager.service_file();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let text = match manager {
        Manager::Systemd => systemd_unit(&spec),
        Manager::Launchd => {
            if let Some(dir) = log_file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            launchd_plist(&spec)
        }
    };
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());

    let result = match manager {
        Manager::Systemd => manager_ok(manager, &["daemon-reload"])
            .and_then(|ran| Ok(ran && manager_ok(manager, &["enable", "--now", UNIT_NAME])?)),
        Manager::Launchd => {
            // A loaded agent keeps the old definition: unload first (failure: not loaded).
            let p = path.to_string_lossy();
            let _ = manager_cmd(manager, &["unload", &p]);
            manager_ok(manager, &["load", "-w", &p])
        }
    };
    let manual = match manager {
        Manager::Systemd => {
            format!("systemctl --user daemon-reload && systemctl --user enable --now {UNIT_NAME}")
        }
        Manager::Launchd => format!("launchctl load -w {}", path.display()),
    };
    match result {
        Ok(true) => eprintln!("service enabled and started"),
        Ok(false) => eprintln!(
            "service manager calls skipped (MOLTBOT_SYSTEMCTL=none); to start it run:\n  {manual}"
        ),
        Err(e) => eprintln!(
            "could not start the service: {e:#}\n\
             hint: without a user session bus (ssh, containers) run, in a login session:\n  {manual}"
        ),
    }
    match manager {
        Manager::Systemd => {
            eprintln!("logs:   {JOURNAL_HINT}   (or `moltbot logs -f`)");
            eprintln!(
                "keep it running after you log out: loginctl enable-linger {}",
                std::env::var("USER").unwrap_or_else(|_| "$USER".into())
            );
        }
        Manager::Launchd => eprintln!("logs:   tail -f {}", log_file.display()),
    }
    eprintln!("status: moltbot daemon status");
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy)]
enum Action {
    Start,
    Stop,
}

/// Start the installed service; false when service control is off
/// (`MOLTBOT_SYSTEMCTL=none`). `doctor --fix` uses it.
pub fn start_service() -> anyhow::Result<bool> {
    let manager = Manager::current();
    let path = manager.service_file();
    let p = path.to_string_lossy();
    let args: Vec<&str> = match manager {
        Manager::Systemd => vec!["start", UNIT_NAME],
        Manager::Launchd => vec!["load", "-w", &p],
    };
    manager_ok(manager, &args)
}

fn control(action: Action) -> anyhow::Result<ExitCode> {
    let manager = Manager::current();
    let path = manager.service_file();
    anyhow::ensure!(
        path.exists(),
        "the service is not installed ({} is missing)\nhint: moltbot daemon install",
        path.display()
    );
    let p = path.to_string_lossy();
    let args: Vec<&str> = match (manager, action) {
        (Manager::Systemd, Action::Start) => vec!["start", UNIT_NAME],
        (Manager::Systemd, Action::Stop) => vec!["stop", UNIT_NAME],
        (Manager::Launchd, Action::Start) => vec!["load", "-w", &p],
        // Without -w: the agent starts again at the next login.
        (Manager::Launchd, Action::Stop) => vec!["unload", &p],
    };
    if manager_ok(manager, &args)? {
        eprintln!("done");
    } else {
        eprintln!("skipped (MOLTBOT_SYSTEMCTL=none)");
    }
    Ok(ExitCode::SUCCESS)
}

fn uninstall() -> anyhow::Result<ExitCode> {
    let manager = Manager::current();
    let path = manager.service_file();
    if !path.exists() {
        eprintln!("not installed ({} does not exist)", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    // Failures here mean "not loaded": removing the file is what matters.
    let p = path.to_string_lossy().into_owned();
    match manager {
        Manager::Systemd => {
            if let Ok(Some(out)) = manager_cmd(manager, &["disable", "--now", UNIT_NAME]) {
                if !out.status.success() {
                    eprintln!(
                        "note: systemctl --user disable --now {UNIT_NAME}: {}",
                        String::from_utf8_lossy(&out.stderr).trim()
                    );
                }
            }
        }
        Manager::Launchd => {
            let _ = manager_cmd(manager, &["unload", "-w", &p]);
        }
    }
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    if manager == Manager::Systemd {
        let _ = manager_cmd(manager, &["daemon-reload"]);
    }
    eprintln!("removed {}", path.display());
    Ok(ExitCode::SUCCESS)
}

/// What the service manager says about the service.
#[derive(Debug, Clone)]
pub struct ServiceState {
    pub manager: Manager,
    pub file: PathBuf,
    pub installed: bool,
    /// `is-enabled` (systemd) or "loaded"/"not loaded" (launchd); `None`: not asked
    /// (not installed, `MOLTBOT_SYSTEMCTL=none`) or the manager is unreachable.
    pub enabled: Option<String>,
    /// `is-active`: active, inactive, failed, activating...
    pub active: Option<String>,
}

pub fn service_state() -> ServiceState {
    let manager = Manager::current();
    let file = manager.service_file();
    let installed = file.exists();
    let (mut enabled, mut active) = (None, None);
    if installed {
        let answer = |args: &[&str]| -> Option<String> {
            let out = manager_cmd(manager, args).ok()??;
            let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
            // `is-active` exits non-zero for "inactive" but still answers; no answer at all
            // (no user bus) is unknown.
            Some(text).filter(|t| !t.is_empty() && !t.contains(' '))
        };
        match manager {
            Manager::Systemd => {
                enabled = answer(&["is-enabled", UNIT_NAME]);
                active = answer(&["is-active", UNIT_NAME]);
            }
            Manager::Launchd => {
                if let Ok(Some(out)) = manager_cmd(manager, &["list", LAUNCHD_LABEL]) {
                    let loaded = out.status.success();
                    enabled = Some(if loaded { "loaded" } else { "not loaded" }.into());
                    let running =
                        loaded && String::from_utf8_lossy(&out.stdout).contains("\"PID\"");
                    active = Some(if running { "active" } else { "inactive" }.into());
                }
            }
        }
    }
    ServiceState {
        manager,
        file,
        installed,
        enabled,
        active,
    }
}

impl ServiceState {
    /// One line for `status` and `doctor`.
    pub fn summary(&self) -> String {
        let kind = match self.manager {
            Manager::Systemd => "systemd user unit",
            Manager::Launchd => "launchd agent",
        };
        if !self.installed {
            return format!("not installed (optional: `moltbot daemon install` writes a {kind})");
        }
        format!(
            "{kind} {}: {}, {}",
            self.file.display(),
            self.enabled.as_deref().unwrap_or("enabled: unknown"),
            self.active
                .as_deref()
                .unwrap_or(if systemctl_program().is_none() {
                    "state not asked (MOLTBOT_SYSTEMCTL=none)"
                } else {
                    "state unknown (service manager not reachable)"
                })
        )
    }

    /// Installed but known not to be running.
    pub fn is_down(&self) -> bool {
        self.installed && self.active.as_deref().is_some_and(|a| a != "active")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            exe: "/opt/molt bot/moltbot".into(),
            config: "/home/a&b/.moltbot/moltbot.toml".into(),
            log_file: "/home/a&b/.moltbot/logs/gateway.log".into(),
        }
    }

    #[test]
    fn systemd_unit_quotes_paths() {
        let unit = systemd_unit(&spec());
        assert!(unit.contains(
            "ExecStart=\"/opt/molt bot/moltbot\" gateway --config \"/home/a&b/.moltbot/moltbot.toml\"\n"
        ));
        for line in [
            "Restart=on-failure",
            "WantedBy=default.target",
            "NoNewPrivileges=true",
        ] {
            assert!(unit.lines().any(|l| l == line), "{line}");
        }
        assert_eq!(systemd_quote(Path::new("/a%b$c\"d")), r#""/a%%b$$c\"d""#);
    }

    #[test]
    fn launchd_plist_lists_the_arguments_escaped() {
        let plist = launchd_plist(&spec());
        assert!(plist.contains("<string>ai.moltbot.gateway</string>"));
        assert!(plist.contains(
            "<string>/opt/molt bot/moltbot</string>\n    <string>gateway</string>\n    \
             <string>--config</string>\n    <string>/home/a&amp;b/.moltbot/moltbot.toml</string>"
        ));
        assert!(plist.contains("<key>RunAtLoad</key>\n  <true/>"));
        assert!(plist.contains(
            "<key>StandardErrorPath</key>\n  <string>/home/a&amp;b/.moltbot/logs/gateway.log</string>"
        ));
        // Well-formed enough: every opened dict/array is closed.
        assert_eq!(
            plist.matches("<dict>").count(),
            plist.matches("</dict>").count()
        );
        assert_eq!(
            plist.matches("<array>").count(),
            plist.matches("</array>").count()
        );
    }
}
