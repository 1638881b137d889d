//! The decision layer. Every turn is understood first (DUE: intent, confidence, surprise)
//! and then answered down one of three roads:
//!
//! - **template**: a confident intent with a reply template (greetings, the time, help…)
//!   is answered at once, without the model;
//! - **knowledge**: an intent that asks the documents, or any turn whose best passage is a
//!   good match, is answered from retrieved passages (KRS) — by the model when it is ready,
//!   extractively (quoted, cited sentences) when not — with the passages cited in the
//!   reply's metadata;
//! - **model**: everything else (high surprise, low confidence, no template, tools that are
//!   not wired yet) goes to the model with the conversation.
//!
//! The decision, with the intent, confidence, surprise and citations, travels with the
//! turn's outcome ([`RouteInfo`]) and is logged and counted in metrics.

use moltbot_core::config::{Grounding, RouterConfig};
use moltbot_knowledge::{Hit, Knowledge, SearchMode, SearchOptions};
use moltbot_understand::{render_reply, Understanding};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Instant;

/// The road a turn took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Route {
    Template,
    Knowledge,
    Model,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Template => "template",
            Route::Knowledge => "knowledge",
            Route::Model => "model",
        }
    }
}

/// A passage an answer was grounded in. `index` is the number the answer cites (`[1]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Citation {
    pub index: usize,
    pub source: String,
    pub chunk_id: u64,
    pub heading: String,
    /// Byte offsets of the passage in the source's extracted text.
    pub start: usize,
    pub end: usize,
    /// Cosine similarity to the turn, when the passage came from the vector ranking.
    pub score: Option<f32>,
}

/// Counts a classified turn by how it was answered: `sparse_exit` (the char + word heads
/// were sure enough, no encoder pass) or `full` (the whole model, encoder included when it
/// has one).
pub fn count_understood(sparse_exit: bool) {
    let path = if sparse_exit { "sparse_exit" } else { "full" };
    metrics::counter!("moltbot_understand_total", "path" => path).increment(1);
}

/// Why a turn went where it went, for the response metadata, logs and metrics.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RouteInfo {
    pub route: Route,
    /// A short machine-readable reason: `template`, `knowledge_intent`, `knowledge_hit`,
    /// `out_of_domain`, `low_confidence`, `no_template`, `tool_intent`,
    /// `in_conversation`, `long_input`, `no_passages`, `understanding_unavailable`,
    /// `router_disabled`, `redelivered`.
    #[serde(deserialize_with = "moltbot_core::intern::de")]
    pub reason: moltbot_core::intern::Label,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coarse: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub surprise: Option<f32>,
    /// Who wrote a grounded answer: `model`, `extractive`, or `model_then_quotes` (the
    /// model's reply did not draw on the passages, so they were quoted after it).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "moltbot_core::intern::de_opt"
    )]
    pub grounding: Option<moltbot_core::intern::Label>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub citations: Vec<Citation>,
    /// The tool (or skill) the turn's intent names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// Arguments of that tool the intent decides.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tool_args: std::collections::BTreeMap<String, String>,
    /// The arguments the model is to write (`None`: any).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_fields: Option<Vec<String>>,
    /// Time spent understanding and retrieving, before any generation.
    pub route_ms: f64,
}

impl RouteInfo {
    /// The metadata of a turn that was not routed (router off or not loaded yet).
    pub fn unrouted(reason: &'static str) -> Self {
        Self {
            route: Route::Model,
            reason,
            intent: None,
            coarse: None,
            confidence: None,
            surprise: None,
            grounding: None,
            citations: Vec::new(),
            tool: None,
            tool_args: std::collections::BTreeMap::new(),
            tool_fields: None,
            route_ms: 0.0,
        }
    }
}

/// What the engine does with the turn.
#[derive(Debug, Clone)]
pub enum Plan {
    /// Send this reply; no model (a template, or passages quoted extractively).
    Reply(String),
    /// The model answers from these passages (in citation order).
    Ground(Vec<Hit>),
    /// The model, with the conversation.
    Model,
}

