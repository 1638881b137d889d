//! Intent data: our YAML/JSON intents files and the plain `text<TAB>label` TSV of public
//! intent sets.
//!
//! An intents file (YAML or JSON, same shape):
//! ```yaml
//! intents:
//!   - coarse: smalltalk          # the group (coarse intent)
//!     fine: greeting             # the intent itself, unique across the files
//!     examples: ["hi", "hello there", "你好"]
//!     reply: "Hello! What can I do for you?"   # optional: answer without the LLM
//!     skill: null                 # optional: skill or tool to route to
//!     tool: null
//!     knowledge: false            # optional: answer from the knowledge base
//! ```
//! A TSV file has one example per line, an optional `text<TAB>label` header, and labels
//! either `coarse/fine` or a bare `fine`. A bare label takes its group from a mapping file
//! (`--coarse-map`: `fine<TAB>coarse` lines, or a YAML/JSON object `{coarse: [fine, …]}`)
//! and, failing that, is left for the trainer to group.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    #[error("{}:{line}: {message}", path.display())]
    Line {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "intent `{fine}` is in group `{first}` and in group `{second}`; a fine intent belongs \
         to one group"
    )]
    Conflict {
        fine: String,
        first: String,
        second: String,
    },
    #[error("no examples in {0}")]
    Empty(String),
}

impl DatasetError {
    pub fn kind(&self) -> &'static str {
        match self {
            DatasetError::Read { .. } => "dataset_read",
            DatasetError::Parse { .. } => "dataset_parse",
            DatasetError::Line { .. } => "dataset_line",
            DatasetError::Conflict { .. } => "dataset_conflict",
            DatasetError::Empty(_) => "dataset_empty",
        }
    }
}

/// One intent of an intents file, and what to do when a turn matches it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    pub coarse: String,
    #[serde(alias = "intent")]
    pub fine: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub examples: Vec<String>,
    /// A reply template answered without the LLM. `{time}`, `{date}` and `{weekday}` are
    /// filled in at answer time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
    /// The reply in other languages, by language code (`zh`); `reply` is the fallback.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub replies: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skill: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Arguments of `tool` the intent already decides (`action: recall`); the model fills
    /// in the rest.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tool_args: BTreeMap<String, String>,
    /// The arguments of `tool` the model is to write for this intent (the others are left
    /// out; `[]`: none); absent lets it choose among all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_fields: Option<Vec<String>>,
    /// Answer from the knowledge base (retrieval) rather than a template.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub knowledge: bool,
    /// The template only fits a fresh exchange: inside a conversation ("yes" to the
    /// model's question) the turn goes to the model instead.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub contextual: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IntentsFile {
    intents: Vec<IntentSpec>,
}

/// One labelled utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Example {
    pub text: String,
    pub fine: String,
    /// `None` until a group is known (bare TSV label without a mapping).
    pub coarse: Option<String>,
}

/// The intents pack built into the binary (English and Chinese).
pub const DEFAULT_INTENTS: &str = include_str!("../data/default-intents.yaml");

/// Examples plus what is known of each intent.
#[derive(Debug, Clone, Default)]
pub struct Dataset {
    pub examples: Vec<Example>,
    /// Intent metadata by fine name (examples moved out into `examples`).
    pub intents: BTreeMap<String, IntentSpec>,
}

