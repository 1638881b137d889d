//! [`Skills`]: the loaded skills as a snapshot that a rescan swaps whole, their rows in the
//! [`Registry`], and the choice of a skill for a turn.

use super::skill::{parse_skill, words, Skill};
use super::{SkillsError, SKILL_FILE};
use crate::registry::{Capability, CapabilityKind, CapabilityStatus, Registry};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

/// What one scan of the skills folder found. A broken skill is a row in `errors` and never
/// keeps the others from loading.
#[derive(Debug, Clone, Default)]
pub struct ScanReport {
    /// The skills folder scanned.
    pub dir: PathBuf,
    /// By name.
    pub loaded: Vec<Arc<Skill>>,
    /// `(folder name, message)` by folder name; the message names the file and the field.
    pub errors: Vec<(String, String)>,
}

/// Scan `dir`: every subfolder not starting with `.` is a skill. Files at the top are
/// ignored. Blocking file I/O (run it with `spawn_blocking` on a runtime).
pub fn scan(dir: &Path) -> Result<ScanReport, SkillsError> {
    let read_dir = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => SkillsError::DirMissing {
            dir: dir.to_path_buf(),
        },
        _ => SkillsError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        },
    };
    let mut folders = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let entry = entry.map_err(read_dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `is_dir` follows symbolic links: a linked skill folder counts.
        if !name.starts_with('.') && entry.path().is_dir() {
            folders.push((name, entry.path()));
        }
    }
    folders.sort();
    let mut report = ScanReport {
        dir: dir.to_path_buf(),
        ..ScanReport::default()
    };
    for (name, path) in folders {
        match parse_skill(&path) {
            Ok(skill) => report.loaded.push(Arc::new(skill)),
            Err(e) => report.errors.push((name, e.to_string())),
        }
    }
    Ok(report)
}

/// What [`Skills::apply`] changed, by skill name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    pub added: Vec<String>,
    pub changed: Vec<String>,
    pub removed: Vec<String>,
    /// Newly broken, or broken differently than before.
    pub broken: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.broken.is_empty()
    }
}

#[derive(Debug, Default)]
struct Snapshot {
    skills: BTreeMap<String, Arc<Skill>>,
    /// Folder name → message.
    errors: BTreeMap<String, String>,
}

/// The loaded skills. A cheap-clone handle: the engine reads a snapshot per turn, the
/// watcher swaps in a new one after a rescan.
#[derive(Debug, Clone, Default)]
pub struct Skills {
    // A std lock: never held across an await; readers clone the `Arc` and let go.
    current: Arc<RwLock<Arc<Snapshot>>>,
}

impl Skills {
    /// No skills yet; [`Skills::load`] or [`Skills::watch`] fill it.
    pub fn new() -> Self {
        Self::default()
    }

    /// Scan `dir` and [`apply`](Skills::apply) the result. On a folder-level error (missing,
    /// unreadable) nothing changes. Blocking file I/O, meant for start-up.
    pub fn load(&self, dir: &Path, registry: &Registry) -> Result<ScanReport, SkillsError> {
        let report = scan(dir)?;
        self.apply(&report, registry);
        Ok(report)
    }

    /// Make `report` the current snapshot: note every skill (loaded or broken) in the
    /// registry, forget the ones that are gone, log each change and set the
    /// `moltbot_skills_loaded` gauge.
    pub fn apply(&self, report: &ScanReport, registry: &Registry) -> Changes {
        let next = Snapshot {
            skills: report
                .loaded
                .iter()
                .map(|s| (s.name.clone(), s.clone()))
                .collect(),
            errors: report.errors.iter().cloned().collect(),
        };
        // Held while the registry is updated so two applies cannot interleave their rows;
        // the registry never calls back into us, and nothing here awaits.
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let changes = diff(&current, &next);

        let known_tools: HashSet<String> = registry.names().into_iter().collect();
        for skill in next.skills.values() {
            registry.note(Capability {
                name: skill.name.clone(),
                kind: CapabilityKind::Skill,
                status: CapabilityStatus::Loaded,
                description: skill.description.clone(),
                source: skill.dir.display().to_string(),
                reason: None,
                tools: skill.tools.clone(),
            });
        }
        for (folder, message) in &next.errors {
            registry.note(Capability {
                name: folder.clone(),
                kind: CapabilityKind::Skill,
                status: CapabilityStatus::Error,
                description: String::new(),
                source: report.dir.join(folder).display().to_string(),
                reason: Some(message.clone()),
                tools: Vec::new(),
            });
        }
        let keep: HashSet<String> = next
            .skills
            .keys()
            .chain(next.errors.keys())
            .cloned()
            .collect();
        registry.retain_skills(&keep);

        for name in changes.added.iter().chain(&changes.changed) {
            let Some(skill) = next.skills.get(name) else {
                continue;
            };
            let verb = if changes.added.contains(name) {
                "skill loaded"
            } else {
                "skill changed"
            };
            tracing::info!(
                skill = %name,
                dir = %skill.dir.display(),
                version = skill.version.as_deref().unwrap_or(""),
                tools = ?skill.tools,
                files = skill.files.len(),
                "{verb}"
            );
            let missing: Vec<&str> = skill
                .tools
                .iter()
                .filter(|t| !known_tools.contains(*t))
                .map(String::as_str)
                .collect();
            if !missing.is_empty() {
                tracing::warn!(
                    skill = %name,
                    tools = ?missing,
                    "skill declares tools that are not loaded; it will run without them"
                );
            }
        }
        for name in &changes.removed {
            tracing::info!(skill = %name, "skill removed");
        }
        for name in &changes.broken {
            let reason = next.errors.get(name).map_or("", String::as_str);
            tracing::warn!(skill = %name, reason = %reason, "skill not loaded");
        }
        metrics::gauge!("moltbot_skills_loaded").set(next.skills.len() as f64);
        *current = Arc::new(next);
        changes
    }