/// Understanding + retrieval + the routing rules. Cheap to share; every method blocks (a
/// forward pass of the encoder), so the engine calls it from `spawn_blocking`.
pub struct DialogueRouter {
    understanding: Option<Arc<Understanding>>,
    knowledge: Option<Arc<Knowledge>>,
    cfg: RouterConfig,
    min_confidence: f32,
}

impl std::fmt::Debug for DialogueRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DialogueRouter")
            .field("understanding", &self.understanding.is_some())
            .field("knowledge", &self.knowledge.is_some())
            .field("cfg", &self.cfg)
            .finish()
    }
}

impl DialogueRouter {
    /// `min_confidence` is the intent confidence a template answer needs
    /// (`understanding.min_confidence`); out-of-domain turns (surprise at or above the
    /// model's threshold) never get one.
    pub fn new(
        understanding: Option<Arc<Understanding>>,
        knowledge: Option<Arc<Knowledge>>,
        cfg: RouterConfig,
        min_confidence: f32,
    ) -> Self {
        Self {
            understanding,
            knowledge,
            cfg,
            min_confidence,
        }
    }

    pub fn config(&self) -> &RouterConfig {
        &self.cfg
    }

    /// Decide how to answer `text`. `in_conversation`: the session already holds an
    /// exchange, so replies that only fit a fresh one ("Got it." to a bare "yes") are not
    /// given. `model_ready`: whether the model could write a grounded answer now (with
    /// `grounding = "auto"`, passages are quoted when it cannot). Never fails: trouble in
    /// understanding or retrieval is logged and the turn goes to the model.
    pub fn decide(
        &self,
        text: &str,
        in_conversation: bool,
        model_ready: bool,
    ) -> (RouteInfo, Plan) {
        let started = Instant::now();
        let (mut info, plan) = self.decide_inner(text, in_conversation, model_ready);
        info.route_ms = started.elapsed().as_secs_f64() * 1e3;
        (info, plan)
    }

