//! One skill folder: [`parse_skill`] reads `SKILL.md`, validates its front matter, lists the
//! resources and checks the `sha256` pins.

use super::{MAX_DESCRIPTION_CHARS, MAX_INSTRUCTIONS_BYTES, SKILL_FILE};
use moltbot_core::ToolSpec;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Largest `SKILL.md` read at all (front matter and body), in bytes.
const MAX_FILE_BYTES: u64 = 64 * 1024;
/// Longest name (the folder name), trigger, intent name or version, in characters.
const MAX_NAME_CHARS: usize = 64;
/// Most entries in `triggers`, `intents` or `tools`.
const MAX_LIST_LEN: usize = 64;
/// Most resource files in a skill folder (a skill is instructions and a few files).
const MAX_FILES: usize = 512;
/// Deepest subfolder listed.
const MAX_DEPTH: usize = 8;

/// A parsed, validated skill.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skill {
    /// `[a-z][a-z0-9_-]*`, the folder's name.
    pub name: String,
    /// One line, at most [`MAX_DESCRIPTION_CHARS`] characters.
    pub description: String,
    pub version: Option<String>,
    /// Words or phrases (lower-cased) that make a turn about this skill.
    pub triggers: Vec<String>,
    /// Intent names of the understanding model that route to this skill.
    pub intents: Vec<String>,
    /// The tools the skill may use; none by default.
    pub tools: Vec<String>,
    /// The markdown body, trimmed; at most [`MAX_INSTRUCTIONS_BYTES`].
    pub instructions: String,
    /// The skill's folder.
    pub dir: PathBuf,
    /// Resource files: paths relative to `dir` with `/` separators, sorted; `SKILL.md` and
    /// hidden files (`.name`) are not listed.
    pub files: Vec<String>,
    /// Pinned resources: relative path → lower-case hex sha256 (all verified at load).
    pub sha256: BTreeMap<String, String>,
}

impl Skill {
    /// The system-prompt section for a turn this skill handles: its instructions, and the
    /// names of its resource files (not their contents).
    pub fn prompt(&self) -> String {
        let mut out = format!("## Skill: {}\n\n{}\n", self.name, self.instructions);
        if !self.files.is_empty() {
            out.push_str(&format!(
                "\nFiles of this skill (in {}): {}\n",
                self.dir.display(),
                self.files.join(", ")
            ));
        }
        out
    }

    /// How strongly `text_words` (see [`words`]) match the triggers: the number of words of
    /// every trigger found in the text as whole words (a phrase as consecutive words).
    pub(super) fn trigger_score(&self, text_words: &[String]) -> usize {
        self.triggers
            .iter()
            .map(|t| words(t))
            .filter(|t| !t.is_empty() && text_words.windows(t.len()).any(|w| w == t.as_slice()))
            .map(|t| t.len())
            .sum()
    }
}

/// Lower-cased runs of letters and digits, in order.
pub(super) fn words(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// A skill that cannot load. Every message starts with the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum SkillError {
    #[error("{}: missing (a skill folder holds a {SKILL_FILE})", path.display())]
    Missing { path: PathBuf },
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// No front matter, YAML that does not fit (unknown keys, wrong types), no body.
    #[error("{}: {problem}", path.display())]
    Format { path: PathBuf, problem: String },
    #[error("{}: `{field}` {problem}", path.display())]
    Field {
        path: PathBuf,
        field: &'static str,
        problem: String,
    },
    #[error(
        "{}: {what} must be at most {max} bytes, got {size}\n\
         hint: move reference material into a resource file of the skill",
        path.display()
    )]
    TooLarge {
        path: PathBuf,
        what: &'static str,
        size: u64,
        max: u64,
    },
    #[error(
        "{}: holds more than {max} files\n\
         hint: a skill is its {SKILL_FILE} and a few resource files",
        dir.display()
    )]
    TooManyFiles { dir: PathBuf, max: usize },
    #[error("{}: `sha256` pin of `{file}` {problem}", path.display())]
    Pin {
        path: PathBuf,
        file: String,
        problem: String,
    },
}

impl SkillError {
    /// Stable name used in metrics labels and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            SkillError::Missing { .. } => "skill_missing",
            SkillError::Read { .. } => "skill_unreadable",
            SkillError::Format { .. } => "skill_format",
            SkillError::Field { .. } => "skill_invalid_field",
            SkillError::TooLarge { .. } | SkillError::TooManyFiles { .. } => "skill_too_large",
            SkillError::Pin { .. } => "skill_pin_mismatch",
        }
    }
}

