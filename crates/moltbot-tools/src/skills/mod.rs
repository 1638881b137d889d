//! Skills: folders of instructions (and the tools they may use) the owner drops into the
//! skills folder, scanned at start and hot-reloaded.
//!
//! A skill is `<skills dir>/<name>/SKILL.md`: YAML front matter between `---` lines (name,
//! description, version, triggers, intents, tools, sha256 pins), then a markdown body — the
//! instructions the model gets when a turn is about the skill. Other files in the folder are
//! resources: listed, never loaded into prompts.
//!
//! # Layout
//! - `skill`: [`Skill`] and [`parse_skill`], which validates one folder ([`SkillError`]
//!   names the file, the field and the problem).
//! - `set`: [`Skills`], the cheap-clone handle on the current snapshot; [`scan`] a folder
//!   into a [`ScanReport`], [`Skills::apply`] it (registry rows, logs, the gauge), pick the
//!   skill for a turn with [`Skills::select`]; [`check`] for `moltbot doctor`.
//! - `watch`: [`Skills::watch`], the `notify` watcher that rescans after a burst of changes.
//!
//! How the engine uses a skill: [`Skills::select`] for the turn, [`Skill::prompt`] into the
//! system prompt, and only the skill's declared tools
//! (`registry.select(text, wanted, Some(&skill.tools))`): a skill may only use the tools it
//! declares.

mod set;
mod skill;
mod watch;

pub use set::{check, scan, Changes, ScanReport, SkillCheck, Skills};
pub use skill::{parse_skill, Skill, SkillError};

use std::path::{Path, PathBuf};

/// The file that makes a folder a skill.
pub const SKILL_FILE: &str = "SKILL.md";
/// Longest instructions (the trimmed body of `SKILL.md`), in bytes.
pub const MAX_INSTRUCTIONS_BYTES: usize = 8 * 1024;
/// Longest `description`, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 300;

/// What goes wrong with the skills folder as a whole (one broken skill is a [`SkillError`]
/// in the [`ScanReport`], never this).
#[derive(Debug, thiserror::Error)]
pub enum SkillsError {
    #[error(
        "the skills folder {} does not exist: no skills loaded, nothing watched\n\
         hint: create it with one folder per skill, each holding a SKILL.md",
        dir.display()
    )]
    DirMissing { dir: PathBuf },
    #[error("cannot read the skills folder {}: {source}", dir.display())]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot watch the skills folder {}: {source}", dir.display())]
    Watch { dir: PathBuf, source: notify::Error },
}

impl SkillsError {
    /// Stable name used in metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SkillsError::DirMissing { .. } => "skills_dir_missing",
            SkillsError::ReadDir { .. } => "skills_dir_unreadable",
            SkillsError::Watch { .. } => "skills_watch_failed",
        }
    }
}

/// The skills folder from `tools.skills.dir`: empty means `<data dir>/skills` (which is
/// `~/.moltbot/skills` with the default data dir); a leading `~` is the home folder.
pub fn resolve_dir(configured: &str, data_dir: &Path) -> PathBuf {
    let configured = configured.trim();
    if configured.is_empty() {
        return data_dir.join("skills");
    }
    match configured.strip_prefix('~') {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => {
            let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
            home.join(rest.trim_start_matches('/'))
        }
        _ => PathBuf::from(configured),
    }
}

/// Describe the skills metrics once (the gateway calls this next to its own descriptions).
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "moltbot_skills_loaded",
        "Skills loaded from the skills folder (broken ones are not counted)."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_folder_defaults_to_the_data_dir() {
        let data = Path::new("/var/lib/moltbot");
        assert_eq!(resolve_dir("", data), data.join("skills"));
        assert_eq!(
            resolve_dir(" /opt/skills ", data),
            PathBuf::from("/opt/skills")
        );
        assert!(resolve_dir("~/s", data).ends_with("s"));
        assert!(!resolve_dir("~/s", data).starts_with("~"));
        assert_eq!(resolve_dir("~x", data), PathBuf::from("~x"));
    }
}
