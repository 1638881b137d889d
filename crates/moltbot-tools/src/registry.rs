//! [`Registry`]: what is loaded, what is not and why, and which tools a turn gets.
//!
//! Lean prompts: peers put every tool and skill into every request (53–58 KB for "hi").
//! We offer a turn only the tools whose trigger words or description match it, or the one
//! its intent names, at most [`MAX_TOOLS_PER_TURN`] of them; a greeting gets none.

use moltbot_core::{Tool, ToolSpec};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

/// Tools offered to the model in one turn, at most.
pub const MAX_TOOLS_PER_TURN: usize = 3;

/// A tool is offered when its score reaches this (one trigger word, or two description words).
const MIN_SCORE: f32 = 1.0;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapabilityKind {
    Tool,
    Skill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CapabilityStatus {
    Loaded,
    /// Switched off in config.
    Disabled,
    /// Configured but could not start (missing binary, bad manifest, hash mismatch).
    Error,
}

/// One row of `GET /api/v1/capabilities` / `moltbot capabilities`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Capability {
    pub name: String,
    pub kind: CapabilityKind,
    pub status: CapabilityStatus,
    pub description: String,
    /// `builtin`, or the skill's folder.
    pub source: String,
    /// Why it is not loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// For skills: the tools it may use.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tools: Vec<String>,
}

struct Loaded {
    tool: Arc<dyn Tool>,
    source: String,
    triggers: Vec<String>,
    description_words: HashSet<String>,
}

#[derive(Default)]
struct Inner {
    tools: BTreeMap<String, Loaded>,
    /// Capabilities that are not tools or did not load (skills, disabled or broken tools),
    /// keyed by (kind, name) so a reload replaces a row.
    others: BTreeMap<(String, String), Capability>,
}

/// The loaded tools and the state of every capability. Cheap to share (`Arc`); tools can be
/// added and removed while the gateway runs (skills are hot-reloaded).
#[derive(Default)]
pub struct Registry {
    // A std lock: never held across an await (selection and listing copy what they need).
    inner: RwLock<Inner>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("tools", &self.names())
            .finish()
    }
}

impl Registry {
    pub fn new() -> Self {
        Self::default()
    }

    /// Load a tool. `triggers` are words (or short phrases) that make a turn relevant to it,
    /// besides the words of its description. A tool of the same name is replaced.
    pub fn add(&self, tool: Arc<dyn Tool>, source: &str, triggers: &[&str]) {
        let spec = tool.spec();
        debug_assert!(
            ToolSpec::valid_name(&spec.name),
            "bad tool name {}",
            spec.name
        );
        let loaded = Loaded {
            description_words: words(&spec.description)
                .into_iter()
                .filter(|w| !STOP_WORDS.contains(&w.as_str()))
                .collect(),
            // Single words are stemmed like the turn's words ("reminders" meets "reminder").
            triggers: triggers
                .iter()
                .map(|t| {
                    let t = t.to_lowercase();
                    if t.contains(' ') {
                        t
                    } else {
                        stem(&t)
                    }
                })
                .collect(),
            source: source.to_string(),
            tool: tool.clone(),
        };
        let mut inner = self.write();
        inner
            .others
            .remove(&("tool".to_string(), spec.name.clone()));
        inner.tools.insert(spec.name.clone(), loaded);
    }

    /// Unload a tool; returns whether it was loaded.
    pub fn remove(&self, name: &str) -> bool {
        self.write().tools.remove(name).is_some()
    }

    /// Record a capability that is not (or not yet) a loaded tool: a disabled or broken tool,
    /// or a skill. Replaces an earlier row of the same kind and name.
    pub fn note(&self, capability: Capability) {
        let kind = match capability.kind {
            CapabilityKind::Tool => "tool",
            CapabilityKind::Skill => "skill",
        };
        self.write()
            .others
            .insert((kind.to_string(), capability.name.clone()), capability);
    }

    /// Forget every noted skill whose name is not in `keep` (after a rescan).
    pub fn retain_skills(&self, keep: &HashSet<String>) {
        self.write()
            .others
            .retain(|(kind, name), _| kind != "skill" || keep.contains(name));
    }

    pub fn get(&self, name: &str) -> Option<Arc<dyn Tool>> {
        self.read().tools.get(name).map(|l| l.tool.clone())
    }

    pub fn names(&self) -> Vec<String> {
        self.read().tools.keys().cloned().collect()
    }

    /// Every capability: loaded tools first (by name), then the rest.
    pub fn list(&self) -> Vec<Capability> {
        let inner = self.read();
        let mut out: Vec<Capability> = inner
            .tools
            .values()
            .map(|l| Capability {
                name: l.tool.spec().name.clone(),
                kind: CapabilityKind::Tool,
                status: CapabilityStatus::Loaded,
                description: l.tool.spec().description.clone(),
                source: l.source.clone(),
                reason: None,
                tools: Vec::new(),
            })
            .collect();
        out.extend(inner.others.values().cloned());
        out
    }