/// The front matter as written. Everything is optional here so a missing field gets our own
/// message ("`name` is required") rather than serde's.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FrontMatter {
    name: Option<String>,
    description: Option<String>,
    /// A value, not a string: `version: 1.0` is a YAML number and gets a hint to quote it.
    version: Option<serde_yaml_ng::Value>,
    #[serde(default)]
    triggers: Vec<String>,
    #[serde(default)]
    intents: Vec<String>,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    sha256: BTreeMap<String, String>,
}

/// Read and validate the skill in `dir` (`dir/SKILL.md`). Blocking file I/O.
pub fn parse_skill(dir: &Path) -> Result<Skill, SkillError> {
    let path = dir.join(SKILL_FILE);
    let text = read_skill_file(&path)?;
    let field = |field: &'static str, problem: String| SkillError::Field {
        path: path.clone(),
        field,
        problem,
    };
    let front = |problem: &str| SkillError::Format {
        path: path.clone(),
        problem: problem.to_string(),
    };

    let (yaml, body) = split_front_matter(&text).ok_or_else(|| {
        if first_line_is_fence(&text) {
            front("the front matter has no closing `---` line")
        } else {
            front("must start with a `---` line opening the YAML front matter")
        }
    })?;
    let fm: FrontMatter = if yaml.trim().is_empty() {
        FrontMatter::default()
    } else {
        serde_yaml_ng::from_str(yaml).map_err(|e| front(&yaml_problem(&e)))?
    };

    let folder = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = fm.name.ok_or_else(|| field("name", "is required".into()))?;
    if !valid_name(&name) {
        return Err(field(
            "name",
            format!(
                "must be `[a-z][a-z0-9_-]*` and at most {MAX_NAME_CHARS} characters, got `{name}`"
            ),
        ));
    }
    if name != folder {
        return Err(field(
            "name",
            format!("must match the folder name `{folder}`, got `{name}`"),
        ));
    }

    let description = fm
        .description
        .map(|d| d.trim().to_string())
        .filter(|d| !d.is_empty())
        .ok_or_else(|| field("description", "is required (one line)".into()))?;
    if description.contains('\n') {
        return Err(field(
            "description",
            "must be one line, got several\nhint: put details into the instructions".into(),
        ));
    }
    let chars = description.chars().count();
    if chars > MAX_DESCRIPTION_CHARS {
        return Err(field(
            "description",
            format!("must be at most {MAX_DESCRIPTION_CHARS} characters, got {chars}"),
        ));
    }

    let version = match fm.version {
        None | Some(serde_yaml_ng::Value::Null) => None,
        Some(serde_yaml_ng::Value::String(v)) if semverish(&v) => Some(v),
        Some(serde_yaml_ng::Value::String(v)) => {
            return Err(field(
                "version",
                format!("must look like `1.2.3` (optionally `-pre`/`+build`), got `{v}`"),
            ))
        }
        Some(serde_yaml_ng::Value::Number(n)) => {
            return Err(field(
                "version",
                format!("must be a string, got the number {n}\nhint: quote it: version: \"{n}\""),
            ))
        }
        Some(other) => {
            return Err(field(
                "version",
                format!("must be a string, got {}", yaml_kind(&other)),
            ))
        }
    };

    let triggers = list(fm.triggers, |t| {
        let t = t.trim().to_lowercase();
        if words(&t).is_empty() || t.chars().count() > MAX_NAME_CHARS {
            Err(format!(
                "entries must hold a word and be at most {MAX_NAME_CHARS} characters, got `{t}`"
            ))
        } else {
            Ok(t)
        }
    })
    .map_err(|p| field("triggers", p))?;
    let intents = list(fm.intents, |i| {
        let i = i.trim().to_string();
        if i.is_empty() || i.chars().count() > MAX_NAME_CHARS || i.contains(char::is_whitespace) {
            Err(format!(
                "entries must be intent names (no spaces, at most {MAX_NAME_CHARS} characters), got `{i}`"
            ))
        } else {
            Ok(i)
        }
    })
    .map_err(|p| field("intents", p))?;
    let tools = list(fm.tools, |t| {
        let t = t.trim().to_string();
        if ToolSpec::valid_name(&t) {
            Ok(t)
        } else {
            Err(format!(
                "entries must be tool names (`[a-z][a-z0-9_]*`), got `{t}`"
            ))
        }
    })
    .map_err(|p| field("tools", p))?;

    let instructions = body.trim().to_string();
    if instructions.is_empty() {
        return Err(front(
            "the instructions (the markdown after the front matter) are empty",
        ));
    }
    if instructions.len() > MAX_INSTRUCTIONS_BYTES {
        return Err(SkillError::TooLarge {
            path: path.clone(),
            what: "the instructions",
            size: instructions.len() as u64,
            max: MAX_INSTRUCTIONS_BYTES as u64,
        });
    }

    let mut sha256 = BTreeMap::new();
    for (file, hash) in fm.sha256 {
        if !valid_relative(&file) {
            return Err(field(
                "sha256",
                format!(
                    "keys must be relative paths of the skill's other files (no `..`, not \
                     {SKILL_FILE}), got `{file}`"
                ),
            ));
        }
        let hash = hash.trim().to_ascii_lowercase();
        if hash.len() != 64 || !hash.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(field(
                "sha256",
                format!("values must be 64 hex digits, got `{hash}` for `{file}`"),
            ));
        }
        sha256.insert(file, hash);
    }

    let mut files = Vec::new();
    list_files(dir, dir, 0, &mut files)
        .map_err(|(p, source)| SkillError::Read { path: p, source })?;
    if files.len() > MAX_FILES {
        return Err(SkillError::TooManyFiles {
            dir: dir.to_path_buf(),
            max: MAX_FILES,
        });
    }
    files.sort();

    for (file, pinned) in &sha256 {
        let pin = |problem: String| SkillError::Pin {
            path: path.clone(),
            file: file.clone(),
            problem,
        };
        let target = file
            .split('/')
            .fold(dir.to_path_buf(), |p, part| p.join(part));
        let actual = match hash_file(&target) {
            Ok(h) => h,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(pin("names a file that does not exist".into()))
            }
            Err(e) => return Err(pin(format!("cannot be checked: {e}"))),
        };
        if &actual != pinned {
            return Err(pin(format!(
                "does not match: pinned {pinned}, the file has {actual}"
            )));
        }
    }

    Ok(Skill {
        name,
        description,
        version,
        triggers,
        intents,
        tools,
        instructions,
        dir: dir.to_path_buf(),
        files,
        sha256,
    })
}

