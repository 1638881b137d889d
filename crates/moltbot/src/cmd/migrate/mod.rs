//! `moltbot migrate --from-clawdbot [PATH] [--dry-run]`: import a Clawdbot/Moltbot/OpenClaw
//! home into moltbot's config (`--config`, default `~/.moltbot/moltbot.toml`) and store.
//!
//! What goes where:
//! - config (`openclaw.json`, JSON5) → the moltbot config file, merged into what is there,
//!   validated before it is written, written 0600 ([`map`] says which keys).
//! - channel `allowFrom` lists and approved pairings → allowed senders in the store.
//! - cron jobs (agent-turn and system-event jobs) → the store's cron jobs, keeping
//!   OpenClaw's job id, so a second run finds them.
//! - workspace markdown (AGENTS.md, SOUL.md, USER.md, IDENTITY.md, MEMORY.md, memory/…) →
//!   `<data dir>/workspace/`, kept for reference (moltbot does not put them in prompts);
//!   `skills/<name>/SKILL.md` folders that moltbot's skill loader accepts →
//!   `<data dir>/skills/<name>/`.
//! - transcripts → sessions `openclaw-<session id>` (channel `openclaw`), user and
//!   assistant text only.
//!
//! The report goes to stdout, one line per item, then a summary line. Secrets are written
//! to the config file but shown as `set`. `--dry-run` reads only. Exit codes: 0 done (even
//! with items not mapped), 1 the home cannot be read or the merged config is invalid.

mod map;
mod source;

use crate::cli::MigrateArgs;
use moltbot_core::config::default_config_path;
use moltbot_core::{Config, Role};
use moltbot_store::{NewMessage, Store};
use moltbot_tools::cron::{parse_tz, CronJob, CronPayload, CronTarget, Schedule, Tz};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The session that cron jobs without a chat to deliver to write into.
const CRON_SESSION: &str = "openclaw-cron";
/// Workspace files copied when present (besides `memory/*.md`).
const WORKSPACE_FILES: [&str; 8] = [
    "AGENTS.md",
    "SOUL.md",
    "USER.md",
    "IDENTITY.md",
    "MEMORY.md",
    "TOOLS.md",
    "HEARTBEAT.md",
    "BOOTSTRAP.md",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Mapped,
    Unchanged,
    NotMapped,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub status: Status,
    pub what: String,
    /// Where it went, or why not.
    pub detail: String,
}

impl Item {
    pub fn new(status: Status, what: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            what: what.into(),
            detail: detail.into(),
        }
    }
}

#[derive(Debug, Default)]
struct Report {
    items: Vec<Item>,
}

impl Report {
    fn push(&mut self, status: Status, what: impl Into<String>, detail: impl Into<String>) {
        self.items.push(Item::new(status, what, detail));
    }

    fn print(&self, dry_run: bool) {
        for i in &self.items {
            let mut lines = i.detail.lines();
            let first = lines.next().unwrap_or("");
            match i.status {
                Status::Mapped if dry_run => outln!("would map   {} → {first}", i.what),
                Status::Mapped => outln!("mapped      {} → {first}", i.what),
                Status::Unchanged => outln!("unchanged   {} ({first})", i.what),
                Status::NotMapped => outln!("not mapped  {}: {first}", i.what),
            }
            for rest in lines {
                outln!("            {rest}");
            }
        }
        let count = |s| self.items.iter().filter(|i| i.status == s).count();
        outln!(
            "summary: {} mapped, {} unchanged, {} not mapped{}",
            count(Status::Mapped),
            count(Status::Unchanged),
            count(Status::NotMapped),
            if dry_run {
                " (dry run: nothing written)"
            } else {
                ""
            }
        );
    }
}

