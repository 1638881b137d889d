//! The `moltbot` binary as a user runs it: exit codes, messages, config handling, and a
//! gateway process serving a turn through a fake OpenAI server on loopback.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn moltbot(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moltbot"));
    // An isolated HOME so no user config or data is read; no MOLTBOT_* from the caller.
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .stdin(Stdio::null());
    // Understanding loads in the gateway's background: point it at the encoder the test
    // script fetched, or run it on sparse features, never fetch in a test.
    match std::env::var_os("MOLTBOT_TEST_ENCODER").filter(|v| !v.is_empty()) {
        Some(dir) => c.env("MOLTBOT_UNDERSTANDING__ENCODER_PATH", dir),
        None => c.env("MOLTBOT_UNDERSTANDING__ENCODER", "none"),
    };
    c
}

/// Whether the real encoder is there for a test that needs it (`MOLTBOT_TEST_ENCODER`, which
/// the test script fetches); CI must have it, elsewhere the test is skipped.
fn encoder_is_set() -> bool {
    if std::env::var_os("MOLTBOT_TEST_ENCODER").is_none_or(|v| v.is_empty()) {
        assert!(
            std::env::var_os("CI").is_none(),
            "MOLTBOT_TEST_ENCODER must name the encoder folder in CI"
        );
        eprintln!("skipped: MOLTBOT_TEST_ENCODER is not set");
        return false;
    }
    true
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn non_loopback_bind_without_token_refuses_to_start() {
    let home = tempfile::tempdir().unwrap();
    let out = moltbot(home.path())
        .args(["gateway", "--bind", "0.0.0.0", "--port", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("refusing to listen on 0.0.0.0 without a token"),
        "{}",
        text(&out)
    );
}

#[test]
fn config_init_validate_and_unknown_keys() {
    let home = tempfile::tempdir().unwrap();
    let out = moltbot(home.path())
        .args(["config", "init"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let path = home.path().join(".moltbot/moltbot.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let out = moltbot(home.path())
        .args(["config", "validate"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    // A second init refuses to overwrite.
    let out = moltbot(home.path())
        .args(["config", "init"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // A typo is an error naming the key.
    std::fs::write(&path, "[gateway]\nprot = 1\n").unwrap();
    let out = moltbot(home.path())
        .args(["config", "validate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("prot"), "{}", text(&out));
    // Environment overrides are typed and checked too.
    std::fs::write(&path, "").unwrap();
    let out = moltbot(home.path())
        .args(["config", "show"])
        .env("MOLTBOT_GATEWAY__PORT", "19999")
        .env("MOLTBOT_MODEL__OPENAI__API_KEY", "sk-should-not-print")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let shown = text(&out);
    assert!(shown.contains("port = 19999"), "{shown}");
    assert!(!shown.contains("sk-should-not-print"), "{shown}");
}

#[test]
fn doctor_fails_on_a_bad_config_and_passes_on_a_good_one() {
    let home = tempfile::tempdir().unwrap();
    let cfg = home.path().join("bad.toml");
    std::fs::write(&cfg, "[sessions]\nmax_turns = 0\n").unwrap();
    let out = moltbot(home.path())
        .args(["--config", cfg.to_str().unwrap(), "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("sessions.max_turns"), "{}", text(&out));

    let good = home.path().join("good.toml");
    std::fs::write(
        &good,
        "[gateway]\nport = 0\n[model]\nproviders = [\"openai\"]\n[model.openai]\nbase_url = \"http://127.0.0.1:9/v1\"\n",
    )
    .unwrap();
    let out = moltbot(home.path())
        .args(["--config", good.to_str().unwrap(), "doctor", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true);
    assert!(report["environment"]["cpu_count"].as_u64().unwrap() >= 1);
    let names: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    for n in ["config", "data dir", "store", "port", "model", "skill"] {
        assert!(names.contains(&n), "{names:?}");
    }

    // A broken skill fails the doctor with the file and the field.
    let skill = home.path().join(".moltbot/skills/weather");
    std::fs::create_dir_all(&skill).unwrap();
    std::fs::write(skill.join("SKILL.md"), "---\nname: weather\n---\nsay it\n").unwrap();
    let out = moltbot(home.path())
        .args(["--config", good.to_str().unwrap(), "doctor"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("weather/SKILL.md: `description` is required"),
        "{}",
        text(&out)
    );
}

#[test]
fn gateway_process_serves_a_turn_and_stops_on_sigterm() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(moltbot_fakes::FakeOpenAi::start());
    let home = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = moltbot(home.path())
        .args(["gateway", "--port", &port.to_string(), "--verbose"])
        .env("MOLTBOT_MODEL__OPENAI__API_KEY", "sk-test-secret-value-42")
        .env("MOLTBOT_MODEL__PROVIDERS", "[\"openai\"]")
        .env("MOLTBOT_MODEL__OPENAI__BASE_URL", fake.base_url())
        .env("MOLTBOT_GATEWAY_TOKEN", "cli-test")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let (reply, metrics) = rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = client.get(format!("{base}/readyz")).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "gateway never became ready");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let reply: serde_json::Value = client
            .post(format!("{base}/api/v1/chat"))
            .bearer_auth("cli-test")
            .json(&serde_json::json!({"session_id": "cli", "message": "from a process"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let metrics = client
            .get(format!("{base}/metrics"))
            .bearer_auth("cli-test")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        (reply, metrics)
    });
    assert_eq!(reply["reply"], "echo: from a process");
    // The provider chain counts and times each call by provider kind.
    assert!(
        metrics.contains("moltbot_provider_requests_total{provider=\"openai\",result=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("moltbot_provider_latency_bucket{provider=\"openai\""),
        "{metrics}"
    );
    // `moltbot sessions list` reads the same store.
    let out = moltbot(home.path())
        .args(["sessions", "list"])
        .output()
        .unwrap();
    assert!(text(&out).contains("cli"), "{}", text(&out));
    let out = moltbot(home.path())
        .args(["sessions", "show", "cli"])
        .output()
        .unwrap();
    assert!(
        text(&out).contains("[assistant] echo: from a process"),
        "{}",
        text(&out)
    );
    // SIGTERM: a clean exit with status 0.
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    // Even at debug level, neither the API key nor the gateway token reach the log.
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("listening on"), "{log}");
    assert!(
        !log.contains("sk-test-secret-value-42"),
        "API key in the log:\n{log}"
    );
    assert!(
        !log.contains("cli-test"),
        "gateway token in the log:\n{log}"
    );
    // The provider really sent the key (so it was configured, just never printed).
    let sent = fake.last_request().unwrap();
    assert_eq!(
        sent.header("authorization"),
        Some("Bearer sk-test-secret-value-42")
    );
}

#[test]
fn telegram_pairing_approval_and_message_send_through_the_cli() {
    const BOT_TOKEN: &str = "424242:cli-telegram-secret-token";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let fake = rt.block_on(moltbot_fakes::FakeOpenAi::start());
    let tg = rt.block_on(moltbot_fakes::telegram::FakeTelegram::start(BOT_TOKEN));
    let home = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    // Gateway and client commands read the same settings from the environment.
    let with_env = |c: &mut Command| {
        c.env("MOLTBOT_GATEWAY__PORT", &port)
            .env("MOLTBOT_GATEWAY_TOKEN", "cli-test")
            .env("MOLTBOT_MODEL__PROVIDERS", "[\"openai\"]")
            .env("MOLTBOT_MODEL__OPENAI__BASE_URL", fake.base_url())
            .env("MOLTBOT_CHANNELS__TELEGRAM__ENABLED", "true")
            .env("MOLTBOT_CHANNELS__TELEGRAM__BOT_TOKEN", BOT_TOKEN)
            .env("MOLTBOT_CHANNELS__TELEGRAM__API_BASE", tg.base_url())
            .env("MOLTBOT_CHANNELS__TELEGRAM__POLL_TIMEOUT_SECS", "1");
    };
    let run = |args: &[&str]| {
        let mut c = moltbot(home.path());
        with_env(&mut c);
        let out = c.args(args).output().unwrap();
        (out.status.success(), text(&out))
    };
    let mut gw = moltbot(home.path());
    with_env(&mut gw);
    let child = gw
        .args(["gateway", "--verbose"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let wait = Duration::from_secs(20);

    // An unknown sender gets a code; the owner approves it from the CLI.
    tg.push_message(77, 77, "hello?");
    let sent = rt.block_on(tg.wait_sent(1, wait));
    assert_eq!(sent.len(), 1, "pairing code sent");
    let (ok, listed) = run(&["pairing", "list", "--json"]);
    assert!(ok, "{listed}");
    let listed: serde_json::Value = serde_json::from_str(listed.trim()).unwrap();
    let code = listed["requests"][0]["code"].as_str().unwrap().to_string();
    assert!(sent[0].text.contains(&code));
    let (ok, out) = run(&["pairing", "approve", "telegram", &code]);
    assert!(ok && out.contains("approved 77"), "{out}");
    let (ok, out) = run(&["pairing", "approve", "telegram", &code]);
    assert!(!ok && out.contains("no pending request"), "{out}");
    // The gateway delivers the notice queued by the CLI process.
    let sent = rt.block_on(tg.wait_sent(2, wait));
    assert!(sent[1].text.contains("approved"), "{:?}", sent[1].text);

    tg.push_message(77, 77, "now we talk");
    let sent = rt.block_on(tg.wait_sent(3, wait));
    assert_eq!(sent[2].text, "echo: now we talk");

    let (ok, out) = run(&["channels", "status", "--json"]);
    assert!(ok, "{out}");
    let status: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(status["channels"][0]["channel"], "telegram");
    assert_eq!(status["channels"][0]["status"], "connected");

    let health: serde_json::Value = rt.block_on(async {
        reqwest::get(format!("http://127.0.0.1:{port}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });
    assert_eq!(
        health["components"]["channels"]["telegram"]["status"],
        "connected"
    );

    let (ok, out) = run(&[
        "message",
        "send",
        "--channel",
        "telegram",
        "--to",
        "77",
        "proactive hello",
    ]);
    assert!(ok && out.contains("sent"), "{out}");
    assert!(tg.sent().iter().any(|m| m.text == "proactive hello"));
    let (ok, out) = run(&["message", "send", "--channel", "whatsapp", "--to", "1", "x"]);
    assert!(
        !ok && out.contains("`channel` must be an enabled channel"),
        "{out}"
    );

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "exit status {:?}", out.status);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        !log.contains("cli-telegram-secret-token"),
        "bot token in the log:\n{log}"
    );
    assert!(!log.contains(&code), "pairing code in the log:\n{log}");
}

#[test]
fn knowledge_add_search_list_remove_without_a_gateway() {
    let home = tempfile::tempdir().unwrap();
    // A port nothing listens on, so the commands open the store themselves.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port().to_string();
    drop(free);
    let docs = home.path().join("docs");
    std::fs::create_dir_all(docs.join("sub")).unwrap();
    std::fs::write(
        docs.join("garden.md"),
        "# Garden\n\n## Tomatoes\n\nWater the tomatoes every morning in July.\n",
    )
    .unwrap();
    std::fs::write(
        docs.join("sub/bike.txt"),
        "The bike lock code is written inside the toolbox lid.",
    )
    .unwrap();
    std::fs::write(docs.join("photo.png"), [0x89, b'P', b'N', b'G']).unwrap();
    let run = |args: &[&str]| {
        moltbot(home.path())
            .env("MOLTBOT_GATEWAY__PORT", &port)
            .args(args)
            .output()
            .unwrap()
    };
    let out = run(&["knowledge", "add", docs.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("added 2, updated 0, unchanged 0, failed 0"),
        "{}",
        text(&out)
    );

    let out = run(&["knowledge", "search", "bike lock code", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["hits"][0]["source"]
            .as_str()
            .unwrap()
            .ends_with("bike.txt"),
        "{v}"
    );
    let out = run(&["knowledge", "list"]);
    let listed = text(&out);
    assert!(
        listed.contains("garden.md") && listed.contains("bike.txt"),
        "{listed}"
    );
    assert!(!listed.contains("photo.png"), "{listed}");

    let bike = docs.join("sub/bike.txt");
    let source = v["hits"][0]["source"].as_str().unwrap().to_string();
    let out = run(&["knowledge", "remove", &source]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["knowledge", "list"]);
    assert!(!text(&out).contains("bike.txt"), "{}", text(&out));
    assert!(
        bike.exists(),
        "remove forgets the document, never deletes the file"
    );
    let out = run(&["knowledge", "remove", &source]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("not in the knowledge store"),
        "{}",
        text(&out)
    );
}

#[test]
fn cron_add_list_run_and_remove_without_a_gateway() {
    let home = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| moltbot(home.path()).args(args).output().unwrap();
    let out = run(&[
        "cron",
        "add",
        "--name",
        "tea",
        "--every",
        "10m",
        "--message",
        "tea time",
        "--channel",
        "telegram",
        "--to",
        "42",
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(id.len(), 8, "stdout is the job id: {id:?}");
    assert!(text(&out).contains("every 10m"), "{}", text(&out));

    let out = run(&["cron", "list", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(jobs[0]["id"], id.as_str());
    assert_eq!(jobs[0]["payload"]["kind"], "message");
    assert_eq!(jobs[0]["target"]["chat_id"], "42");
    assert!(jobs[0]["next_run_ms"].as_i64().is_some(), "{jobs}");
    let out = run(&["cron", "list"]);
    assert!(text(&out).contains("\"tea\""), "{}", text(&out));

    let out = run(&["cron", "run", &id]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("within a few seconds"),
        "{}",
        text(&out)
    );
    let out = run(&["cron", "runs", &id, "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");

    // Bad values name the flag's field and value; two schedules are a usage error.
    let out = run(&[
        "cron",
        "add",
        "--every",
        "5s",
        "--message",
        "x",
        "--session",
        "s",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("got \"5s\""), "{}", text(&out));
    let out = run(&[
        "cron",
        "add",
        "--every",
        "1h",
        "--cron",
        "0 9 * * *",
        "--message",
        "x",
        "--session",
        "s",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));

    let out = run(&["cron", "rm", &id]);
    assert!(out.status.success(), "{}", text(&out));
    let out = run(&["cron", "rm", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no job"), "{}", text(&out));
}

#[cfg(unix)]
#[test]
fn doctor_fix_repairs_permissions_and_checks_store_and_channels() {
    use std::os::unix::fs::PermissionsExt;
    const BOT_TOKEN: &str = "737373:doctor-telegram-token";
    let rt = tokio::runtime::Runtime::new().unwrap();
    let tg = rt.block_on(moltbot_fakes::telegram::FakeTelegram::start(BOT_TOKEN));
    let home = tempfile::tempdir().unwrap();
    let data = home.path().join("data");
    let cfg = home.path().join("moltbot.toml");
    let write_cfg = |token: &str| {
        std::fs::write(
            &cfg,
            format!(
                "[gateway]\nport = 0\n[data]\ndir = {data:?}\n[model]\nproviders = [\"openai\"]\n\
                 [model.openai]\nbase_url = \"http://127.0.0.1:9/v1\"\n\
                 [channels.telegram]\nenabled = true\nbot_token = \"{token}\"\napi_base = \"{}\"\n",
                tg.base_url()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o644)).unwrap();
    };
    write_cfg(BOT_TOKEN);
    let doctor = |args: &[&str]| {
        let out = moltbot(home.path())
            .env("MOLTBOT_SYSTEMCTL", "none")
            .args(["--config", cfg.to_str().unwrap(), "doctor", "--json"])
            .args(args)
            .output()
            .unwrap();
        let report: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
        (out.status.code(), report)
    };
    let find = |report: &serde_json::Value, name: &str| -> serde_json::Value {
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} check in {report}"))
    };

    // Without --fix: warnings, nothing changed.
    let (code, report) = doctor(&[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(
        find(&report, "config permissions")["level"],
        "warn",
        "{report}"
    );
    assert_eq!(find(&report, "data dir")["level"], "warn", "{report}");
    assert!(!data.exists());
    let channel = find(&report, "channel");
    assert_eq!(channel["level"], "ok", "{channel}");
    assert!(channel["detail"].as_str().unwrap().contains("telegram"));
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o644
    );

    // --fix: the config becomes 0600, the data folder is made private.
    let (code, report) = doctor(&["--fix"]);
    assert_eq!(code, Some(0), "{report}");
    assert!(find(&report, "config permissions")["detail"]
        .as_str()
        .unwrap()
        .starts_with("fixed: 644 -> 600"));
    assert_eq!(
        std::fs::metadata(&cfg).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&data).unwrap().permissions().mode() & 0o777,
        0o700
    );
    let (_, report) = doctor(&[]);
    assert_eq!(find(&report, "store")["level"], "ok", "{report}");
    assert_eq!(find(&report, "config permissions")["level"], "ok");

    // A damaged store fails with the way out; a refused token fails the channel check
    // without the token in the report.
    let db = data.join("moltbot.db");
    let mut bytes = std::fs::read(&db).unwrap();
    assert!(bytes.len() >= 4096, "store size {}", bytes.len());
    for b in &mut bytes[100..] {
        *b = 0xA5;
    }
    std::fs::write(&db, &bytes).unwrap();
    for side in ["moltbot.db-wal", "moltbot.db-shm"] {
        let _ = std::fs::remove_file(data.join(side));
    }
    write_cfg("737373:wrong-token");
    let (code, report) = doctor(&[]);
    assert_eq!(code, Some(1), "{report}");
    let store = find(&report, "store");
    assert_eq!(store["level"], "fail", "{store}");
    assert!(
        store["detail"].as_str().unwrap().contains("moltbot.db"),
        "{store}"
    );
    let channel = find(&report, "channel");
    assert_eq!(channel["level"], "fail", "{channel}");
    assert!(
        channel["detail"].as_str().unwrap().contains("refused"),
        "{channel}"
    );
    assert!(!report.to_string().contains("wrong-token"), "{report}");
}

/// `[understanding] tune_layers` makes `intents train` fine-tune the encoder; the flag
/// overrides it. Needs the real encoder (the test script fetches it).
#[test]
fn intents_train_tunes_the_encoder_when_the_config_asks() {
    if !encoder_is_set() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    // Four banking intents that share most of their words (the fine-tuning tests' set).
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../moltbot-understand/tests/fixtures/confusable-banking.tsv");
    let config = home.path().join("moltbot.toml");
    std::fs::write(
        &config,
        "[understanding]\ntune_layers = 2\ntune_epochs = 1\n",
    )
    .unwrap();
    let train = |extra: &[&str], out: &str| {
        let out_path = home.path().join(out);
        let mut args = vec![
            "--config".to_string(),
            config.display().to_string(),
            "intents".into(),
            "train".into(),
            data.display().to_string(),
            "--out".into(),
            out_path.display().to_string(),
            "--json".into(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let o = moltbot(home.path()).args(&args).output().unwrap();
        assert!(o.status.success(), "{}", text(&o));
        let line = String::from_utf8_lossy(&o.stdout)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string();
        let v: serde_json::Value = serde_json::from_str(&line).expect(&line);
        (v, std::fs::metadata(out_path).unwrap().len())
    };
    let (tuned, tuned_size) = train(&[], "tuned.safetensors");
    assert_eq!(tuned["tune"]["layers"], 2, "{tuned}");
    assert_eq!(tuned["tune"]["epochs"], 1, "{tuned}");
    let (frozen, frozen_size) = train(&["--tune-layers", "0"], "frozen.safetensors");
    assert!(frozen["tune"].is_null(), "{frozen}");
    // Two tuned MiniLM layers are ~14 MB of f32 weights in the file.
    assert!(
        tuned_size > frozen_size + 13_000_000,
        "{tuned_size} vs {frozen_size}"
    );
}

/// `moltbot config show | head -0`: a reader that is gone before anything is written ends
/// the command quietly with status 0, with no panic on the broken pipe.
#[test]
fn output_to_a_closed_pipe_ends_quietly() {
    let home = tempfile::tempdir().unwrap();
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = moltbot(home.path())
        .args(["config", "show"])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status {:?}: {err}", out.status);
    assert!(!err.contains("panicked"), "{err}");
    assert!(!err.contains("Broken pipe"), "{err}");
}

/// A model trained at f32 from a file outside the config is served as it is by a gateway
/// whose encoder runs INT8 (the default precision on CPUs with an integer kernel): it is not
/// retrained from the config's intents, which would lose the file's intents.
#[test]
fn a_model_trained_at_f32_is_served_on_the_int8_encoder_as_it_is() {
    if !encoder_is_set() {
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let data = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../moltbot-understand/tests/fixtures/confusable-banking.tsv");
    let model = home.path().join("banking.safetensors");
    let o = moltbot(home.path())
        .args([
            "intents",
            "train",
            &data.display().to_string(),
            "--precision",
            "f32",
        ])
        .args(["--out", &model.display().to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let trained = std::fs::read(&model).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let child = moltbot(home.path())
        .args(["gateway", "--port", &port.to_string()])
        .env("MOLTBOT_UNDERSTANDING__MODEL_PATH", &model)
        .env("MOLTBOT_UNDERSTANDING__PRECISION", "int8")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let answer: serde_json::Value = rt.block_on(async {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let r = client
                .post(format!("http://127.0.0.1:{port}/api/v1/understand"))
                .json(&serde_json::json!({"text": "when will my card arrive"}))
                .send()
                .await;
            if let Ok(r) = r {
                if r.status().is_success() {
                    break r.json().await.unwrap();
                }
            }
            assert!(
                Instant::now() < deadline,
                "understanding never became ready"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    // The file's intent, which the built-in pack does not have, and the file untouched.
    assert_eq!(answer["fine"], "card_arrival", "{answer}\n{log}");
    assert!(
        std::fs::read(&model).unwrap() == trained,
        "the model file was rewritten"
    );
    assert!(
        log.contains("trained at another precision of the same encoder"),
        "{log}"
    );
}
