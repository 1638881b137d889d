//! The response filter: checks each model reply before it reaches the user, repairs what it
//! can and replaces what it cannot.
//!
//! | issue       | found when                                                  | done                                             |
//! |-------------|-------------------------------------------------------------|--------------------------------------------------|
//! | `empty`     | no letter, digit or emoji at all (and no native tool call)  | replaced by the fallback message                 |
//! | `loop`      | one unit repeated: 3 copies of a sentence, 4 of a word or two, more for number runs, code and table cells | cut after the first copy, generation stopped |
//! | `leak`      | a span of the system prompt (≥ `min_leak_chars` folded characters, down to half that for Chinese or Japanese) repeated word for word; the "You are …" sentence that introduces the assistant and numbered reference passages may be repeated | span removed; fallback if little is left |
//! | `tool_json` | the request has tools and the reply is a tool call in text that does not parse or names no tool | one repair; if that fails, passed through and flagged |
//! | `unsafe`    | a blocked term or pattern ([`terms`]), or the built-in list | replaced by the fallback message, generation stopped |
//!
//! [`ResponseFilter::check`] judges a whole reply. [`StreamGuard`] does the same on a stream:
//! it holds back a short tail (at least 48 characters, more while text looks like the start
//! of a loop, a leak or a tool call) and emits the rest, so streaming stays streaming. Only
//! text not yet emitted can be changed: when a streamed reply is rejected after part of it
//! went out, the fallback message follows that part instead of replacing it.
//! [`FilteredModel`] wraps any [`ChatModel`](moltbot_core::ChatModel) with a guard per
//! request and counts verdicts in `moltbot_filter_total{verdict, issue}`.
//!
//! What it does not catch: paraphrased prompt leaks, loops whose copies differ (counters,
//! "Step 1… Step 2…") or that stop before the third copy of a sentence, units longer than
//! 320 folded characters, harmful content not on a list, blocked terms masked or spelled
//! apart ("a$$hole", "k i l l"), and in a stream a pattern match longer than about 1 KB.
//! It also flags some legitimate text: short words sung four times ("la la la la") and
//! sentences of the system prompt the assistant is meant to pass on (opening hours).

mod guard;
mod leak;
mod model;
mod repeat;
pub mod terms;
mod text;
mod tool_json;

pub use guard::{GuardEnd, Step, StreamGuard};
pub use model::FilteredModel;

use moltbot_core::config::FilterConfig;
use moltbot_core::model::{ChatRequest, Role};
use std::sync::Arc;
use terms::Blocklist;

/// What was wrong with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Issue {
    Empty,
    Loop,
    Leak,
    ToolJson,
    Unsafe,
}

impl Issue {
    pub const ALL: [Issue; 5] = [
        Issue::Empty,
        Issue::Loop,
        Issue::Leak,
        Issue::ToolJson,
        Issue::Unsafe,
    ];

    /// Stable name, used as the `issue` metrics label and in the labelled set.
    pub fn as_str(self) -> &'static str {
        match self {
            Issue::Empty => "empty",
            Issue::Loop => "loop",
            Issue::Leak => "leak",
            Issue::ToolJson => "tool_json",
            Issue::Unsafe => "unsafe",
        }
    }

    pub fn parse(s: &str) -> Option<Issue> {
        Issue::ALL.into_iter().find(|i| i.as_str() == s)
    }
}

/// What the filter did with a reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Delivered unchanged.
    Pass,
    /// Delivered with the problem removed (loop cut, leak removed, tool JSON fixed).
    Repaired,
    /// Replaced (or, when streamed, ended) by the fallback message.
    Rejected,
    /// Delivered unchanged although something is wrong (tool JSON that could not be fixed,
    /// or was already streamed).
    Flagged,
}

impl Action {
    /// Stable name, used as the `verdict` metrics label.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pass => "pass",
            Action::Repaired => "repaired",
            Action::Rejected => "rejected",
            Action::Flagged => "flagged",
        }
    }
}

/// The filter's judgement of one reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub action: Action,
    /// The most serious issue found (`None` when the reply passed).
    pub issue: Option<Issue>,
}

impl Outcome {
    pub const PASS: Outcome = Outcome {
        action: Action::Pass,
        issue: None,
    };