pub fn run(config_path: Option<&Path>, args: MigrateArgs) -> anyhow::Result<ExitCode> {
    let user_home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let explicit = args.from_clawdbot.flatten();
    let dir = source::locate(explicit.as_deref(), &user_home)?;
    let home = source::open(&dir)?;
    let out_path = config_path
        .map(Path::to_path_buf)
        .unwrap_or_else(default_config_path);
    eprintln!(
        "migrate: reading {} into {}{}",
        home.config_file.display(),
        out_path.display(),
        if args.dry_run { " (dry run)" } else { "" }
    );
    let mut report = Report::default();

    // 1. The config file.
    let mapped = map::config(&home.config);
    let (cfg, new_text) = merge_config(&out_path, &mapped.settings, &mut report)?;
    report.items.extend(mapped.items);
    let data_dir = cfg.data.resolved_dir();
    if home.dir.canonicalize().ok() == data_dir.canonicalize().ok() {
        anyhow::bail!(
            "{} is moltbot's own data folder (data.dir); nothing to import",
            home.dir.display()
        );
    }
    if !args.dry_run {
        if let Some(text) = new_text {
            if let Some(parent) = out_path.parent() {
                std::fs::create_dir_all(parent)?;
            }
            let tmp = out_path.with_extension("toml.migrate-tmp");
            write_private(&tmp, &text)?;
            std::fs::rename(&tmp, &out_path)?;
        }
    }

    // 2. Files.
    workspace(&home, &data_dir, args.dry_run, &mut report);

    // 3. The store.
    let (jobs, job_problems) = source::cron_jobs(&home);
    let (allow_extra, allow_problems) = source::pairing_allow(&home);
    let (transcripts, transcript_problems) = source::transcripts(&home);
    for p in job_problems
        .into_iter()
        .chain(allow_problems)
        .chain(transcript_problems)
    {
        report.push(Status::NotMapped, "unreadable", p);
    }
    let mut allow = mapped.allow;
    allow.extend(
        allow_extra
            .into_iter()
            .map(|(c, s)| (c, s, "approved pairing".to_string())),
    );
    let rt = super::small_runtime()?;
    let store = if args.dry_run {
        None
    } else {
        std::fs::create_dir_all(&data_dir)?;
        Some(super::open_store(&cfg, &rt)?)
    };
    // A dry run looks into an existing SQLite store read-only, to tell what is already
    // there (with PostgreSQL it reports everything as new).
    let peek = Peek::open(&data_dir.join("moltbot.db"), args.dry_run);
    let default_tz = parse_tz(&cfg.tools.cron.default_tz).unwrap_or(Tz::UTC);
    let max_jobs = cfg.tools.cron.max_jobs as usize;
    rt.block_on(async {
        allowed(store.as_ref(), &peek, &allow, &mut report).await?;
        for job in &jobs {
            cron_job(
                store.as_ref(),
                &peek,
                job,
                default_tz,
                max_jobs,
                &mut report,
            )
            .await?;
        }
        for t in &transcripts {
            transcript(store.as_ref(), &peek, t, &mut report).await?;
        }
        anyhow::Ok(())
    })?;
    report.print(args.dry_run);
    Ok(ExitCode::SUCCESS)
}

/// Merge `settings` into the TOML file at `path` and check that the result loads (through a
/// private temporary file, removed at once). Returns the config as it will load, and the new
/// file text when it differs from what is there.
fn merge_config(
    path: &Path,
    settings: &[map::Setting],
    report: &mut Report,
) -> anyhow::Result<(Config, Option<String>)> {
    let before = if path.exists() {
        std::fs::read_to_string(path)?
    } else {
        String::new()
    };
    let mut table: toml::Table = toml::from_str(&before)
        .map_err(|e| anyhow::anyhow!("{} is not valid TOML: {e}", path.display()))?;
    for s in settings {
        let shown = if s.secret {
            "set".to_string()
        } else {
            s.value.to_string()
        };
        let changed = set_path(&mut table, &s.key, s.value.clone())?;
        let status = if changed {
            Status::Mapped
        } else {
            Status::Unchanged
        };
        let detail = if changed {
            format!("{} = {shown}", s.key)
        } else {
            format!("{} already {shown}", s.key)
        };
        report.push(status, s.from.clone(), detail);
    }
    let text = toml::to_string_pretty(&table)?;
    // Check the merged file loads before anything is written (also in a dry run).
    let probe = std::env::temp_dir().join(format!("moltbot-migrate-{}.toml", uuid::Uuid::new_v4()));
    write_private(&probe, &text)?;
    let loaded = Config::load(Some(&probe));
    let _ = std::fs::remove_file(&probe);
    let cfg = loaded.map_err(|e| anyhow::anyhow!("the migrated config would be invalid: {e}"))?;
    Ok((cfg, (text != before).then_some(text)))
}