    fn decide_inner(
        &self,
        text: &str,
        in_conversation: bool,
        model_ready: bool,
    ) -> (RouteInfo, Plan) {
        if !self.cfg.enabled {
            return (RouteInfo::unrouted("router_disabled"), Plan::Model);
        }
        let mut info = RouteInfo::unrouted("understanding_unavailable");
        let mut knowledge_intent = false;
        // The turn's sentence vector from understanding, reused by the knowledge search
        // when both use the same encoder (one forward pass per turn instead of two; for a
        // model with tuned layers, the shared lower layers run once).
        let mut vector = None;
        if let Some(u) = &self.understanding {
            match u.understand_keep_vector(text) {
                Ok((understood, v)) => {
                    vector = v.filter(|_| match (u.encoder(), self.knowledge.as_ref()) {
                        (Some(a), Some(kb)) => Arc::ptr_eq(a, kb.encoder()),
                        _ => false,
                    });
                    let p = understood.prediction;
                    count_understood(p.sparse_exit);
                    info.intent = Some(p.fine.clone());
                    info.coarse = Some(p.coarse.clone());
                    info.confidence = Some(p.confidence);
                    info.surprise = Some(p.surprise);
                    let model = u.model();
                    let spec = model.intent(&p.fine);
                    let confident = !p.out_of_domain && p.confidence >= self.min_confidence;
                    info.reason = if p.out_of_domain {
                        "out_of_domain"
                    } else if !confident {
                        "low_confidence"
                    } else {
                        "no_template"
                    };
                    if let (true, Some(spec)) = (confident, spec) {
                        if spec.knowledge {
                            knowledge_intent = true;
                        } else if spec.tool.is_some() || spec.skill.is_some() {
                            // The model answers with the intent's tool (or skill) offered
                            // first, and made to call it when it is loaded.
                            info.reason = "tool_intent";
                            info.tool = spec.tool.clone().or_else(|| spec.skill.clone());
                            info.tool_args = spec.tool_args.clone();
                            info.tool_fields = spec.tool_fields.clone();
                        } else if spec.contextual && in_conversation {
                            info.reason = "in_conversation";
                        } else if text.chars().count() > self.cfg.template_max_chars {
                            info.reason = "long_input";
                        } else if let Some(reply) = render_reply(spec, text, &jiff::Zoned::now()) {
                            info.route = Route::Template;
                            info.reason = "template";
                            return (info, Plan::Reply(reply));
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(cause = %e, "understanding failed; the turn goes to the model");
                }
            }
        }
        let Some(kb) = self.knowledge.as_ref().filter(|k| k.chunk_count() > 0) else {
            if knowledge_intent {
                info.reason = "no_passages";
            }
            return (info, Plan::Model);
        };
        let opts = SearchOptions {
            sources: None,
            mode: SearchMode::Hybrid,
        };
        let vector = vector.and_then(|v| match v.resolve(kb.encoder().as_ref()) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(cause = %e, "the turn's vector could not be finished; the search encodes it");
                None
            }
        });
        let hits = match kb.search_with_vector(text, vector.as_deref(), self.cfg.passages, &opts) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(cause = %e, "knowledge search failed; the turn goes to the model");
                return (info, Plan::Model);
            }
        };
        let floor = if knowledge_intent {
            self.cfg.knowledge_intent_min_score
        } else {
            self.cfg.good_hit_score
        };
        let best = hits
            .iter()
            .filter_map(|h| h.vector_score)
            .fold(f32::NEG_INFINITY, f32::max);
        // Knowledge "hit": the store had a passage close enough to use for this turn.
        let result = if best < floor { "miss" } else { "hit" };
        metrics::counter!("moltbot_knowledge_lookup_total", "result" => result).increment(1);
        if best < floor {
            if knowledge_intent {
                info.reason = "no_passages";
            }
            return (info, Plan::Model);
        }
        // Keep the passages that are close enough to the turn to help (the fused ranking
        // may have lifted keyword-only matches); their order is the citation order.
        let keep_floor = floor.min(best * 0.6);
        let passages: Vec<Hit> = hits
            .into_iter()
            .filter(|h| {
                h.vector_score.is_some_and(|s| s >= keep_floor) || h.keyword_rank == Some(1)
            })
            .collect();
        info.route = Route::Knowledge;
        info.reason = if knowledge_intent {
            "knowledge_intent"
        } else {
            "knowledge_hit"
        };
        info.citations = passages
            .iter()
            .enumerate()
            .map(|(i, h)| Citation {
                index: i + 1,
                source: h.source.clone(),
                chunk_id: h.chunk_id,
                heading: h.heading.clone(),
                start: h.start,
                end: h.end,
                score: h.vector_score,
            })
            .collect();
        let with_model = match self.cfg.grounding {
            Grounding::Auto => model_ready,
            Grounding::Model => true,
            Grounding::Extractive => false,
        };
        if with_model {
            info.grounding = Some("model");
            (info, Plan::Ground(passages))
        } else {
            info.grounding = Some("extractive");
            (info, Plan::Reply(extractive_answer(text, &passages)))
        }
    }
}

/// Most characters of one passage put in the model's prompt; the local model's context is
/// small, and the best passages are short anyway.
const PROMPT_PASSAGE_CHARS: usize = 1200;

/// The system message that hands the passages to the model.
pub fn grounding_prompt(passages: &[Hit]) -> String {
    let mut s = String::from(
        "Answer the user's last message using the numbered passages below, taken from \
         their own documents. Cite the passages you use like [1] or [2]. If the passages \
         do not contain the answer, say so in one sentence.\n",
    );
    for (i, h) in passages.iter().enumerate() {
        s.push_str(&format!("\n[{}] {}", i + 1, label(h)));
        s.push('\n');
        s.push_str(&truncate_chars(&h.text, PROMPT_PASSAGE_CHARS));
        s.push('\n');
    }
    s
}

