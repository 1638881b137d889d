//! `moltbot onboard`, `daemon`, `status` and `logs` as a user runs them, each in a temporary
//! HOME with the environment cleared. `MOLTBOT_SYSTEMCTL=none` keeps every test away from
//! the real user service manager.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn moltbot(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moltbot"));
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MOLTBOT_SYSTEMCTL", "none")
        .stdin(Stdio::null());
    c
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn config_path(home: &Path) -> PathBuf {
    home.join(".moltbot/moltbot.toml")
}

/// The config as TOML, and checked the way the gateway loads it.
fn load(home: &Path) -> toml::Table {
    let path = config_path(home);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "config mode");
    }
    moltbot_core::Config::load_with_env(Some(&path), &[]).expect("the written config loads");
    std::fs::read_to_string(&path).unwrap().parse().unwrap()
}

fn token_of(cfg: &toml::Table) -> String {
    cfg["gateway"]["token"].as_str().unwrap().to_string()
}

#[test]
fn non_interactive_onboard_writes_a_private_config_and_refuses_to_overwrite() {
    let home = tempfile::tempdir().unwrap();
    let run = |extra: &[&str]| {
        moltbot(home.path())
            .args([
                "onboard",
                "--non-interactive",
                "--provider",
                "openai",
                "--openai-base-url",
                "http://127.0.0.1:11434/v1",
                "--model",
                "llama3.2",
                "--api-key-env",
                "TEST_KEY",
                "--telegram-token-env",
                "TG",
            ])
            .args(extra)
            .env("TEST_KEY", "sk-onboard-secret")
            .env("TG", "123456:tg-secret")
            .output()
            .unwrap()
    };
    let out = run(&["--port", "18800"]);
    assert!(out.status.success(), "{}", text(&out));
    let cfg = load(home.path());
    assert_eq!(cfg["gateway"]["port"].as_integer(), Some(18800));
    assert_eq!(cfg["model"]["providers"][0].as_str(), Some("openai"));
    assert_eq!(cfg["model"]["openai"]["model"].as_str(), Some("llama3.2"));
    assert_eq!(
        cfg["model"]["openai"]["api_key"].as_str(),
        Some("sk-onboard-secret")
    );
    assert_eq!(
        cfg["channels"]["telegram"]["bot_token"].as_str(),
        Some("123456:tg-secret")
    );
    let token = token_of(&cfg);
    assert_eq!(token.len(), 64);
    let shown = text(&out);
    for secret in [token.as_str(), "sk-onboard-secret", "tg-secret"] {
        assert!(!shown.contains(secret), "a secret was printed: {shown}");
    }
    assert!(shown.contains("next steps"), "{shown}");

    // A second run refuses and leaves the file alone.
    let out = run(&["--port", "18800"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--force"), "{}", text(&out));
    assert_eq!(token_of(&load(home.path())), token);

    // --force overwrites (a new token).
    let out = run(&["--force", "--port", "18801"]);
    assert!(out.status.success(), "{}", text(&out));
    let cfg = load(home.path());
    assert_eq!(cfg["gateway"]["port"].as_integer(), Some(18801));
    assert_ne!(token_of(&cfg), token);
}

#[test]
fn non_interactive_onboard_checks_its_inputs() {
    let home = tempfile::tempdir().unwrap();
    // The key variable is missing.
    let out = moltbot(home.path())
        .args(["onboard", "--non-interactive", "--provider", "anthropic"])
        .args(["--api-key-env", "NOPE"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOPE"), "{}", text(&out));
    // Beyond loopback without a token is refused, and nothing is written.
    let out = moltbot(home.path())
        .args([
            "onboard",
            "--non-interactive",
            "--bind",
            "0.0.0.0",
            "--token",
            "none",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("without a token"), "{}", text(&out));
    assert!(!config_path(home.path()).exists());
    // The defaults: local model, generated token, nothing else set.
    let out = moltbot(home.path())
        .args(["onboard", "--non-interactive"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cfg = load(home.path());
    assert_eq!(cfg.keys().collect::<Vec<_>>(), ["gateway"]);
    assert!(text(&out).contains("models fetch"), "{}", text(&out));
}

#[test]
fn the_interactive_wizard_reads_answers_from_stdin() {
    let home = tempfile::tempdir().unwrap();
    // Provider openai, URL, model, key; no Telegram, no WhatsApp; port, bind; generate a
    // token; default data dir; do not install the service.
    let answers = "2\nhttp://127.0.0.1:11434/v1\nqwen2.5\nsk-typed-secret\nn\nn\n18802\n\ny\n\nn\n";
    let mut child = moltbot(home.path())
        .arg("onboard")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(answers.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let cfg = load(home.path());
    assert_eq!(cfg["gateway"]["port"].as_integer(), Some(18802));
    assert_eq!(cfg["model"]["providers"][0].as_str(), Some("openai"));
    assert_eq!(cfg["model"]["openai"]["model"].as_str(), Some("qwen2.5"));
    assert_eq!(
        cfg["model"]["openai"]["api_key"].as_str(),
        Some("sk-typed-secret")
    );
    assert!(cfg.get("channels").is_none() && cfg.get("data").is_none());
    let shown = text(&out);
    assert!(shown.contains("Model provider"), "{shown}");
    for secret in [token_of(&cfg).as_str(), "sk-typed-secret"] {
        assert!(!shown.contains(secret), "a secret was printed: {shown}");
    }

    // Input that ends early is an error that points at --non-interactive.
    let home = tempfile::tempdir().unwrap();
    let out = moltbot(home.path()).arg("onboard").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("--non-interactive"), "{}", text(&out));
    assert!(!config_path(home.path()).exists());
}

#[test]
fn daemon_install_writes_a_valid_unit_and_uninstall_removes_it() {
    let home = tempfile::tempdir().unwrap();
    // Without a config there is nothing to run.
    let out = moltbot(home.path())
        .args(["daemon", "install"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("moltbot onboard"), "{}", text(&out));

    // onboard --install-daemon writes the config, then the unit.
    let out = moltbot(home.path())
        .args(["onboard", "--non-interactive", "--install-daemon"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("journalctl --user -u moltbot.service -f"),
        "{}",
        text(&out)
    );
    assert!(
        text(&out).contains("systemctl --user enable --now moltbot.service"),
        "{}",
        text(&out)
    );
    let unit_path = home.path().join(".config/systemd/user/moltbot.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    let exe = std::fs::canonicalize(env!("CARGO_BIN_EXE_moltbot")).unwrap();
    let config = std::fs::canonicalize(config_path(home.path())).unwrap();
    let exec = format!(
        "ExecStart=\"{}\" gateway --config \"{}\"",
        exe.display(),
        config.display()
    );
    for line in [
        exec.as_str(),
        "Restart=on-failure",
        "WantedBy=default.target",
        "After=network-online.target",
    ] {
        assert!(unit.lines().any(|l| l == line), "missing {line}:\n{unit}");
    }
    // The unit never holds the token.
    assert!(!unit.contains(&token_of(&load(home.path()))));

    // systemd's own check, when it is installed.
    if Path::new("/usr/bin/systemd-analyze").exists() {
        let out = Command::new("/usr/bin/systemd-analyze")
            .args(["verify", unit_path.to_str().unwrap()])
            .output()
            .unwrap();
        let msg = text(&out);
        // Only complaints about this unit count (the host's own units may be noisy).
        let ours: Vec<&str> = msg
            .lines()
            .filter(|l| l.contains("moltbot.service"))
            .collect();
        assert!(ours.is_empty(), "systemd-analyze verify:\n{msg}");
    }

    let out = moltbot(home.path())
        .args(["daemon", "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("moltbot.service"), "{}", text(&out));
    assert!(text(&out).contains("not running"), "{}", text(&out));

    // Installing again updates in place.
    let out = moltbot(home.path())
        .args(["daemon", "install"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));

    let out = moltbot(home.path())
        .args(["daemon", "uninstall"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(!unit_path.exists());
    let out = moltbot(home.path())
        .args(["daemon", "stop"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not installed"), "{}", text(&out));
}

#[test]
fn status_and_logs_when_nothing_runs() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("c.toml");
    // Port 9 (discard) on loopback: nothing answers HTTP there.
    std::fs::write(&cfg, "[gateway]\nport = 9\n").unwrap();
    let out = moltbot(home.path())
        .args(["--config", cfg.to_str().unwrap(), "status"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains(cfg.to_str().unwrap()), "{shown}");
    assert!(shown.contains("not running"), "{shown}");
    assert!(shown.contains("not installed"), "{shown}");

    let out = moltbot(home.path())
        .args(["--config", cfg.to_str().unwrap(), "logs"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("daemon install"), "{}", text(&out));

    // Doctor reports the service too (not installed is fine).
    let out = moltbot(home.path())
        .args(["--config", cfg.to_str().unwrap(), "doctor", "--json"])
        .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
        .output()
        .unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let daemon = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "daemon")
        .unwrap_or_else(|| panic!("{report}"));
    assert_eq!(daemon["level"], "ok", "{daemon}");
}