    pub(crate) fn new(action: Action, issue: Issue) -> Outcome {
        Outcome {
            action,
            issue: Some(issue),
        }
    }

    /// `issue` label: the issue's name or `none`.
    pub fn issue_label(&self) -> &'static str {
        self.issue.map_or("none", Issue::as_str)
    }
}

/// A whole reply judged: the outcome and the text to deliver (the reply itself when it
/// passed or was flagged, the repaired reply, or the fallback message).
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub outcome: Outcome,
    pub text: String,
}

/// What a reply is judged against, taken from its request.
#[derive(Debug, Clone, Default)]
pub struct FilterContext {
    /// The system message(s): a reply must not repeat their instructions.
    pub system: String,
    /// The request offered tools, so a JSON reply may be a tool call.
    pub tools: bool,
}

impl FilterContext {
    pub fn new(system: impl Into<String>, tools: bool) -> Self {
        Self {
            system: system.into(),
            tools,
        }
    }

    pub fn from_request(request: &ChatRequest) -> Self {
        let system: Vec<&str> = request
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .map(|m| m.content.as_str())
            .collect();
        Self {
            system: system.join("\n\n"),
            tools: !request.tools.is_empty(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("model.filter.blocked_terms[{index}] must not be blank")]
    BlankTerm { index: usize },
    #[error(
        "model.filter.blocked_patterns[{index}] is not a valid regular expression: \
         {pattern:?}\n{cause}"
    )]
    BadPattern {
        index: usize,
        pattern: String,
        cause: String,
    },
    #[error(
        "model.filter.blocked_patterns[{index}] matches the empty text, got {pattern:?}\n\
         hint: it would block every reply"
    )]
    EmptyMatch { index: usize, pattern: String },
    #[error("model.filter.blocked_terms cannot be compiled: {0}")]
    Terms(String),
}

impl FilterError {
    pub fn kind(&self) -> &'static str {
        match self {
            FilterError::BlankTerm { .. } => "filter_blank_term",
            FilterError::BadPattern { .. } => "filter_bad_pattern",
            FilterError::EmptyMatch { .. } => "filter_empty_match",
            FilterError::Terms(_) => "filter_terms",
        }
    }
}

/// The compiled filter; cheap to clone (the rules are shared).
#[derive(Debug, Clone)]
pub struct ResponseFilter {
    rules: Arc<Rules>,
}

#[derive(Debug)]
struct Rules {
    blocklist: Blocklist,
    fallback: String,
    min_leak_chars: usize,
}

impl ResponseFilter {
    pub fn new(cfg: &FilterConfig) -> Result<ResponseFilter, FilterError> {
        Ok(ResponseFilter {
            rules: Arc::new(Rules {
                blocklist: Blocklist::new(
                    &cfg.blocked_terms,
                    &cfg.blocked_patterns,
                    cfg.builtin_terms,
                )?,
                fallback: cfg.fallback_message.clone(),
                min_leak_chars: cfg.min_leak_chars.max(1),
            }),
        })
    }

    /// The message that replaces a rejected reply.
    pub fn fallback(&self) -> &str {
        &self.rules.fallback
    }

    /// A guard for one streamed reply.
    pub fn guard(&self, ctx: &FilterContext) -> StreamGuard {
        StreamGuard::new(self.clone(), ctx)
    }

    /// Judge a whole reply. The same checks as the stream guard, but a rejected reply is
    /// replaced entirely.
    pub fn check(&self, reply: &str, ctx: &FilterContext) -> Verdict {
        let mut guard = self.guard(ctx);
        let mut text = guard.push(reply).emit;
        let end = guard.finish();
        let text = match end.outcome.action {
            Action::Pass | Action::Flagged => reply.to_string(),
            Action::Repaired => {
                text.push_str(&end.emit);
                text
            }
            Action::Rejected => self.fallback().to_string(),
        };
        Verdict {
            outcome: end.outcome,
            text,
        }
    }

    fn blocklist(&self) -> &Blocklist {
        &self.rules.blocklist
    }

    fn min_leak_chars(&self) -> usize {
        self.rules.min_leak_chars
    }
}

#[cfg(test)]
mod tests;