/// An answer without the model: from each of the best passages, the sentences that share
/// the most words with the question, quoted with their citation numbers and sources.
pub fn extractive_answer(question: &str, passages: &[Hit]) -> String {
    let mut terms = content_words(question, 3, false);
    terms.sort();
    terms.dedup();
    let mut out = String::from(if in_cjk(question) {
        "根据你的文档：\n"
    } else {
        "From your documents:\n"
    });
    // The best passage, and the next ones only while they are nearly as close to the
    // question (a quote from a neighbouring section distracts more than it helps).
    let top = passages.first().and_then(|h| h.vector_score);
    let quoted: Vec<Hit> = passages
        .iter()
        .take(3)
        .enumerate()
        .take_while(|(i, h)| {
            *i == 0 || matches!((top, h.vector_score), (Some(t), Some(s)) if s >= 0.85 * t)
        })
        .map(|(_, h)| h.clone())
        .collect();
    for (i, h) in quoted.iter().enumerate() {
        let excerpt = best_sentences(&h.text, &terms, 2);
        out.push_str(&format!("\n[{}] {}", i + 1, excerpt));
    }
    out.push_str(&sources_footer(question, &quoted));
    out
}

/// The line added under a grounded answer written by the model, so the reply itself names
/// its sources (small local models rarely cite on their own).
pub fn sources_footer(question: &str, passages: &[Hit]) -> String {
    let list: Vec<String> = passages
        .iter()
        .enumerate()
        .map(|(i, h)| format!("[{}] {}", i + 1, label(h)))
        .collect();
    format!(
        "\n\n{}{}",
        if in_cjk(question) {
            "来源："
        } else {
            "Sources: "
        },
        list.join("; ")
    )
}

/// Whether a reply written from `passages` keeps to them. Three checks, all on content
/// words (four letters or more, numbers, CJK characters; plural `s` dropped), matched as
/// whole words against the passages:
/// - every number the reply states is in the passages: a wrong figure is the costliest
///   mistake a grounded answer can make (citation marks `[1]` and list numbers aside);
/// - at least a third of all its content words are;
/// - sentences where fewer than half are (three words or more: "I hope this helps." is
///   let through) hold less than a third of its words. A small model that answers from
///   its own beliefs ("it varies by company; some offer more than 31") fails here even
///   when it repeats the passage's vocabulary.
pub fn is_supported(reply: &str, passages: &[Hit]) -> bool {
    let known: std::collections::HashSet<String> = passages
        .iter()
        .flat_map(|h| content_words(&h.text, 4, true))
        .map(fold_plural)
        .collect();
    let reply = without_markers(reply);
    let (mut total, mut hits, mut astray) = (0, 0, 0);
    for sentence in split_sentences(&reply) {
        let terms: Vec<String> = content_words(sentence, 4, true)
            .into_iter()
            .map(fold_plural)
            .collect();
        let known_here = terms.iter().filter(|t| known.contains(*t)).count();
        let unknown_number = terms
            .iter()
            .any(|t| t.chars().all(|c| c.is_ascii_digit()) && !known.contains(t));
        if unknown_number {
            return false;
        }
        total += terms.len();
        hits += known_here;
        if terms.len() >= 3 && known_here * 2 < terms.len() {
            astray += terms.len();
        }
    }
    total > 0 && hits * 3 >= total && astray * 3 < total
}

/// `reply` without citation marks (`[1]`, `[1, 2]`) and list numbers at line starts
/// (`1.`, `2)`), which are numbers the passages need not hold.
fn without_markers(reply: &str) -> String {
    let mut out = String::with_capacity(reply.len());
    for line in reply.split_inclusive('\n') {
        let body = line.trim_start();
        let digits = body.chars().take_while(char::is_ascii_digit).count();
        let mut after = body[digits..].chars();
        let marked = (1..=2).contains(&digits)
            && matches!(after.next(), Some('.' | ')'))
            && after.next().is_none_or(char::is_whitespace);
        let line = if marked { &body[digits + 1..] } else { line };
        let mut rest = line;
        while let Some(open) = rest.find('[') {
            out.push_str(&rest[..open]);
            let after = &rest[open + 1..];
            match after.find(']') {
                Some(close)
                    if close > 0
                        && after[..close]
                            .chars()
                            .all(|c| c.is_ascii_digit() || c == ',' || c == ' ') =>
                {
                    rest = &after[close + 1..];
                }
                _ => {
                    out.push('[');
                    rest = after;
                }
            }
        }
        out.push_str(rest);
    }
    out
}

