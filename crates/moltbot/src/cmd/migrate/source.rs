//! Reading a Clawdbot/Moltbot/OpenClaw home: where it is, its JSON5 config, cron jobs,
//! pairing allowlists and session transcripts. Nothing here writes.
//!
//! Layouts read (all optional except the config):
//! - `openclaw.json` (`clawdbot.json`, `moltbot.json` in older releases): JSON5.
//! - cron jobs: `state/openclaw.sqlite` table `cron_jobs` (column `job_json`, releases
//!   from 2026.x) and the older `cron/jobs.json` (`{"version":1,"jobs":[...]}`).
//! - approved senders: `state/openclaw.sqlite` table `channel_pairing_allow_entries` and the
//!   older `credentials/<channel>-allowFrom.json`.
//! - transcripts: `agents/<id>/agent/openclaw-agent.sqlite` table `transcript_events`
//!   (one JSON event per row) and the older `agents/<id>/sessions/<session>.jsonl` (one
//!   event per line). Events of type `message` with role `user`/`assistant` are kept.

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;
use std::path::{Path, PathBuf};

/// Config file names, newest first.
pub const CONFIG_NAMES: [&str; 3] = ["openclaw.json", "clawdbot.json", "moltbot.json"];
/// Default homes, in the order they are tried.
pub const DEFAULT_HOMES: [&str; 3] = [".openclaw", ".clawdbot", ".moltbot"];

/// A home that holds a config file.
#[derive(Debug)]
pub struct Home {
    pub dir: PathBuf,
    pub config_file: PathBuf,
    pub config: Value,
}

/// Whether `dir` looks like moltbot's own data folder rather than an OpenClaw home.
pub fn is_our_layout(dir: &Path) -> bool {
    dir.join("moltbot.toml").exists() || dir.join("moltbot.db").exists()
}

fn config_file(dir: &Path) -> Option<PathBuf> {
    CONFIG_NAMES
        .iter()
        .map(|n| dir.join(n))
        .find(|p| p.is_file())
}

/// The home to import: `explicit`, else the first default home under `user_home` that has a
/// config and is not moltbot's own folder.
pub fn locate(explicit: Option<&Path>, user_home: &Path) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let mut tried = Vec::new();
    for name in DEFAULT_HOMES {
        let dir = user_home.join(name);
        if config_file(&dir).is_some() && !is_our_layout(&dir) {
            return Ok(dir);
        }
        let note = if is_our_layout(&dir) {
            " (moltbot's own data folder)"
        } else {
            ""
        };
        tried.push(format!("{}{note}", dir.display()));
    }
    anyhow::bail!(
        "no Clawdbot/Moltbot/OpenClaw home found; tried {}\nhint: pass the folder: \
         `moltbot migrate --from-clawdbot PATH`",
        tried.join(", ")
    )
}

/// Open `dir` and parse its config; a clear error when it is not such a home.
pub fn open(dir: &Path) -> anyhow::Result<Home> {
    anyhow::ensure!(
        dir.is_dir(),
        "--from-clawdbot {} is not a folder",
        dir.display()
    );
    if is_our_layout(dir) {
        anyhow::bail!(
            "{} holds moltbot's own data (moltbot.toml or moltbot.db), not a Clawdbot/OpenClaw \
             home; nothing to import\nhint: pass the OpenClaw folder, e.g. \
             `moltbot migrate --from-clawdbot ~/.openclaw`",
            dir.display()
        );
    }
    let Some(config_file) = config_file(dir) else {
        anyhow::bail!(
            "{} is not a Clawdbot/Moltbot/OpenClaw home: it has none of {}",
            dir.display(),
            CONFIG_NAMES.join(", ")
        );
    };
    let text = std::fs::read_to_string(&config_file)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", config_file.display()))?;
    let config: Value = json5::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{} is not valid JSON5: {e}", config_file.display()))?;
    anyhow::ensure!(
        config.is_object(),
        "{} must hold a JSON object, got {}",
        config_file.display(),
        kind_of(&config)
    );
    Ok(Home {
        dir: dir.to_path_buf(),
        config_file,
        config,
    })
}

pub fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn open_ro(path: &Path) -> rusqlite::Result<Connection> {
    Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
}

fn has_table(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n > 0)
}

