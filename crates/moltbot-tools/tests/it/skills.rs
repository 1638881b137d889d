//! Skills on real folders: parsing and its errors, sha256 pins, choosing a skill for a turn,
//! the registry rows, `check`, and hot reload through the real `notify` watcher.

use futures::future::BoxFuture;
use moltbot_core::{Tool, ToolContext, ToolError, ToolOutput, ToolSpec};
use moltbot_tools::skills::{self, parse_skill, scan, SkillError, Skills, SkillsError};
use moltbot_tools::{Capability, CapabilityKind, CapabilityStatus, Registry};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const WEATHER: &str = "\
---
name: weather
description: Current weather and forecasts for a city.
version: \"1.2.0\"
triggers: [weather, forecast, \"will it rain\"]
intents: [weather.get]
tools: [web_fetch]
---

# Weather

Fetch the forecast from the city's weather service and answer in one short paragraph.
";

/// Write `<root>/<folder>/SKILL.md`.
fn write_skill(root: &Path, folder: &str, text: &str) -> PathBuf {
    let dir = root.join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("SKILL.md"), text).unwrap();
    dir
}

/// A minimal valid skill text.
fn skill_text(name: &str, description: &str, extra: &str) -> String {
    format!("---\nname: {name}\ndescription: {description}\n{extra}---\nDo the {name} thing.\n")
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn skill_row(registry: &Registry, name: &str) -> Option<Capability> {
    registry
        .list()
        .into_iter()
        .find(|c| c.kind == CapabilityKind::Skill && c.name == name)
}

/// Poll `cond` every 50 ms for up to 10 s (no timing assertion: only that it happens).
async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

struct Named(ToolSpec);

impl Tool for Named {
    fn spec(&self) -> &ToolSpec {
        &self.0
    }
    fn call<'a>(
        &'a self,
        _arguments: serde_json::Value,
        _ctx: &'a ToolContext,
    ) -> BoxFuture<'a, Result<ToolOutput, ToolError>> {
        Box::pin(async { Ok(ToolOutput::text(self.0.name.clone())) })
    }
}

fn registry_with_tools() -> Registry {
    let registry = Registry::new();
    for (name, description, triggers) in [
        (
            "web_fetch",
            "Fetch a web page.",
            &["fetch", "url", "weather"][..],
        ),
        (
            "exec",
            "Run a shell command.",
            &["run", "command", "weather"][..],
        ),
    ] {
        let tool = Arc::new(Named(ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters: serde_json::json!({"type": "object"}),
        }));
        registry.add(tool, "builtin", triggers);
    }
    registry
}

#[test]
fn a_valid_skill_parses_with_every_field() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_skill(root.path(), "weather", WEATHER);
    std::fs::create_dir_all(dir.join("data")).unwrap();
    std::fs::write(dir.join("data/cities.csv"), "city\nBerlin\n").unwrap();
    std::fs::write(dir.join("README.md"), "notes").unwrap();
    std::fs::write(dir.join(".hidden.swp"), "editor junk").unwrap();

    let skill = parse_skill(&dir).unwrap();
    assert_eq!(skill.name, "weather");
    assert_eq!(
        skill.description,
        "Current weather and forecasts for a city."
    );
    assert_eq!(skill.version.as_deref(), Some("1.2.0"));
    assert_eq!(skill.triggers, ["weather", "forecast", "will it rain"]);
    assert_eq!(skill.intents, ["weather.get"]);
    assert_eq!(skill.tools, ["web_fetch"]);
    assert!(skill
        .instructions
        .starts_with("# Weather\n\nFetch the forecast"));
    assert!(skill.instructions.ends_with("short paragraph."));
    assert_eq!(skill.dir, dir);
    assert_eq!(skill.files, ["README.md", "data/cities.csv"]);
    assert!(skill.sha256.is_empty());

    let prompt = skill.prompt();
    assert!(
        prompt.starts_with("## Skill: weather\n\n# Weather"),
        "{prompt}"
    );
    assert!(prompt.contains("README.md, data/cities.csv"), "{prompt}");
    assert!(
        !prompt.contains("Berlin"),
        "resources are listed, not loaded"
    );

    // Only the required fields: no tools, no triggers.
    let dir = write_skill(root.path(), "tiny", &skill_text("tiny", "Small.", ""));
    let tiny = parse_skill(&dir).unwrap();
    assert!(tiny.tools.is_empty() && tiny.triggers.is_empty() && tiny.version.is_none());
}