/// English plurals fold onto their singular for matching ("employees" meets "employee");
/// "ss" endings ("access") and short words keep theirs.
fn fold_plural(word: String) -> String {
    if word.len() > 4 && word.ends_with('s') && !word.ends_with("ss") && word.is_ascii() {
        word[..word.len() - 1].to_string()
    } else {
        word
    }
}

fn label(h: &Hit) -> String {
    if h.heading.is_empty() {
        h.source.clone()
    } else {
        format!("{} › {}", h.source, h.heading)
    }
}

fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", text[..cut].trim_end()),
        None => text.to_string(),
    }
}

/// Whether `text` is written in an unspaced script (Chinese, Japanese): replies to it
/// get their fixed words in Chinese.
fn in_cjk(text: &str) -> bool {
    text.chars()
        .any(moltbot_understand::text::is_unspaced_script)
}

/// Lower-cased words of at least `min_chars` characters (and numbers of any length when
/// `numbers`), and single characters of unspaced scripts, which carry meaning on their own.
fn content_words(text: &str, min_chars: usize, numbers: bool) -> Vec<String> {
    let mut out = Vec::new();
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        if word
            .chars()
            .any(moltbot_understand::text::is_unspaced_script)
        {
            out.extend(word.chars().map(|c| c.to_string()));
        } else if word.chars().count() >= min_chars
            || (numbers && word.chars().all(|c| c.is_ascii_digit()))
        {
            out.push(word.to_lowercase());
        }
    }
    out
}

/// Up to `n` sentences of `text` that contain the most of `terms`, in their original
/// order; the passage's opening when none matches.
fn best_sentences(text: &str, terms: &[String], n: usize) -> String {
    let sentences = split_sentences(text);
    let mut scored: Vec<(usize, usize)> = sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let lower = s.to_lowercase();
            (
                terms.iter().filter(|t| lower.contains(t.as_str())).count(),
                i,
            )
        })
        .filter(|(score, _)| *score > 0)
        .collect();
    if scored.is_empty() {
        return truncate_chars(text.trim(), 300);
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut chosen: Vec<usize> = scored.iter().take(n).map(|(_, i)| *i).collect();
    chosen.sort_unstable();
    let joined: Vec<&str> = chosen.iter().map(|i| sentences[*i].trim()).collect();
    truncate_chars(&joined.join(" "), 600)
}