    /// The tools relevant to `text`, best first, at most [`MAX_TOOLS_PER_TURN`]. Tools named
    /// in `wanted` (by the turn's intent or skill) come first; `allowed`, when given, limits
    /// the choice (a skill may only use the tools it declares).
    pub fn select(
        &self,
        text: &str,
        wanted: &[String],
        allowed: Option<&[String]>,
    ) -> Vec<Arc<dyn Tool>> {
        let inner = self.read();
        let permitted = |name: &str| allowed.is_none_or(|a| a.iter().any(|t| t == name));
        let mut picked: Vec<Arc<dyn Tool>> = wanted
            .iter()
            .filter(|name| permitted(name))
            .filter_map(|name| inner.tools.get(name.as_str()))
            .map(|l| l.tool.clone())
            .collect();
        let lowered = text.to_lowercase();
        let text_words = words(&lowered);
        let mut scored: Vec<(f32, &Loaded)> = inner
            .tools
            .values()
            .filter(|l| permitted(&l.tool.spec().name))
            .filter(|l| !wanted.contains(&l.tool.spec().name))
            .map(|l| (score(l, &lowered, &text_words), l))
            .filter(|(s, _)| *s >= MIN_SCORE)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        for (_, l) in scored {
            if picked.len() >= MAX_TOOLS_PER_TURN {
                break;
            }
            picked.push(l.tool.clone());
        }
        picked.truncate(MAX_TOOLS_PER_TURN);
        picked
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A trigger (word or phrase) counts 1, a description word 0.5; a URL in the text counts
/// for tools that have `url` among their triggers.
fn score(tool: &Loaded, lowered: &str, text_words: &HashSet<String>) -> f32 {
    let mut s = 0.0;
    for t in &tool.triggers {
        let hit = if t.contains(' ') {
            lowered.contains(t.as_str())
        } else {
            text_words.contains(t.as_str())
        };
        if hit {
            s += 1.0;
        }
    }
    if tool.triggers.iter().any(|t| t == "url")
        && (lowered.contains("http://") || lowered.contains("https://") || lowered.contains("www."))
    {
        s += 1.0;
    }
    s += 0.5
        * tool
            .description_words
            .iter()
            .filter(|w| text_words.contains(w.as_str()))
            .count() as f32;
    s
}

/// Lower-cased words of at least two letters or digits (`ls`, `df`) (a light stem: a trailing `s` is
/// dropped from words longer than four letters, so "reminders" meets "reminder").
fn words(text: &str) -> HashSet<String> {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| w.chars().count() >= 2)
        .map(|w| stem(&w.to_lowercase()))
        .collect()
}

/// Drop a plural `s` from words longer than four letters.
fn stem(w: &str) -> String {
    match w.strip_suffix('s') {
        Some(stem) if stem.chars().count() >= 4 => stem.to_string(),
        _ => w.to_string(),
    }
}

/// Words too common to say a turn is about a tool.
const STOP_WORDS: &[&str] = &[
    "an", "in", "is", "it", "of", "on", "or", "to", "at", "as", "be", "by", "me", "my", "no", "so",
    "up", "we", "if", "do", "e.g", "the", "and", "for", "with", "that", "this", "from", "you",
    "your", "are", "was", "what", "can", "not", "but", "its", "into", "one", "all", "any", "has",
    "have", "will", "when", "use", "how", "who", "which", "then", "than", "them", "they", "our",
    "out", "about", "give", "get", "make", "new", "text", "return", "given", "other", "like",
    "also", "only",
];

#[cfg(test)]
mod tests {
    use super::*;
    use futures::future::BoxFuture;
    use moltbot_core::{ToolContext, ToolError, ToolOutput};

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

    fn tool(name: &str, description: &str) -> Arc<dyn Tool> {
        Arc::new(Named(ToolSpec {
            name: name.into(),
            description: description.into(),
            parameters: serde_json::json!({"type": "object"}),
        }))
    }

    fn registry() -> Registry {
        let r = Registry::new();
        r.add(
            tool("cron", "Schedule a reminder or a recurring job."),
            "builtin",
            &["remind", "reminder", "every", "daily", "tomorrow"],
        );
        r.add(
            tool(
                "web_fetch",
                "Fetch a web page and return its readable text.",
            ),
            "builtin",
            &["url", "fetch", "website"],
        );
        r.add(
            tool("exec", "Run a shell command in the workspace folder."),
            "builtin",
            &["run", "command", "shell"],
        );
        r
    }

    fn names(tools: &[Arc<dyn Tool>]) -> Vec<&str> {
        tools.iter().map(|t| t.spec().name.as_str()).collect()
    }

    #[test]
    fn a_greeting_gets_no_tools() {
        let r = registry();
        assert!(r.select("hi", &[], None).is_empty());
        assert!(r.select("hello, how are you today?", &[], None).is_empty());
    }

    #[test]
    fn turns_get_the_tools_they_are_about() {
        let r = registry();
        assert_eq!(
            names(&r.select("remind me tomorrow at 9 to call Anna", &[], None)),
            ["cron"]
        );
        assert_eq!(
            names(&r.select("summarise https://example.org/news", &[], None)),
            ["web_fetch"]
        );
        assert_eq!(names(&r.select("please run `ls -la`", &[], None)), ["exec"]);
        // The intent's tool comes first even without a matching word.
        assert_eq!(
            names(&r.select("what's in the news", &["web_fetch".to_string()], None)),
            ["web_fetch"]
        );
        // A skill's allowed list limits the choice.
        let allowed = vec!["exec".to_string()];
        assert!(r
            .select("remind me every day", &[], Some(&allowed))
            .is_empty());
    }

    #[test]
    fn listing_and_reload() {
        let r = registry();
        r.note(Capability {
            name: "browser".into(),
            kind: CapabilityKind::Tool,
            status: CapabilityStatus::Error,
            description: "Chromium".into(),
            source: "builtin".into(),
            reason: Some("no chromium binary found".into()),
            tools: Vec::new(),
        });
        let list = r.list();
        assert_eq!(list.len(), 4);
        assert_eq!(list[3].status, CapabilityStatus::Error);
        assert!(r.remove("exec"));
        assert!(!r.remove("exec"));
        assert_eq!(r.names(), ["cron", "web_fetch"]);
    }
}