impl Dataset {
    /// Read and merge files: `.yaml`/`.yml`/`.json` intents files, anything else as TSV.
    /// `coarse_map` gives groups to bare TSV labels.
    pub fn load(paths: &[PathBuf], coarse_map: Option<&Path>) -> Result<Self, DatasetError> {
        let map = match coarse_map {
            Some(p) => load_coarse_map(p)?,
            None => HashMap::new(),
        };
        let mut out = Dataset::default();
        for path in paths {
            let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
                path: path.clone(),
                source,
            })?;
            match extension(path).as_str() {
                "yaml" | "yml" | "json" => out.add_intents_file(path, &text)?,
                _ => out.add_tsv(path, &text, &map)?,
            }
        }
        if out.examples.is_empty() {
            let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
            return Err(DatasetError::Empty(names.join(", ")));
        }
        Ok(out)
    }

    /// The built-in intents pack.
    pub fn builtin() -> Result<Self, DatasetError> {
        let mut out = Dataset::default();
        out.add_intents_file(Path::new("<built-in intents>"), DEFAULT_INTENTS)?;
        Ok(out)
    }

    /// Parse an intents file's text (YAML is a superset of JSON, so one parser reads both).
    pub fn add_intents_file(&mut self, path: &Path, text: &str) -> Result<(), DatasetError> {
        let file: IntentsFile = serde_yaml_ng::from_str(text).map_err(|e| DatasetError::Parse {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        for mut spec in file.intents {
            if spec.fine.trim().is_empty() || spec.coarse.trim().is_empty() {
                return Err(DatasetError::Parse {
                    path: path.to_path_buf(),
                    message: format!(
                        "`coarse` and `fine` must be non-empty, got coarse `{}` fine `{}`",
                        spec.coarse, spec.fine
                    ),
                });
            }
            for text in std::mem::take(&mut spec.examples) {
                self.examples.push(Example {
                    text,
                    fine: spec.fine.clone(),
                    coarse: Some(spec.coarse.clone()),
                });
            }
            self.merge_spec(spec)?;
        }
        Ok(())
    }

    fn add_tsv(
        &mut self,
        path: &Path,
        text: &str,
        map: &HashMap<String, String>,
    ) -> Result<(), DatasetError> {
        // Public sets quote fields CSV-style when a text holds a tab, a quote or a line
        // break, so read with a real CSV reader set to tabs.
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(b'\t')
            .has_headers(false)
            .flexible(true)
            .from_reader(text.as_bytes());
        for (n, record) in reader.records().enumerate() {
            let record = record.map_err(|e| DatasetError::Line {
                path: path.to_path_buf(),
                line: e.position().map_or(0, |p| p.line() as usize),
                message: e.to_string(),
            })?;
            let line_no = record.position().map_or(n + 1, |p| p.line() as usize);
            let fields: Vec<&str> = record.iter().collect();
            let line = fields.join("\t");
            if line.trim().is_empty() || (n == 0 && line == "text\tlabel") {
                continue;
            }
            let (utterance, label) = match fields.as_slice() {
                [utterance, label] => (utterance.trim(), *label),
                _ => {
                    return Err(DatasetError::Line {
                        path: path.to_path_buf(),
                        line: line_no,
                        message: format!("expected `text<TAB>label`, got `{}`", shorten(&line)),
                    })
                }
            };
            let label = label.trim();
            let (coarse, fine) = match label.split_once('/') {
                Some((c, f)) => (Some(c.to_string()), f.to_string()),
                None => (map.get(label).cloned(), label.to_string()),
            };
            if fine.is_empty() || utterance.trim().is_empty() {
                return Err(DatasetError::Line {
                    path: path.to_path_buf(),
                    line: line_no,
                    message: format!("empty text or label in `{}`", shorten(&line)),
                });
            }
            if let Some(coarse) = &coarse {
                self.merge_spec(IntentSpec {
                    coarse: coarse.clone(),
                    fine: fine.clone(),
                    examples: Vec::new(),
                    reply: None,
                    replies: BTreeMap::new(),
                    skill: None,
                    tool: None,
                    tool_args: BTreeMap::new(),
                    tool_fields: None,
                    knowledge: false,
                    contextual: false,
                })?;
            }
            self.examples.push(Example {
                text: utterance.to_string(),
                fine,
                coarse,
            });
        }
        Ok(())
    }

    fn merge_spec(&mut self, spec: IntentSpec) -> Result<(), DatasetError> {
        match self.intents.get_mut(&spec.fine) {
            Some(known) if known.coarse != spec.coarse => Err(DatasetError::Conflict {
                fine: spec.fine,
                first: known.coarse.clone(),
                second: spec.coarse,
            }),
            Some(known) => {
                // Later files may add routing details to an intent a TSV introduced.
                known.reply = known.reply.take().or(spec.reply);
                for (lang, text) in spec.replies {
                    known.replies.entry(lang).or_insert(text);
                }
                known.skill = known.skill.take().or(spec.skill);
                known.tool = known.tool.take().or(spec.tool);
                for (k, v) in spec.tool_args {
                    known.tool_args.entry(k).or_insert(v);
                }
                known.tool_fields = known.tool_fields.take().or(spec.tool_fields);
                known.knowledge |= spec.knowledge;
                known.contextual |= spec.contextual;
                Ok(())
            }
            None => {
                self.intents.insert(spec.fine.clone(), spec);
                Ok(())
            }
        }
    }

    /// Distinct fine labels, sorted.
    pub fn fine_labels(&self) -> Vec<String> {
        let mut v: Vec<String> = self.examples.iter().map(|e| e.fine.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Keep only examples whose fine label passes `keep`.
    pub fn filter(&self, keep: impl Fn(&str) -> bool) -> Dataset {
        Dataset {
            examples: self
                .examples
                .iter()
                .filter(|e| keep(&e.fine))
                .cloned()
                .collect(),
            intents: self
                .intents
                .iter()
                .filter(|(k, _)| keep(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// `fine<TAB>coarse` lines, or a YAML/JSON object `{coarse: [fine, …]}`.
pub fn load_coarse_map(path: &Path) -> Result<HashMap<String, String>, DatasetError> {
    let text = std::fs::read_to_string(path).map_err(|source| DatasetError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut out = HashMap::new();
    if matches!(extension(path).as_str(), "yaml" | "yml" | "json") {
        let groups: BTreeMap<String, Vec<String>> =
            serde_yaml_ng::from_str(&text).map_err(|e| DatasetError::Parse {
                path: path.to_path_buf(),
                message: format!("expected an object of group -> [intents]: {e}"),
            })?;
        for (coarse, fines) in groups {
            for fine in fines {
                out.insert(fine, coarse.clone());
            }
        }
        return Ok(out);
    }
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((fine, coarse)) = line.split_once('\t') else {
            return Err(DatasetError::Line {
                path: path.to_path_buf(),
                line: n + 1,
                message: format!("expected `fine<TAB>coarse`, got `{}`", shorten(line)),
            });
        };
        out.insert(fine.trim().to_string(), coarse.trim().to_string());
    }
    Ok(out)
}

fn extension(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}

fn shorten(s: &str) -> String {
    let mut out: String = s.chars().take(80).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn tsv_with_header_slash_labels_and_a_mapping_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let tsv = write(
            dir.path(),
            "train.tsv",
            "text\tlabel\nhi there\tsmalltalk/greeting\nmove money\ttransfer\nwhat's up\tchat\n",
        );
        let map = write(dir.path(), "map.tsv", "transfer\tbanking\n");
        let d = Dataset::load(&[tsv], Some(&map)).expect("load");
        assert_eq!(d.examples.len(), 3);
        assert_eq!(d.examples[0].coarse.as_deref(), Some("smalltalk"));
        assert_eq!(d.examples[0].fine, "greeting");
        assert_eq!(d.examples[1].coarse.as_deref(), Some("banking"));
        assert_eq!(d.examples[2].coarse, None, "bare label without mapping");
    }

    #[test]
    fn yaml_intents_file_keeps_routing_details() {
        let dir = tempfile::tempdir().expect("tempdir");
        let y = write(
            dir.path(),
            "i.yaml",
            "intents:\n  - coarse: time\n    fine: ask_time\n    examples: [what time is it, 几点了]\n    reply: \"It is {time}.\"\n",
        );
        let d = Dataset::load(&[y], None).expect("load");
        assert_eq!(d.examples.len(), 2);
        assert_eq!(
            d.intents["ask_time"].reply.as_deref(),
            Some("It is {time}.")
        );
    }

    #[test]
    fn the_builtin_pack_parses_with_english_and_chinese_examples() {
        let d = Dataset::builtin().expect("built-in pack");
        assert!(d.intents.len() >= 16);
        assert!(d
            .examples
            .iter()
            .any(|e| e.text.chars().any(crate::text::is_unspaced_script)));
        assert!(d.intents.values().all(|s| !s.coarse.is_empty()));
    }

    #[test]
    fn errors_name_file_line_and_problem() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bad = write(dir.path(), "bad.tsv", "ok\tlabel_a\nno tab here\n");
        let err = Dataset::load(&[bad], None)
            .expect_err("bad line")
            .to_string();
        assert!(
            err.contains("bad.tsv:2") && err.contains("text<TAB>label"),
            "{err}"
        );

        let conflict = write(dir.path(), "c.tsv", "a\tx/one\nb\ty/one\n");
        let err = Dataset::load(&[conflict], None)
            .expect_err("conflict")
            .to_string();
        assert!(
            err.contains("`one`") && err.contains("`x`") && err.contains("`y`"),
            "{err}"
        );

        let y = write(
            dir.path(),
            "u.yaml",
            "intents:\n  - coarse: a\n    fine: b\n    colour: red\n",
        );
        let err = Dataset::load(&[y], None)
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }
}