/// Sentences end at `.`, `!`, `?` followed by whitespace, at their CJK forms, or at line
/// breaks (headings, list items).
fn split_sentences(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = match c {
            '。' | '！' | '？' | '\n' => Some(i + c.len_utf8()),
            '.' | '!' | '?' => match chars.peek() {
                Some((_, next)) if next.is_whitespace() => Some(i + 1),
                None => Some(i + 1),
                _ => None,
            },
            _ => None,
        };
        if let Some(end) = end {
            let s = &text[start..end];
            if !s.trim().is_empty() {
                out.push(s);
            }
            start = end;
        }
    }
    if start < text.len() && !text[start..].trim().is_empty() {
        out.push(&text[start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(source: &str, heading: &str, text: &str) -> Hit {
        Hit {
            chunk_id: 7,
            source: source.into(),
            heading: heading.into(),
            text: text.into(),
            start: 0,
            end: text.len(),
            score: 0.1,
            vector_rank: Some(1),
            vector_score: Some(0.7),
            keyword_rank: None,
        }
    }

    #[test]
    fn extractive_answer_quotes_the_matching_sentences_and_cites_sources() {
        let h = hit(
            "handbook.md",
            "Leave",
            "Our office opens at nine. Employees get 30 days of paid vacation per year. \
             Vacation requests go to your manager.",
        );
        let a = extractive_answer("How many vacation days do employees get?", &[h]);
        assert!(
            a.contains("[1] Employees get 30 days of paid vacation per year."),
            "{a}"
        );
        assert!(!a.contains("office opens"), "{a}");
        assert!(a.ends_with("Sources: [1] handbook.md › Leave"), "{a}");
    }

    #[test]
    fn extractive_answer_quotes_only_passages_nearly_as_close_as_the_best() {
        let mut best = hit("a.md", "", "Employees get 30 days of paid vacation.");
        best.vector_score = Some(0.8);
        let mut near = hit("b.md", "", "Vacation days roll over for one year.");
        near.vector_score = Some(0.75);
        let mut far = hit("c.md", "", "Expenses are paid within 14 days.");
        far.vector_score = Some(0.5);
        let a = extractive_answer("vacation days?", &[best, near, far]);
        assert!(a.contains("[2] Vacation days roll over"), "{a}");
        assert!(!a.contains("Expenses") && !a.contains("c.md"), "{a}");
    }

    #[test]
    fn extractive_answer_in_chinese() {
        let h = hit(
            "手册.md",
            "",
            "公司每年提供三十天带薪休假。办公室九点开门。",
        );
        let a = extractive_answer("休假有多少天？", &[h]);
        assert!(a.starts_with("根据你的文档"), "{a}");
        assert!(a.contains("带薪休假"), "{a}");
        assert!(a.contains("来源：[1] 手册.md"), "{a}");
    }

    #[test]
    fn support_check_catches_replies_that_ignore_the_passages() {
        let h = [hit(
            "handbook.md",
            "",
            "Every employee gets 31 days of paid vacation per calendar year.",
        )];
        assert!(is_supported(
            "Employees get 31 days of paid vacation [1].",
            &h
        ));
        assert!(!is_supported("The answer is 3.", &h));
        assert!(!is_supported("", &h));
        // The vocabulary of the passage around a belief of the model's own: the second
        // sentence (and most of the first) is not in the passage.
        assert!(!is_supported(
            "The number of vacation days a employee can get per year varies depending on \
             the company's policies. Some companies offer more than 31, while others may \
             have fewer or no paid vacation days at all.",
            &h
        ));
        // A figure the passage does not hold, in an otherwise faithful sentence.
        assert!(!is_supported(
            "Every employee gets 30 days of paid vacation per calendar year.",
            &h
        ));
        // Citation marks, list numbers and a closing courtesy are fine.
        assert!(is_supported(
            "1. Every employee gets 31 days of paid vacation [1, 2].\n2) Per calendar year [1]. \
             I hope this helps!",
            &h
        ));
        let zh = [hit("手册.md", "", "公司每年提供三十天带薪休假。")];
        assert!(is_supported("每年有三十天带薪休假。", &zh));
        assert!(!is_supported("我不知道。", &zh));
    }

    #[test]
    fn markers_are_taken_out_before_numbers_are_checked() {
        assert_eq!(
            without_markers("1. Yes [1].\n 12) No [2, 3] [x] [] end"),
            " Yes .\n No  [x] [] end"
        );
        assert_eq!(without_markers("31 days"), "31 days");
        assert_eq!(without_markers("3.5 percent"), "3.5 percent");
    }

    #[test]
    fn sentences_split_on_western_and_cjk_marks() {
        let s = split_sentences("One. Two 3.5 ok! 三。四？\nFive");
        assert_eq!(
            s,
            vec!["One.", " Two 3.5 ok!", " 三。", "四？", "\n", "Five"]
                .into_iter()
                .filter(|x| !x.trim().is_empty())
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn grounding_prompt_numbers_and_bounds_passages() {
        let long = "word ".repeat(1000);
        let p = grounding_prompt(&[hit("a.md", "H", "short"), hit("b.txt", "", &long)]);
        assert!(p.contains("[1] a.md › H\nshort"), "{p}");
        assert!(p.contains("[2] b.txt\n"), "{p}");
        assert!(p.len() < 2000, "{}", p.len());
    }
}
