//! Blocked content: configured terms and regular expressions, plus a small built-in list.
//!
//! Terms match case-insensitively and as whole words: a term edge that is a letter or digit
//! must not touch another letter or digit ("kill" blocks "kill" but not "skill" or
//! "killer"). Scripts written without spaces (Chinese, Japanese, Thai…) have no visible word
//! edges, so their terms match anywhere. The words of a phrase may be separated by any run
//! of spaces or punctuation. Patterns are used as written, case-insensitively.

use super::text::is_unspaced_script;
use super::FilterError;
use regex::{Regex, RegexBuilder};
use std::ops::Range;

/// Phrases no assistant should say to a user, blocked unless `builtin_terms = false`:
/// urging self-harm and threatening death, in English, German and Chinese. Deliberately
/// short and specific, so that ordinary text ("kill the process", "to die for") passes;
/// anything broader belongs in the deployment's own `blocked_terms`.
pub const BUILTIN_TERMS: &[&str] = &[
    "go kill yourself",
    "just kill yourself",
    "you should kill yourself",
    "you should die",
    "you deserve to die",
    "i hope you die",
    "i will kill you",
    "i am going to kill you",
    "i'm going to kill you",
    "the world would be better without you",
    "bring dich um",
    "töte dich",
    "du solltest sterben",
    "du verdienst den tod",
    "ich hoffe du stirbst",
    "去死吧",
    "你去死",
    "你怎么不去死",
    "我要杀了你",
];

#[derive(Debug)]
pub(crate) struct Blocklist {
    /// All terms as one alternation (if any), then each pattern.
    regexes: Vec<Regex>,
    /// Longest term, in characters.
    longest_term: usize,
    /// The terms, lower-cased with runs of non-word characters as one space, to tell
    /// whether the end of a streamed reply could be the start of one.
    literal: Vec<String>,
    /// Patterns cannot be checked that way: with any, the guard holds a fixed tail back.
    has_patterns: bool,
}