#[test]
fn broken_skills_name_the_problem_and_the_others_still_load() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    write_skill(r, "weather", WEATHER);
    write_skill(r, "wrong-name", &skill_text("wether", "x", ""));
    write_skill(r, "BadName", &skill_text("BadName", "x", ""));
    write_skill(r, "no-name", "---\ndescription: x\n---\nbody\n");
    write_skill(
        r,
        "no-description",
        "---\nname: no-description\n---\nbody\n",
    );
    write_skill(
        r,
        "two-lines",
        "---\nname: two-lines\ndescription: |\n  one\n  two\n---\nbody\n",
    );
    write_skill(
        r,
        "long-description",
        &skill_text("long-description", &"a".repeat(301), ""),
    );
    write_skill(
        r,
        "unknown-key",
        &skill_text("unknown-key", "x", "color: red\n"),
    );
    write_skill(r, "no-front-matter", "# Just markdown\n");
    write_skill(r, "unclosed", "---\nname: unclosed\ndescription: x\n");
    std::fs::create_dir_all(r.join("no-file")).unwrap();
    write_skill(
        r,
        "bad-tool",
        &skill_text("bad-tool", "x", "tools: [Web-Fetch]\n"),
    );
    write_skill(
        r,
        "float-version",
        &skill_text("float-version", "x", "version: 1.0\n"),
    );
    write_skill(
        r,
        "bad-version",
        &skill_text("bad-version", "x", "version: latest\n"),
    );
    write_skill(
        r,
        "bad-yaml",
        &skill_text("bad-yaml", "x", "triggers: weather\n"),
    );
    write_skill(
        r,
        "too-long",
        &format!(
            "---\nname: too-long\ndescription: x\n---\n{}\n",
            "word ".repeat(2000)
        ),
    );
    write_skill(
        r,
        "empty-body",
        "---\nname: empty-body\ndescription: x\n---\n\n",
    );
    // Not skills: hidden folders and files at the top.
    std::fs::create_dir_all(r.join(".git")).unwrap();
    std::fs::write(r.join("README.md"), "my skills").unwrap();

    let report = scan(r).unwrap();
    let loaded: Vec<&str> = report.loaded.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(loaded, ["weather"]);
    let error = |folder: &str| -> String {
        report
            .errors
            .iter()
            .find(|(f, _)| f == folder)
            .unwrap_or_else(|| panic!("no error for {folder}: {:?}", report.errors))
            .1
            .clone()
    };
    let file = |folder: &str| r.join(folder).join("SKILL.md").display().to_string();
    let expect = [
        (
            "wrong-name",
            "`name` must match the folder name `wrong-name`, got `wether`",
        ),
        ("BadName", "`name` must be `[a-z][a-z0-9_-]*`"),
        ("no-name", "`name` is required"),
        ("no-description", "`description` is required"),
        ("two-lines", "`description` must be one line"),
        (
            "long-description",
            "`description` must be at most 300 characters, got 301",
        ),
        (
            "unknown-key",
            "front matter, line 4: unknown field `color`, expected one of",
        ),
        ("no-front-matter", "must start with a `---` line"),
        ("unclosed", "no closing `---` line"),
        ("no-file", "missing"),
        ("bad-tool", "`tools` entries must be tool names"),
        ("float-version", "hint: quote it"),
        ("bad-version", "`version` must look like `1.2.3`"),
        (
            "bad-yaml",
            "line 4: triggers: invalid type: string \"weather\", expected a sequence",
        ),
        (
            "too-long",
            "the instructions must be at most 8192 bytes, got 9999",
        ),
        ("empty-body", "instructions"),
    ];
    for (folder, needle) in expect {
        let message = error(folder);
        assert!(
            message.starts_with(&file(folder)),
            "{folder}: should name the file: {message}"
        );
        assert!(message.contains(needle), "{folder}: {message}");
    }
    assert_eq!(report.errors.len(), expect.len(), "{:?}", report.errors);

    // In the registry: one loaded row, one error row per broken folder with its reason.
    let registry = Registry::new();
    let skills = Skills::new();
    let changes = skills.apply(&report, &registry);
    assert_eq!(changes.added, ["weather"]);
    assert_eq!(changes.broken.len(), expect.len());
    // Applying the same scan again changes nothing (and logs nothing).
    assert!(skills.apply(&report, &registry).is_empty());
    assert_eq!(
        skill_row(&registry, "weather").unwrap().status,
        CapabilityStatus::Loaded
    );
    let row = skill_row(&registry, "wrong-name").unwrap();
    assert_eq!(row.status, CapabilityStatus::Error);
    assert!(row.reason.unwrap().contains("got `wether`"));
    assert_eq!(row.source, r.join("wrong-name").display().to_string());
    assert_eq!(skills.list().len(), 1);
    assert_eq!(skills.errors().len(), expect.len());
}