fn read_skill_file(path: &Path) -> Result<String, SkillError> {
    let read = |source: std::io::Error| match source.kind() {
        std::io::ErrorKind::NotFound => SkillError::Missing {
            path: path.to_path_buf(),
        },
        _ => SkillError::Read {
            path: path.to_path_buf(),
            source,
        },
    };
    let size = std::fs::metadata(path).map_err(read)?.len();
    if size > MAX_FILE_BYTES {
        return Err(SkillError::TooLarge {
            path: path.to_path_buf(),
            what: "the file",
            size,
            max: MAX_FILE_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

fn first_line_is_fence(text: &str) -> bool {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    text.lines().next().is_some_and(|l| l.trim_end() == "---")
}

/// `(front matter, body)` of a file that starts with a `---` line and has a closing one.
fn split_front_matter(text: &str) -> Option<(&str, &str)> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut lines = text.split_inclusive('\n');
    let first = lines.next()?;
    if first.trim_end() != "---" {
        return None;
    }
    let mut offset = first.len();
    for line in lines {
        if line.trim_end() == "---" {
            return Some((&text[first.len()..offset], &text[offset + line.len()..]));
        }
        offset += line.len();
    }
    None
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    name.len() <= MAX_NAME_CHARS
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// `1`, `1.2`, `1.2.3`, with an optional leading `v` and `-pre`/`+build` suffix.
fn semverish(v: &str) -> bool {
    let v = v.strip_prefix('v').unwrap_or(v);
    let core = v.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = core.split('.').collect();
    v.len() <= MAX_NAME_CHARS
        && (1..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '+'))
}

/// A relative path with `/` separators that stays inside the folder and is not `SKILL.md`.
fn valid_relative(file: &str) -> bool {
    !file.is_empty()
        && file != SKILL_FILE
        && !file.starts_with('/')
        && !file.contains('\\')
        && file
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// A YAML error with its line counted in the file (the front matter starts on line 2).
fn yaml_problem(e: &serde_yaml_ng::Error) -> String {
    let message = e.to_string();
    if let Some(at) = e.location() {
        let suffix = format!(" at line {} column {}", at.line(), at.column());
        if let Some(problem) = message.strip_suffix(&suffix) {
            return format!("front matter, line {}: {problem}", at.line() + 1);
        }
    }
    format!("front matter: {message}")
}

fn yaml_kind(v: &serde_yaml_ng::Value) -> &'static str {
    match v {
        serde_yaml_ng::Value::Null => "null",
        serde_yaml_ng::Value::Bool(_) => "a boolean",
        serde_yaml_ng::Value::Number(_) => "a number",
        serde_yaml_ng::Value::String(_) => "a string",
        serde_yaml_ng::Value::Sequence(_) => "a list",
        serde_yaml_ng::Value::Mapping(_) => "a map",
        serde_yaml_ng::Value::Tagged(_) => "a tagged value",
    }
}

/// Check and normalise each entry, drop duplicates (first wins), cap the length.
fn list(
    items: Vec<String>,
    check: impl Fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, String> {
    if items.len() > MAX_LIST_LEN {
        return Err(format!(
            "may have at most {MAX_LIST_LEN} entries, got {}",
            items.len()
        ));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let item = check(&item)?;
        if !out.contains(&item) {
            out.push(item);
        }
    }
    Ok(out)
}

/// Collect the files under `dir` (relative to `root`), skipping hidden entries and
/// `SKILL.md` at the top. Symbolic links are listed, never followed (no loops). Stops
/// early once there are more than [`MAX_FILES`].
fn list_files(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<String>,
) -> Result<(), (PathBuf, std::io::Error)> {
    let entries = std::fs::read_dir(dir).map_err(|e| (dir.to_path_buf(), e))?;
    for entry in entries {
        let entry = entry.map_err(|e| (dir.to_path_buf(), e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || (depth == 0 && name == SKILL_FILE) {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| (path.clone(), e))?;
        if kind.is_dir() {
            if depth < MAX_DEPTH {
                list_files(root, &path, depth + 1, out)?;
            }
        } else {
            // `path` is under `root` by construction.
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let parts: Vec<String> = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            out.push(parts.join("/"));
        }
        if out.len() > MAX_FILES {
            return Ok(());
        }
    }
    Ok(())
}

/// Lower-case hex sha256 of a file's bytes.
fn hash_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_is_split_at_the_fences() {
        let (yaml, body) = split_front_matter("---\nname: a\n---\nbody\n").unwrap();
        assert_eq!(yaml, "name: a\n");
        assert_eq!(body, "body\n");
        let (yaml, body) = split_front_matter("\u{feff}---\r\nname: a\r\n---\r\n").unwrap();
        assert_eq!(yaml, "name: a\r\n");
        assert_eq!(body, "");
        assert!(split_front_matter("name: a\n---\n").is_none());
        assert!(split_front_matter("---\nname: a\n").is_none());
    }

    #[test]
    fn names_versions_and_paths() {
        assert!(valid_name("weather"));
        assert!(valid_name("git-helper_2"));
        assert!(!valid_name("Weather"));
        assert!(!valid_name("2fa"));
        assert!(!valid_name(""));
        for v in ["1", "1.2", "v1.2.3", "1.2.3-beta.1", "0.1.0+build5"] {
            assert!(semverish(v), "{v}");
        }
        for v in ["", "latest", "1..2", "1.2.3.4", "1.x"] {
            assert!(!semverish(v), "{v}");
        }
        assert!(valid_relative("data/cities.csv"));
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../../x",
            "SKILL.md",
            "a//b",
            "a\\b",
        ] {
            assert!(!valid_relative(p), "{p}");
        }
    }

    #[test]
    fn triggers_match_whole_words_and_phrases() {
        let skill = Skill {
            name: "weather".into(),
            description: "d".into(),
            version: None,
            triggers: vec!["weather".into(), "umbrella".into(), "will it rain".into()],
            intents: Vec::new(),
            tools: Vec::new(),
            instructions: "i".into(),
            dir: PathBuf::from("weather"),
            files: Vec::new(),
            sha256: BTreeMap::new(),
        };
        assert_eq!(skill.trigger_score(&words("What's the WEATHER like?")), 1);
        assert_eq!(
            skill.trigger_score(&words("Will it rain? Need an umbrella")),
            4
        );
        assert_eq!(skill.trigger_score(&words("the weatherman said")), 0);
        assert_eq!(skill.trigger_score(&words("it will rain")), 0);
        assert_eq!(skill.trigger_score(&words("hi")), 0);
    }
}