/// Cron jobs as OpenClaw stores them (the job JSON), de-duplicated by id, and problems
/// reading them.
pub fn cron_jobs(home: &Home) -> (Vec<Value>, Vec<String>) {
    let mut jobs: Vec<Value> = Vec::new();
    let mut problems = Vec::new();
    let db = home.dir.join("state/openclaw.sqlite");
    if db.is_file() {
        let read = || -> rusqlite::Result<Vec<(String, bool)>> {
            let conn = open_ro(&db)?;
            if !has_table(&conn, "cron_jobs")? {
                return Ok(Vec::new());
            }
            let mut stmt =
                conn.prepare("SELECT job_json, enabled FROM cron_jobs ORDER BY sort_order")?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))?
                .collect();
            rows
        };
        match read() {
            Ok(rows) => {
                for (json, enabled) in rows {
                    match serde_json::from_str::<Value>(&json) {
                        Ok(mut job) => {
                            job["enabled"] = Value::Bool(enabled);
                            jobs.push(job);
                        }
                        Err(e) => problems.push(format!("a cron job in {}: {e}", db.display())),
                    }
                }
            }
            Err(e) => problems.push(format!("cron jobs in {}: {e}", db.display())),
        }
    }
    let file = home.dir.join("cron/jobs.json");
    if file.is_file() {
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|t| json5::from_str::<Value>(&t).map_err(|e| e.to_string()))
        {
            Ok(v) => {
                let list = v.get("jobs").cloned().unwrap_or(v);
                if let Value::Array(list) = list {
                    jobs.extend(list);
                }
            }
            Err(e) => problems.push(format!("{}: {e}", file.display())),
        }
    }
    let mut seen = std::collections::HashSet::new();
    jobs.retain(|j| match j.get("id").and_then(Value::as_str) {
        Some(id) => seen.insert(id.to_string()),
        None => true,
    });
    (jobs, problems)
}

/// Approved senders kept outside the config: `(channel, entry)`.
pub fn pairing_allow(home: &Home) -> (Vec<(String, String)>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let db = home.dir.join("state/openclaw.sqlite");
    if db.is_file() {
        let read = || -> rusqlite::Result<Vec<(String, String)>> {
            let conn = open_ro(&db)?;
            if !has_table(&conn, "channel_pairing_allow_entries")? {
                return Ok(Vec::new());
            }
            let mut stmt = conn.prepare(
                "SELECT channel_key, entry FROM channel_pairing_allow_entries
                 ORDER BY channel_key, sort_order",
            )?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect();
            rows
        };
        match read() {
            Ok(rows) => out.extend(rows),
            Err(e) => problems.push(format!("pairing allowlist in {}: {e}", db.display())),
        }
    }
    if let Ok(entries) = std::fs::read_dir(home.dir.join("credentials")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(channel) = name.strip_suffix("-allowFrom.json") else {
                continue;
            };
            let parsed = std::fs::read_to_string(entry.path())
                .ok()
                .and_then(|t| json5::from_str::<Value>(&t).ok());
            match parsed.as_ref().and_then(|v| v.get("allowFrom")?.as_array()) {
                Some(list) => out.extend(
                    list.iter()
                        .filter_map(scalar_string)
                        .map(|e| (channel.to_string(), e)),
                ),
                None => problems.push(format!("{}: no allowFrom list", entry.path().display())),
            }
        }
    }
    (out, problems)
}

/// A string or a number as text.
pub fn scalar_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// One conversation's user and assistant texts.
#[derive(Debug)]
pub struct Transcript {
    pub agent: String,
    pub session_id: String,
    /// `(role, text)`; role is `user` or `assistant`.
    pub messages: Vec<(String, String)>,
    /// Events that are not user/assistant text (tool calls and results, compressed rows).
    pub skipped: usize,
}