#[test]
fn parse_errors_have_kinds() {
    let root = tempfile::tempdir().unwrap();
    let dir = write_skill(root.path(), "x", "no fences");
    let e = parse_skill(&dir).unwrap_err();
    assert!(matches!(e, SkillError::Format { .. }));
    assert_eq!(e.kind(), "skill_format");
    let e = parse_skill(&root.path().join("nothing")).unwrap_err();
    assert_eq!(e.kind(), "skill_missing");
}

#[test]
fn sha256_pins_are_checked() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("pinned");
    std::fs::create_dir_all(dir.join("data")).unwrap();
    let content = b"city,lat,lon\nBerlin,52.5,13.4\n";
    std::fs::write(dir.join("data/cities.csv"), content).unwrap();
    let pin = |hash: &str| {
        skill_text(
            "pinned",
            "Pinned resources.",
            &format!("sha256:\n  data/cities.csv: {hash}\n"),
        )
    };
    // The real hash (upper case is fine): loads.
    std::fs::write(
        dir.join("SKILL.md"),
        pin(&sha256_hex(content).to_uppercase()),
    )
    .unwrap();
    let skill = parse_skill(&dir).unwrap();
    assert_eq!(skill.sha256["data/cities.csv"], sha256_hex(content));

    // The file changes: the pin no longer matches.
    std::fs::write(dir.join("data/cities.csv"), b"city\nEvil\n").unwrap();
    let e = parse_skill(&dir).unwrap_err();
    assert_eq!(e.kind(), "skill_pin_mismatch");
    let message = e.to_string();
    assert!(
        message.contains("`sha256` pin of `data/cities.csv` does not match"),
        "{message}"
    );
    assert!(message.contains(&sha256_hex(b"city\nEvil\n")), "{message}");

    // The file goes away.
    std::fs::remove_file(dir.join("data/cities.csv")).unwrap();
    let message = parse_skill(&dir).unwrap_err().to_string();
    assert!(message.contains("does not exist"), "{message}");

    // Pins outside the folder, and not-a-hash values, are field errors.
    let hash = sha256_hex(content);
    for (key, value, needle) in [
        ("../secret", hash.as_str(), "keys must be relative paths"),
        ("SKILL.md", hash.as_str(), "keys must be relative paths"),
        ("data/cities.csv", "abc", "values must be 64 hex digits"),
    ] {
        std::fs::write(
            dir.join("SKILL.md"),
            skill_text("pinned", "x", &format!("sha256:\n  {key}: {value}\n")),
        )
        .unwrap();
        let message = parse_skill(&dir).unwrap_err().to_string();
        assert!(message.contains(needle), "{key}: {message}");
    }
}

#[test]
fn turns_pick_a_skill_by_intent_or_trigger() {
    let root = tempfile::tempdir().unwrap();
    write_skill(root.path(), "weather", WEATHER);
    write_skill(
        root.path(),
        "git-helper",
        &skill_text(
            "git-helper",
            "Explain git commands.",
            "triggers: [git, rebase, \"merge conflict\"]\nintents: [dev.git]\n",
        ),
    );
    let skills = Skills::new();
    skills.load(root.path(), &Registry::new()).unwrap();
    let pick = |text: &str, intent: Option<&str>| {
        skills
            .select(text, intent)
            .map(|s| s.name.clone())
            .unwrap_or_default()
    };
    assert_eq!(pick("What's the WEATHER in Paris?", None), "weather");
    assert_eq!(pick("will it rain tomorrow", None), "weather");
    assert_eq!(pick("help me with a merge conflict", None), "git-helper");
    // Whole words only.
    assert_eq!(pick("the weatherman and his gitlab", None), "");
    // The intent wins over trigger words.
    assert_eq!(
        pick("weather forecast please", Some("dev.git")),
        "git-helper"
    );
    // An intent no skill lists falls back to the triggers.
    assert_eq!(pick("weather please", Some("chitchat")), "weather");
    assert_eq!(pick("hi", None), "");
    assert_eq!(pick("hi", Some("greeting")), "");
    assert_eq!(skills.get("weather").unwrap().tools, ["web_fetch"]);
    assert!(skills.get("nope").is_none());
}

#[test]
fn a_skill_is_offered_only_the_tools_it_declares() {
    let root = tempfile::tempdir().unwrap();
    write_skill(root.path(), "weather", WEATHER);
    let registry = registry_with_tools();
    let skills = Skills::new();
    skills.load(root.path(), &registry).unwrap();

    let row = skill_row(&registry, "weather").unwrap();
    assert_eq!(row.status, CapabilityStatus::Loaded);
    assert_eq!(row.tools, ["web_fetch"]);
    assert_eq!(
        row.source,
        root.path().join("weather").display().to_string()
    );

    // Both tools match "weather", but the skill declares only web_fetch.
    let text = "weather: run the forecast command";
    assert_eq!(registry.select(text, &[], None).len(), 2);
    let skill = skills.select(text, None).unwrap();
    let offered: Vec<String> = registry
        .select(text, &skill.tools, Some(&skill.tools))
        .iter()
        .map(|t| t.spec().name.clone())
        .collect();
    assert_eq!(offered, ["web_fetch"]);
}