impl Blocklist {
    pub(crate) fn new(
        terms: &[String],
        patterns: &[String],
        builtin: bool,
    ) -> Result<Blocklist, FilterError> {
        let mut all: Vec<&str> = Vec::new();
        for (index, term) in terms.iter().enumerate() {
            if term.trim().is_empty() {
                return Err(FilterError::BlankTerm { index });
            }
            all.push(term.trim());
        }
        if builtin {
            all.extend(BUILTIN_TERMS);
        }
        let mut regexes = Vec::with_capacity(patterns.len() + 1);
        if !all.is_empty() {
            let alternation: Vec<String> = all.iter().map(|t| term_regex(t)).collect();
            let re = RegexBuilder::new(&alternation.join("|"))
                .case_insensitive(true)
                .build()
                .map_err(|e| FilterError::Terms(e.to_string()))?;
            regexes.push(re);
        }
        for (index, pattern) in patterns.iter().enumerate() {
            let re = RegexBuilder::new(pattern)
                .case_insensitive(true)
                .build()
                .map_err(|e| FilterError::BadPattern {
                    index,
                    pattern: pattern.clone(),
                    cause: e.to_string(),
                })?;
            if re.is_match("") {
                return Err(FilterError::EmptyMatch {
                    index,
                    pattern: pattern.clone(),
                });
            }
            regexes.push(re);
        }
        let longest_term = all.iter().map(|t| t.chars().count()).max().unwrap_or(0);
        Ok(Blocklist {
            regexes,
            longest_term,
            literal: all.iter().map(|t| normalize(t)).collect(),
            has_patterns: !patterns.is_empty(),
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.regexes.is_empty()
    }

    pub(crate) fn longest_term(&self) -> usize {
        self.longest_term
    }

    pub(crate) fn has_patterns(&self) -> bool {
        self.has_patterns
    }

    /// The earliest byte at or after `from` where the rest of `text` could be the start of a
    /// blocked term (so it must not be emitted yet); `None` when no such start exists.
    pub(crate) fn open_from(&self, text: &str, from: usize) -> Option<usize> {
        if self.literal.is_empty() {
            return None;
        }
        // A term is at most `longest_term` characters, plus slack for separators that the
        // term's `\W+` joints allow to be longer.
        let reach = self.longest_term * 2 + 8;
        let first = text
            .char_indices()
            .rev()
            .nth(reach)
            .map_or(0, |(i, _)| i)
            .max(from);
        let mut prev: Option<char> = text[..first].chars().next_back();
        for (i, c) in text[first..].char_indices() {
            let at = first + i;
            let starts_word =
                prev.is_none_or(|p| !is_word(p) || is_unspaced_script(c)) || !is_word(c);
            if starts_word {
                let rest = normalize(&text[at..]);
                if !rest.trim().is_empty()
                    && self
                        .literal
                        .iter()
                        .any(|t| t.starts_with(rest.as_str()) || t.starts_with(rest.trim_start()))
                {
                    return Some(at);
                }
            }
            prev = Some(c);
        }
        None
    }

    /// The earliest match in `haystack` that starts at or after byte `start`. Text before
    /// `start` is still seen by word-boundary checks.
    pub(crate) fn find_at(&self, haystack: &str, start: usize) -> Option<Range<usize>> {
        self.regexes
            .iter()
            .filter_map(|re| re.find_at(haystack, start))
            .map(|m| m.range())
            .min_by_key(|r| (r.start, std::cmp::Reverse(r.end)))
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Lower case, and every run of non-word characters as one space.
fn normalize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut gap = false;
    for c in s.chars() {
        if is_word(c) {
            if gap && !out.is_empty() {
                out.push(' ');
            }
            gap = false;
            out.extend(c.to_lowercase());
        } else {
            gap = true;
        }
    }
    if gap && !out.is_empty() {
        out.push(' ');
    }
    out
}

/// A term as a regex: escaped, words joined by any run of non-word characters, and a word
/// boundary at each edge that is a word character of a spaced script.
fn term_regex(term: &str) -> String {
    let words: Vec<String> = term.split_whitespace().map(regex::escape).collect();
    let body = words.join(r"\W+");
    let edge = |c: Option<char>| {
        c.is_some_and(|c| (c.is_alphanumeric() || c == '_') && !is_unspaced_script(c))
    };
    let start = if edge(term.chars().next()) { r"\b" } else { "" };
    let end = if edge(term.chars().next_back()) {
        r"\b"
    } else {
        ""
    };
    format!("(?:{start}{body}{end})")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(terms: &[&str], patterns: &[&str]) -> Blocklist {
        let terms: Vec<String> = terms.iter().map(|s| s.to_string()).collect();
        let patterns: Vec<String> = patterns.iter().map(|s| s.to_string()).collect();
        Blocklist::new(&terms, &patterns, false).unwrap()
    }

    #[test]
    fn whole_words_any_case_any_spacing() {
        let b = list(&["kill", "acme secret"], &[]);
        assert!(b.find_at("I will KILL it", 0).is_some());
        assert!(b.find_at("a new skill, a killer app", 0).is_none());
        assert!(b.find_at("the Acme\n  Secret plan", 0).is_some());
        assert!(b.find_at("the acme-secret plan", 0).is_some());
    }

    #[test]
    fn unicode_terms() {
        let b = list(&["straße", "机密"], &[]);
        assert!(b.find_at("DIE STRAßE IST LANG", 0).is_some());
        assert!(b.find_at("Die Straßenbahn fährt", 0).is_none());
        // No spaces in Chinese: the term matches inside a sentence.
        assert!(b.find_at("这是公司机密文件", 0).is_some());
    }

    #[test]
    fn patterns_and_positions() {
        let b = list(&[], &[r"\bsk-[a-z0-9]{20,}"]);
        let text = "key: sk-abcdefghijklmnopqrstuvwx end";
        assert_eq!(b.find_at(text, 0), Some(5..32));
        assert!(b.find_at(text, 10).is_none());
    }

    #[test]
    fn builtin_list_blocks_threats_but_not_ordinary_uses() {
        let b = Blocklist::new(&[], &[], true).unwrap();
        assert!(b
            .find_at("Honestly, you should kill yourself.", 0)
            .is_some());
        assert!(b.find_at("Du solltest sterben.", 0).is_some());
        assert!(b.find_at("你去死吧", 0).is_some());
        assert!(b
            .find_at("Run `kill -9 1234` to kill the process.", 0)
            .is_none());
        assert!(b.find_at("This cake is to die for.", 0).is_none());
    }

    #[test]
    fn bad_patterns_are_named() {
        let err = Blocklist::new(&[], &["ok".into(), "(x".into()], false).unwrap_err();
        assert!(err.to_string().contains("blocked_patterns[1]"), "{err}");
        let err = Blocklist::new(&[], &["a*".into()], false).unwrap_err();
        assert_eq!(err.kind(), "filter_empty_match");
    }
}