    /// A loaded skill by name.
    pub fn get(&self, name: &str) -> Option<Arc<Skill>> {
        self.snapshot().skills.get(name).cloned()
    }

    /// The loaded skills, by name.
    pub fn list(&self) -> Vec<Arc<Skill>> {
        self.snapshot().skills.values().cloned().collect()
    }

    /// The broken skills: `(folder name, message)`, by folder name.
    pub fn errors(&self) -> Vec<(String, String)> {
        self.snapshot()
            .errors
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The skill for a turn: one that lists the turn's `intent` wins; otherwise the one
    /// whose triggers match most words of `text` (whole words, any case; a phrase counts
    /// its words); ties go to the first by name. `None` when nothing matches ("hi").
    pub fn select(&self, text: &str, intent: Option<&str>) -> Option<Arc<Skill>> {
        let snapshot = self.snapshot();
        if let Some(intent) = intent {
            let by_intent = snapshot
                .skills
                .values()
                .find(|s| s.intents.iter().any(|i| i.eq_ignore_ascii_case(intent)));
            if let Some(skill) = by_intent {
                return Some(skill.clone());
            }
        }
        let text_words = words(text);
        let mut best: Option<(usize, &Arc<Skill>)> = None;
        for skill in snapshot.skills.values() {
            let score = skill.trigger_score(&text_words);
            if score > 0 && best.is_none_or(|(b, _)| score > b) {
                best = Some((score, skill));
            }
        }
        best.map(|(_, s)| s.clone())
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

fn diff(old: &Snapshot, new: &Snapshot) -> Changes {
    let mut changes = Changes::default();
    for (name, skill) in &new.skills {
        match old.skills.get(name) {
            None => changes.added.push(name.clone()),
            Some(before) if before != skill => changes.changed.push(name.clone()),
            Some(_) => {}
        }
    }
    for name in old.skills.keys().chain(old.errors.keys()) {
        if !new.skills.contains_key(name)
            && !new.errors.contains_key(name)
            && !changes.removed.contains(name)
        {
            changes.removed.push(name.clone());
        }
    }
    for (name, message) in &new.errors {
        if old.errors.get(name) != Some(message) {
            changes.broken.push(name.clone());
        }
    }
    changes
}

/// One line of `moltbot doctor`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkillCheck {
    /// The skill (folder) name, or `skills` for the folder itself.
    pub name: String,
    pub ok: bool,
    pub message: String,
}

/// Check every skill in `dir` without loading anything. A missing folder is one `ok` line
/// saying so (skills are optional); an unreadable one is a failed line.
pub fn check(dir: &Path) -> Vec<SkillCheck> {
    let folder = |ok: bool, message: String| {
        vec![SkillCheck {
            name: "skills".into(),
            ok,
            message,
        }]
    };
    let report = match scan(dir) {
        Ok(r) => r,
        Err(SkillsError::DirMissing { .. }) => {
            return folder(
                true,
                format!("no skills folder at {}: no skills", dir.display()),
            )
        }
        Err(e) => return folder(false, e.to_string()),
    };
    if report.loaded.is_empty() && report.errors.is_empty() {
        return folder(
            true,
            format!(
                "{} holds no skills (one folder per skill, each with a {SKILL_FILE})",
                dir.display()
            ),
        );
    }
    let mut out: Vec<SkillCheck> = report
        .loaded
        .iter()
        .map(|s| SkillCheck {
            name: s.name.clone(),
            ok: true,
            message: summary(s),
        })
        .chain(report.errors.iter().map(|(name, message)| SkillCheck {
            name: name.clone(),
            ok: false,
            message: message.clone(),
        }))
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `v1.2.0, 3 triggers, 1 intent, tools: web_fetch, 2 files (1 pinned)`.
fn summary(skill: &Skill) -> String {
    let plural = |n: usize, one: &str| {
        if n == 1 {
            format!("1 {one}")
        } else {
            format!("{n} {one}s")
        }
    };
    let mut parts = Vec::new();
    if let Some(v) = &skill.version {
        parts.push(format!("v{}", v.trim_start_matches('v')));
    }
    parts.push(plural(skill.triggers.len(), "trigger"));
    parts.push(plural(skill.intents.len(), "intent"));
    parts.push(if skill.tools.is_empty() {
        "no tools".to_string()
    } else {
        format!("tools: {}", skill.tools.join(", "))
    });
    let mut files = plural(skill.files.len(), "file");
    if !skill.sha256.is_empty() {
        files.push_str(&format!(" ({} pinned)", skill.sha256.len()));
    }
    parts.push(files);
    parts.join(", ")
}