/// Set a dotted key; returns whether the value changed.
fn set_path(table: &mut toml::Table, key: &str, value: toml::Value) -> anyhow::Result<bool> {
    let mut parts: Vec<&str> = key.split('.').collect();
    let last = parts.pop().unwrap_or(key);
    let mut t = table;
    for p in parts {
        let entry = t
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| anyhow::anyhow!("config key `{p}` must be a table to set `{key}`"))?;
    }
    let changed = t.get(last) != Some(&value);
    t.insert(last.to_string(), value);
    Ok(changed)
}

/// Write a file readable by its owner only.
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        opts.mode(0o600);
        let mut f = opts.open(path)?;
        // An existing file keeps its mode on open: narrow it.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(text.as_bytes())
    }
    #[cfg(not(unix))]
    {
        opts.open(path)?.write_all(text.as_bytes())
    }
}

/// The agent workspace: OpenClaw's configured path if it exists, else `<home>/workspace`.
fn workspace_dir(home: &source::Home) -> Option<PathBuf> {
    let configured = home.config["agents"]["defaults"]["workspace"]
        .as_str()
        .map(|p| moltbot_core::config::expand_home(Path::new(p)));
    configured
        .into_iter()
        .chain(std::iter::once(home.dir.join("workspace")))
        .find(|p| p.is_dir())
}

fn workspace(home: &source::Home, data_dir: &Path, dry_run: bool, report: &mut Report) {
    let Some(ws) = workspace_dir(home) else {
        report.push(
            Status::NotMapped,
            "workspace",
            "no agent workspace folder found",
        );
        return;
    };
    eprintln!("migrate: agent workspace {}", ws.display());
    let dest = data_dir.join("workspace");
    let mut files: Vec<PathBuf> = WORKSPACE_FILES.iter().map(|f| ws.join(f)).collect();
    if let Ok(entries) = std::fs::read_dir(ws.join("memory")) {
        let mut notes: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "md"))
            .collect();
        notes.sort();
        files.extend(notes);
    }
    for src in files.into_iter().filter(|p| p.is_file()) {
        let rel = src.strip_prefix(&ws).unwrap_or(&src).to_path_buf();
        let label = format!("workspace/{}", rel.display());
        copy_file(&src, &dest.join(&rel), &label, dry_run, report);
    }
    let Ok(skills) = std::fs::read_dir(ws.join("skills")) else {
        return;
    };
    let mut skills: Vec<PathBuf> = skills
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    skills.sort();
    for dir in skills {
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let what = format!("workspace/skills/{name}");
        if !dir.join("SKILL.md").is_file() {
            report.push(Status::NotMapped, what, "no SKILL.md");
            continue;
        }
        if let Err(e) = moltbot_tools::skills::parse_skill(&dir) {
            report.push(
                Status::NotMapped,
                what,
                format!("moltbot's skill loader refuses it: {e}"),
            );
            continue;
        }
        let target = data_dir.join("skills").join(&name);
        for file in walk(&dir) {
            let rel = file.strip_prefix(&dir).unwrap_or(&file).to_path_buf();
            let label = format!("{what}/{}", rel.display());
            copy_file(&file, &target.join(&rel), &label, dry_run, report);
        }
    }
}