#[test]
fn check_reports_each_skill_and_a_missing_folder() {
    let root = tempfile::tempdir().unwrap();
    write_skill(root.path(), "weather", WEATHER);
    write_skill(root.path(), "broken", "nothing");
    let checks = skills::check(root.path());
    assert_eq!(checks.len(), 2);
    assert_eq!(checks[0].name, "broken");
    assert!(!checks[0].ok);
    assert!(checks[0].message.contains("must start with"));
    assert_eq!(checks[1].name, "weather");
    assert!(checks[1].ok);
    assert_eq!(
        checks[1].message,
        "v1.2.0, 3 triggers, 1 intent, tools: web_fetch, 0 files"
    );

    let missing = root.path().join("absent");
    let checks = skills::check(&missing);
    assert_eq!(checks.len(), 1);
    assert!(checks[0].ok);
    assert!(checks[0].message.contains("no skills folder"));
    assert!(!missing.exists(), "check creates nothing");
}

#[tokio::test]
async fn watching_a_missing_folder_is_reported_and_creates_nothing() {
    let root = tempfile::tempdir().unwrap();
    let missing = root.path().join("skills");
    let skills = Skills::new();
    let e = skills
        .watch(
            &missing,
            Arc::new(Registry::new()),
            CancellationToken::new(),
        )
        .unwrap_err();
    assert!(matches!(e, SkillsError::DirMissing { .. }));
    assert_eq!(e.kind(), "skills_dir_missing");
    assert!(e.to_string().contains("does not exist"), "{e}");
    assert!(!missing.exists());
    assert!(matches!(
        skills.load(&missing, &Registry::new()),
        Err(SkillsError::DirMissing { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skills_hot_reload_while_watched() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().to_path_buf();
    write_skill(
        &dir,
        "git-helper",
        &skill_text("git-helper", "Git help.", ""),
    );
    let registry = Arc::new(registry_with_tools());
    let skills = Skills::new();
    skills.load(&dir, &registry).unwrap();
    let shutdown = CancellationToken::new();
    let task = skills
        .watch(&dir, registry.clone(), shutdown.clone())
        .unwrap();

    // Added. The watcher may see the file half written first (an error row); it reloads
    // on the write's later events, so wait for the loaded row.
    write_skill(&dir, "weather", WEATHER);
    eventually("weather appears", || {
        skill_row(&registry, "weather").is_some_and(|c| c.status == CapabilityStatus::Loaded)
    })
    .await;
    let row = skill_row(&registry, "weather").unwrap();
    assert_eq!(row.status, CapabilityStatus::Loaded);
    assert_eq!(row.tools, ["web_fetch"]);
    eventually("weather selectable", || {
        skills.select("weather?", None).is_some()
    })
    .await;

    // Changed.
    std::fs::write(
        dir.join("weather/SKILL.md"),
        WEATHER.replace("Current weather and forecasts", "Forecasts only"),
    )
    .unwrap();
    eventually("description updated", || {
        skill_row(&registry, "weather").is_some_and(|c| c.description.starts_with("Forecasts only"))
    })
    .await;
    eventually("snapshot updated", || {
        skills
            .get("weather")
            .is_some_and(|s| s.description.starts_with("Forecasts only"))
    })
    .await;

    // Broken: an error row with the reason, and no longer selectable.
    std::fs::write(
        dir.join("weather/SKILL.md"),
        WEATHER.replace("name: weather", "name: wether"),
    )
    .unwrap();
    eventually("weather broken", || {
        skill_row(&registry, "weather").is_some_and(|c| {
            c.status == CapabilityStatus::Error
                && c.reason
                    .as_deref()
                    .is_some_and(|r| r.contains("got `wether`"))
        })
    })
    .await;
    let reason = skill_row(&registry, "weather").unwrap().reason.unwrap();
    assert!(reason.contains("got `wether`"), "{reason}");
    assert!(skills.get("weather").is_none());
    assert!(skills.select("weather?", None).is_none());

    // Removed.
    std::fs::remove_dir_all(dir.join("weather")).unwrap();
    eventually("weather gone", || skill_row(&registry, "weather").is_none()).await;
    // The untouched skill stayed throughout.
    assert_eq!(
        skill_row(&registry, "git-helper").unwrap().status,
        CapabilityStatus::Loaded
    );

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .expect("the watcher stops on shutdown")
        .unwrap();
}
