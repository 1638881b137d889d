//! `moltbot migrate --from-clawdbot` on a fixture made with the real OpenClaw CLI
//! (tests/fixtures/openclaw-home, see its README.md): the dry run, a real run, a second run
//! that adds nothing, secrets kept out of the output, and homes that are not OpenClaw's.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Secret values in the fixture (fake, but they must never be printed).
const SECRETS: [&str; 4] = [
    "sk-fixture-openai-0000000000000000",
    "123456789:AAFixtureFakeTelegramToken_0000000000",
    "FakeDiscordBotToken.fixture.0000000000",
    "fixture-gateway-token-0000",
];
const SESSION: &str = "openclaw-8ca3cdb1-c4b5-46e5-a422-7c18bef80aae";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/openclaw-home")
}

fn moltbot(home: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_moltbot"));
    // An isolated HOME so no user config or data is read; no MOLTBOT_* from the caller.
    c.env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("MOLTBOT_UNDERSTANDING__ENCODER", "none")
        .stdin(Stdio::null());
    c
}

fn run(home: &Path, args: &[&str]) -> Output {
    moltbot(home).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn migrate(home: &Path, extra: &[&str]) -> Output {
    let src = fixture();
    let mut args = vec!["migrate", "--from-clawdbot", src.to_str().unwrap()];
    args.extend_from_slice(extra);
    let out = run(home, &args);
    assert!(out.status.success(), "{}", text(&out));
    for s in SECRETS {
        assert!(
            !text(&out).contains(s),
            "secret {s} printed:\n{}",
            text(&out)
        );
    }
    out
}

fn summary(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with("summary:"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn dry_run_reports_and_writes_nothing() {
    let home = tempfile::tempdir().unwrap();
    let out = migrate(home.path(), &["--dry-run"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "would map   models.providers.localmock.apiKey → model.openai.api_key = set",
        "would map   channels.telegram.botToken → channels.telegram.bot_token = set",
        "model.openai.base_url = \"http://127.0.0.1:18795/v1\"",
        "channels.telegram.allow_from = [\"111111111\", \"222222222\"]",
        "cron job \"Morning brief\" → cron job 2b229d16-bc2b-4648-a2fc-88cc8cd8a0f1",
        "workspace/SOUL.md →",
        "workspace/skills/grocery-list/SKILL.md →",
        "not mapped  workspace/skills/weather-brief: moltbot's skill loader refuses it",
        "not mapped  cron job \"Disk check\": command payloads",
        "not mapped  cron job \"heartbeat-molty\": managed by OpenClaw",
        "not mapped  channels.whatsapp (connection)",
        "not mapped  plugins: no moltbot equivalent",
        "→ session openclaw-8ca3cdb1-c4b5-46e5-a422-7c18bef80aae (4 messages",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        summary(&out).ends_with("(dry run: nothing written)"),
        "{stdout}"
    );
    // Nothing at all was created under HOME.
    let entries: Vec<_> = std::fs::read_dir(home.path()).unwrap().collect();
    assert!(entries.is_empty(), "dry run wrote {entries:?}");
}

#[test]
fn real_run_imports_everything_once() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let first = migrate(h, &[]);
    assert!(!summary(&first).contains(" 0 mapped"), "{}", text(&first));

    // The config loads and holds the values; it is private.
    let path = h.join(".moltbot/moltbot.toml");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let cfg = moltbot_core::Config::load_with_env(Some(&path), &[]).unwrap();
    assert_eq!(cfg.model.openai.base_url, "http://127.0.0.1:18795/v1");
    assert_eq!(cfg.model.openai.model, "mock-gpt");
    assert_eq!(
        cfg.model
            .openai
            .api_key
            .as_ref()
            .map(|s| s.expose().to_string()),
        Some(SECRETS[0].to_string())
    );
    assert_eq!(
        cfg.model.providers,
        vec![moltbot_core::config::ProviderKind::Openai]
    );
    assert!(cfg.channels.telegram.enabled);
    assert_eq!(
        cfg.channels
            .telegram
            .bot_token
            .as_ref()
            .map(|s| s.expose().to_string()),
        Some(SECRETS[1].to_string())
    );
    assert_eq!(cfg.channels.telegram.allow_from, ["111111111", "222222222"]);
    assert!(cfg.channels.discord.enabled);
    assert!(!cfg.channels.whatsapp.enabled);
    let validate = run(h, &["config", "validate"]);
    assert!(validate.status.success(), "{}", text(&validate));

    // Files.
    let data = h.join(".moltbot");
    assert!(data.join("workspace/SOUL.md").is_file());
    assert!(data.join("workspace/AGENTS.md").is_file());
    assert!(data.join("skills/grocery-list/SKILL.md").is_file());
    assert!(data.join("skills/grocery-list/groceries.md").is_file());
    assert!(!data.join("skills/weather-brief").exists());

    // Cron jobs, allowed senders, the transcript.
    let cron = run(h, &["cron", "list", "--json"]);
    assert!(cron.status.success(), "{}", text(&cron));
    let jobs: serde_json::Value = serde_json::from_slice(&cron.stdout).unwrap();
    let jobs = jobs.as_array().unwrap();
    let brief = jobs
        .iter()
        .find(|j| j["name"] == "Morning brief")
        .expect("Morning brief imported");
    assert_eq!(brief["id"], "2b229d16-bc2b-4648-a2fc-88cc8cd8a0f1");
    assert_eq!(brief["schedule_expr"], "0 7 * * 1-5");
    assert_eq!(brief["tz"], "Europe/Berlin");
    assert_eq!(brief["payload"]["kind"], "prompt");
    assert_eq!(brief["payload"]["text"], "Summarize my day ahead");
    let water = jobs
        .iter()
        .find(|j| j["name"] == "Water reminder")
        .expect("Water reminder imported");
    assert_eq!(water["schedule_kind"], "every");
    assert_eq!(water["schedule_expr"], "2h");
    assert_eq!(water["payload"]["kind"], "message");
    assert!(!jobs.iter().any(|j| j["name"] == "Disk check"));
    assert!(!jobs.iter().any(|j| j["name"] == "heartbeat-molty"));

    let pairing = run(h, &["pairing", "list"]);
    let p = text(&pairing);
    assert!(p.contains("telegram  111111111"), "{p}");
    assert!(p.contains("telegram  222222222"), "{p}");
    assert!(p.contains("whatsapp  +15555550123"), "{p}");

    let sessions = run(h, &["sessions", "list"]);
    assert!(text(&sessions).contains(SESSION), "{}", text(&sessions));
    let show = run(h, &["sessions", "show", SESSION]);
    let s = text(&show);
    assert!(s.contains("[user] Hello Molty, what can you do?"), "{s}");
    assert!(s.contains("[user] Remind me to call Ana tomorrow"), "{s}");
    assert!(!s.contains("OPENCLAW_INTERNAL_CONTEXT"), "{s}");

    // A second run adds nothing and changes no file.
    let toml_before = std::fs::read_to_string(&path).unwrap();
    let second = migrate(h, &[]);
    assert!(
        summary(&second).starts_with("summary: 0 mapped,"),
        "{}",
        text(&second)
    );
    assert_eq!(std::fs::read_to_string(&path).unwrap(), toml_before);
    // A dry run now sees everything as already there (it reads the store read-only).
    let dry = migrate(h, &["--dry-run"]);
    assert!(
        summary(&dry).starts_with("summary: 0 mapped,"),
        "{}",
        text(&dry)
    );
    let cron2 = run(h, &["cron", "list", "--json"]);
    let jobs2: serde_json::Value = serde_json::from_slice(&cron2.stdout).unwrap();
    assert_eq!(jobs2.as_array().unwrap().len(), jobs.len());
    let p2 = text(&run(h, &["pairing", "list"]));
    assert_eq!(p2.matches("via migrate").count(), 3, "{p2}");
    let list2 = text(&run(h, &["sessions", "list", "--json"]));
    assert_eq!(list2.matches(SESSION).count(), 1, "{list2}");
    let show2 = text(&run(h, &["sessions", "show", SESSION]));
    assert_eq!(show2.matches("[user]").count(), 2, "{show2}");
}

#[test]
fn existing_config_is_merged_not_replaced() {
    let home = tempfile::tempdir().unwrap();
    let path = home.path().join("custom.toml");
    std::fs::write(&path, "[log]\nlevel = \"debug\"\n").unwrap();
    let src = fixture();
    let out = run(
        home.path(),
        &[
            "--config",
            path.to_str().unwrap(),
            "migrate",
            "--from-clawdbot",
            src.to_str().unwrap(),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let cfg = moltbot_core::Config::load_with_env(Some(&path), &[]).unwrap();
    assert_eq!(cfg.log.level, "debug");
    assert_eq!(cfg.model.openai.model, "mock-gpt");
}

#[test]
fn folders_that_are_not_an_openclaw_home_are_refused() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    // An empty folder.
    let empty = h.join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run(h, &["migrate", "--from-clawdbot", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("is not a Clawdbot/Moltbot/OpenClaw home"),
        "{}",
        text(&out)
    );
    // moltbot's own data folder.
    let init = run(h, &["config", "init"]);
    assert!(init.status.success(), "{}", text(&init));
    let ours = h.join(".moltbot");
    let out = run(h, &["migrate", "--from-clawdbot", ours.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("moltbot's own data"), "{}", text(&out));
    // No default home: ~/.moltbot is ours and the others are missing.
    let out = run(h, &["migrate", "--from-clawdbot"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).contains("no Clawdbot/Moltbot/OpenClaw home found"),
        "{}",
        text(&out)
    );
    // Broken JSON5.
    let bad = h.join("bad");
    std::fs::create_dir(&bad).unwrap();
    std::fs::write(bad.join("openclaw.json"), "{ channels: ").unwrap();
    let out = run(h, &["migrate", "--from-clawdbot", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("is not valid JSON5"), "{}", text(&out));
}

#[test]
fn default_home_is_found_under_home() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    let oc = h.join(".openclaw");
    std::fs::create_dir(&oc).unwrap();
    std::fs::copy(fixture().join("openclaw.json"), oc.join("openclaw.json")).unwrap();
    let out = run(h, &["migrate", "--from-clawdbot", "--dry-run"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(".openclaw/openclaw.json"),
        "{}",
        text(&out)
    );
}