/// Files under `dir`, recursively, sorted; hidden entries skipped.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if p.is_dir() {
            out.extend(walk(&p));
        } else if p.is_file() {
            out.push(p);
        }
    }
    out.sort();
    out
}

/// Copy one file unless the destination already has it; never overwrites different content.
fn copy_file(src: &Path, dest: &Path, label: &str, dry_run: bool, report: &mut Report) {
    let result = (|| -> std::io::Result<Status> {
        let bytes = std::fs::read(src)?;
        if dest.exists() {
            return Ok(if std::fs::read(dest)? == bytes {
                Status::Unchanged
            } else {
                Status::NotMapped
            });
        }
        if !dry_run {
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(dest, &bytes)?;
        }
        Ok(Status::Mapped)
    })();
    let where_ = dest.display().to_string();
    match result {
        Ok(Status::Mapped) => report.push(Status::Mapped, label, where_),
        Ok(Status::Unchanged) => {
            report.push(Status::Unchanged, label, format!("already in {where_}"))
        }
        Ok(Status::NotMapped) => report.push(
            Status::NotMapped,
            label,
            format!("{where_} exists with other content; left as it is"),
        ),
        Err(e) => report.push(Status::NotMapped, label, format!("copy failed: {e}")),
    }
}

/// Read-only look-ups in an existing store for a dry run (the store's own tables).
struct Peek(Option<rusqlite::Connection>);

impl Peek {
    fn open(db: &Path, dry_run: bool) -> Peek {
        let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
        Peek(
            (dry_run && db.is_file())
                .then(|| rusqlite::Connection::open_with_flags(db, flags).ok())
                .flatten(),
        )
    }

    fn has(&self, sql: &str, params: &[&str]) -> bool {
        self.0.as_ref().is_some_and(|c| {
            c.query_row(sql, rusqlite::params_from_iter(params), |_| Ok(()))
                .is_ok()
        })
    }
}

async fn allowed(
    store: Option<&Store>,
    peek: &Peek,
    allow: &[(String, String, String)],
    report: &mut Report,
) -> anyhow::Result<()> {
    for (channel, sender, from) in allow {
        let what = format!("{from} {channel}:{sender}");
        if !["telegram", "whatsapp", "discord", "slack"].contains(&channel.as_str()) {
            report.push(Status::NotMapped, what, "moltbot has no such channel");
            continue;
        }
        match store {
            Some(s) if s.allowed_contains(channel, sender).await? => {
                report.push(Status::Unchanged, what, "already an allowed sender");
            }
            Some(s) => {
                s.allowed_add(channel, sender, "migrate").await?;
                report.push(
                    Status::Mapped,
                    what,
                    "allowed sender (moltbot pairing list)",
                );
            }
            None if peek.has(
                "SELECT 1 FROM allowed_senders WHERE channel = ?1 AND sender_id = ?2",
                &[channel, sender],
            ) =>
            {
                report.push(Status::Unchanged, what, "already an allowed sender");
            }
            None => report.push(
                Status::Mapped,
                what,
                "allowed sender (moltbot pairing list)",
            ),
        }
    }
    Ok(())
}