/// Every transcript under `agents/`, and problems reading them.
pub fn transcripts(home: &Home) -> (Vec<Transcript>, Vec<String>) {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let Ok(agents) = std::fs::read_dir(home.dir.join("agents")) else {
        return (out, problems);
    };
    let mut agents: Vec<_> = agents.flatten().map(|e| e.path()).collect();
    agents.sort();
    for agent_dir in agents {
        let agent = agent_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let db = agent_dir.join("agent/openclaw-agent.sqlite");
        if db.is_file() {
            match sqlite_transcripts(&db, &agent) {
                Ok(t) => out.extend(t),
                Err(e) => problems.push(format!("transcripts in {}: {e}", db.display())),
            }
        }
        if let Ok(files) = std::fs::read_dir(agent_dir.join("sessions")) {
            let mut files: Vec<_> = files
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            files.sort();
            for file in files {
                match std::fs::read_to_string(&file) {
                    Ok(text) => {
                        let mut t = Transcript {
                            agent: agent.clone(),
                            session_id: file
                                .file_stem()
                                .map(|s| s.to_string_lossy().to_string())
                                .unwrap_or_default(),
                            messages: Vec::new(),
                            skipped: 0,
                        };
                        for line in text.lines().filter(|l| !l.trim().is_empty()) {
                            add_event(&mut t, serde_json::from_str(line).ok());
                        }
                        out.push(t);
                    }
                    Err(e) => problems.push(format!("{}: {e}", file.display())),
                }
            }
        }
    }
    // The same session can be in both places (an upgraded home): keep the first.
    let mut seen = std::collections::HashSet::new();
    out.retain(|t| seen.insert(t.session_id.clone()));
    (out, problems)
}

fn sqlite_transcripts(db: &Path, agent: &str) -> rusqlite::Result<Vec<Transcript>> {
    let conn = open_ro(db)?;
    if !has_table(&conn, "transcript_events")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn
        .prepare("SELECT session_id, event_json FROM transcript_events ORDER BY session_id, seq")?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, Option<String>>(1)?))
    })?;
    let mut out: Vec<Transcript> = Vec::new();
    for row in rows {
        let (session_id, json) = row?;
        if out.last().is_none_or(|t| t.session_id != session_id) {
            out.push(Transcript {
                agent: agent.to_string(),
                session_id,
                messages: Vec::new(),
                skipped: 0,
            });
        }
        if let Some(t) = out.last_mut() {
            // A NULL event_json is a zstd-compressed row: not read.
            add_event(t, json.and_then(|j| serde_json::from_str(&j).ok()));
        }
    }
    Ok(out)
}

/// Keep a `message` event's user/assistant text; count everything else but the
/// bookkeeping events (session header, model changes, custom markers) as skipped.
fn add_event(t: &mut Transcript, event: Option<Value>) {
    let Some(event) = event else {
        t.skipped += 1;
        return;
    };
    if event.get("type").and_then(Value::as_str) != Some("message") {
        return;
    }
    let message = &event["message"];
    let role = message.get("role").and_then(Value::as_str).unwrap_or("");
    let text = strip_internal_context(&message_text(&message["content"]));
    match role {
        "user" | "assistant" if !text.trim().is_empty() => {
            t.messages.push((role.to_string(), text));
        }
        _ => t.skipped += 1,
    }
}

const CONTEXT_OPEN: &str = "<<<BEGIN_OPENCLAW_INTERNAL_CONTEXT>>>";
const CONTEXT_CLOSE: &str = "<<<END_OPENCLAW_INTERNAL_CONTEXT>>>";

/// Drop OpenClaw's internal-context blocks (runtime notes it adds to prompts, never meant
/// for the user), which can appear in stored text.
fn strip_internal_context(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find(CONTEXT_OPEN) {
        out.push_str(&rest[..start]);
        rest = match rest[start..].find(CONTEXT_CLOSE) {
            Some(end) => &rest[start + end + CONTEXT_CLOSE.len()..],
            None => "",
        };
    }
    out.push_str(rest);
    out.trim().to_string()
}

/// The text of a message content: a string, or the `text` parts of an array.
pub fn message_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter(|p| p.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_events_keep_user_and_assistant_text() {
        let mut t = Transcript {
            agent: "main".into(),
            session_id: "s".into(),
            messages: Vec::new(),
            skipped: 0,
        };
        let lines = [
            r#"{"type":"session","id":"s"}"#,
            r#"{"type":"message","message":{"role":"user","content":"hi"}}"#,
            r#"{"type":"message","message":{"role":"assistant","content":[{"type":"text","text":"hello"},{"type":"toolCall","name":"x"}]}}"#,
            r#"{"type":"message","message":{"role":"toolResult","content":"42"}}"#,
        ];
        for l in lines {
            add_event(&mut t, serde_json::from_str(l).ok());
        }
        assert_eq!(
            t.messages,
            vec![
                ("user".to_string(), "hi".to_string()),
                ("assistant".to_string(), "hello".to_string())
            ]
        );
        assert_eq!(t.skipped, 1);
        assert_eq!(
            strip_internal_context(&format!("echo: {CONTEXT_OPEN}\nnotes\n{CONTEXT_CLOSE} ok")),
            "echo:  ok"
        );
    }
}