/// One OpenClaw cron job → a stored job with the same id, or why not.
async fn cron_job(
    store: Option<&Store>,
    peek: &Peek,
    job: &Value,
    default_tz: Tz,
    max_jobs: usize,
    report: &mut Report,
) -> anyhow::Result<()> {
    let id = job["id"].as_str().unwrap_or("").to_string();
    let name = job["name"].as_str().unwrap_or(&id).to_string();
    let what = format!("cron job {name:?}");
    match build_job(job, default_tz, now_ms()) {
        Err(why) => report.push(Status::NotMapped, what, why),
        Ok(stored) => {
            let detail = format!(
                "cron job {} ({} {}, {} to {})",
                stored.id,
                stored.schedule_kind,
                stored.schedule_expr,
                stored.payload.kind(),
                match &stored.target {
                    CronTarget::Chat { channel, chat_id } => format!("{channel}:{chat_id}"),
                    CronTarget::Session { id } => format!("session {id}"),
                }
            );
            match store {
                Some(s) if s.cron_get(&stored.id).await?.is_some() => {
                    report.push(Status::Unchanged, what, format!("already {detail}"));
                }
                Some(s) => {
                    if s.cron_add(stored, max_jobs).await? {
                        report.push(Status::Mapped, what, detail);
                    } else {
                        report.push(
                            Status::NotMapped,
                            what,
                            format!("tools.cron.max_jobs ({max_jobs}) jobs are already stored"),
                        );
                    }
                }
                None if peek.has("SELECT 1 FROM cron_jobs WHERE id = ?1", &[&stored.id]) => {
                    report.push(Status::Unchanged, what, format!("already {detail}"));
                }
                None => report.push(Status::Mapped, what, detail),
            }
        }
    }
    Ok(())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The stored form of an OpenClaw job (`schedule`, `payload`, `delivery`), or why it has
/// none.
fn build_job(job: &Value, default_tz: Tz, now_ms: i64) -> Result<CronJob, String> {
    let id = job["id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or("it has no id")?;
    if let Some(key) = job["declarationKey"].as_str() {
        return Err(format!(
            "managed by OpenClaw itself ({key}); moltbot has its own"
        ));
    }
    let payload = match (job["payload"]["kind"].as_str(), &job["payload"]) {
        (Some("agentTurn"), p) => CronPayload::Prompt {
            text: p["message"].as_str().unwrap_or("").to_string(),
        },
        (Some("systemEvent"), p) => CronPayload::Message {
            text: p["text"].as_str().unwrap_or("").to_string(),
        },
        (kind, _) => {
            return Err(format!(
                "{} payloads have no moltbot equivalent (moltbot runs prompts and reminders)",
                kind.unwrap_or("unknown")
            ))
        }
    };
    let text = match &payload {
        CronPayload::Prompt { text } | CronPayload::Message { text } => text,
        CronPayload::Tool { name, .. } => name,
    };
    if text.trim().is_empty() {
        return Err("its message is empty".into());
    }
    let s = &job["schedule"];
    let tz = match s["tz"].as_str() {
        Some(name) => parse_tz(name).map_err(|e| e.to_string())?,
        None => default_tz,
    };
    let schedule = match s["kind"].as_str() {
        Some("cron") => Schedule::cron(s["expr"].as_str().unwrap_or(""), tz),
        Some("every") => {
            let ms = s["everyMs"].as_u64().ok_or("schedule.everyMs is missing")?;
            Schedule::every(&format!("{}s", ms.div_ceil(1000)))
        }
        Some("at") => Schedule::at(s["at"].as_str().unwrap_or(""), tz),
        other => return Err(format!("schedule kind {other:?} is not cron, every or at")),
    }
    .map_err(|e| e.to_string())?;
    let now = chrono::DateTime::from_timestamp_millis(now_ms).ok_or("bad clock")?;
    let next = schedule
        .next_after(now)
        .ok_or("it never runs again (a one-shot in the past)")?;
    let d = &job["delivery"];
    let to = d["to"].as_str().map(str::to_string);
    let channel = d["channel"].as_str().unwrap_or("");
    let target = match (d["mode"].as_str(), to) {
        (Some("announce" | "webhook") | None, Some(to))
            if ["telegram", "whatsapp", "discord", "slack"].contains(&channel) =>
        {
            CronTarget::Chat {
                channel: channel.to_string(),
                chat_id: to,
            }
        }
        _ => CronTarget::Session {
            id: CRON_SESSION.into(),
        },
    };
    Ok(CronJob {
        id: id.to_string(),
        name: job["name"].as_str().unwrap_or(id).to_string(),
        schedule_kind: schedule.kind().into(),
        schedule_expr: schedule.expr(),
        tz: tz.name().into(),
        payload,
        target,
        enabled: job["enabled"].as_bool().unwrap_or(true),
        run_now: false,
        next_run_ms: Some(next.timestamp_millis()),
        last_run_ms: None,
        last_status: None,
        misfire: None,
        owner: Some("migrate:openclaw".into()),
        created_ms: job["createdAtMs"].as_i64().unwrap_or(now_ms),
    })
}

async fn transcript(
    store: Option<&Store>,
    peek: &Peek,
    t: &source::Transcript,
    report: &mut Report,
) -> anyhow::Result<()> {
    let what = format!("session {} (agent {})", t.session_id, t.agent);
    if t.messages.is_empty() {
        report.push(Status::NotMapped, what, "no user or assistant text");
        return Ok(());
    }
    let id = format!("openclaw-{}", t.session_id);
    let mut detail = format!("session {id} ({} messages", t.messages.len());
    if t.skipped > 0 {
        detail.push_str(&format!("; {} tool/other events not imported", t.skipped));
    }
    detail.push(')');
    match store {
        Some(s) if s.session(&id).await?.is_some() => {
            report.push(Status::Unchanged, what, format!("already {detail}"));
        }
        Some(s) => {
            let messages = t
                .messages
                .iter()
                .map(|(role, text)| {
                    let role = if role == "user" {
                        Role::User
                    } else {
                        Role::Assistant
                    };
                    NewMessage::new(role, text.clone())
                })
                .collect();
            s.append(&id, None, "openclaw", messages).await?;
            report.push(Status::Mapped, what, detail);
        }
        None if peek.has("SELECT 1 FROM sessions WHERE id = ?1", &[&id]) => {
            report.push(Status::Unchanged, what, format!("already {detail}"));
        }
        None => report.push(Status::Mapped, what, detail),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_106_000_000; // 2026-12-01

    #[test]
    fn jobs_map_payloads_schedules_and_targets() {
        let job = serde_json::json!({
            "id": "j1", "name": "Brief", "enabled": true,
            "schedule": {"kind": "cron", "expr": "0 7 * * 1-5", "tz": "Europe/Berlin"},
            "payload": {"kind": "agentTurn", "message": "Summarize"},
            "delivery": {"mode": "announce", "channel": "telegram", "to": "42"}
        });
        let j = build_job(&job, Tz::UTC, NOW).unwrap();
        assert_eq!(j.tz, "Europe/Berlin");
        assert_eq!(
            j.payload,
            CronPayload::Prompt {
                text: "Summarize".into()
            }
        );
        assert_eq!(
            j.target,
            CronTarget::Chat {
                channel: "telegram".into(),
                chat_id: "42".into()
            }
        );
        let every = serde_json::json!({
            "id": "j2", "schedule": {"kind": "every", "everyMs": 7_200_000},
            "payload": {"kind": "systemEvent", "text": "Water"}
        });
        let j = build_job(&every, Tz::UTC, NOW).unwrap();
        assert_eq!(
            (j.schedule_kind.as_str(), j.schedule_expr.as_str()),
            ("every", "2h")
        );
        assert_eq!(
            j.target,
            CronTarget::Session {
                id: CRON_SESSION.into()
            }
        );
        let past = serde_json::json!({
            "id": "j3", "schedule": {"kind": "at", "at": "2020-01-01T00:00:00Z"},
            "payload": {"kind": "agentTurn", "message": "x"}
        });
        assert!(build_job(&past, Tz::UTC, NOW).unwrap_err().contains("past"));
        let command = serde_json::json!({
            "id": "j4", "schedule": {"kind": "every", "everyMs": 3_600_000},
            "payload": {"kind": "command", "argv": ["df"]}
        });
        assert!(build_job(&command, Tz::UTC, NOW)
            .unwrap_err()
            .contains("command"));
    }
}
