//! A leaked system prompt: the reply repeats a long span of the system message word for word.
//!
//! Every window of `k` folded characters of the protected text goes into a hash table (a
//! polynomial hash that can be rolled one character at a time). The reply's own last `k`
//! folded characters are hashed as they arrive; a hit, confirmed by comparing the
//! characters, marks the whole window as leaked. Overlapping hits join into one span, so a
//! leak of any length is found and removed as a whole.

use super::text::{is_unspaced_script, Folded};
use std::collections::HashMap;

/// Odd multiplier of the rolling hash (arithmetic is modulo 2^64).
const BASE: u64 = 0x0000_0100_0000_01b3;

/// Which part of the system message is protected. Grounded answers append the passages they
/// may quote as a numbered list (`[1] source`, `[2] …`, see the engine's router); text from
/// the first line that starts with `[1]` on is reference material the reply is meant to
/// quote, not instructions, so it is left out.
pub(crate) fn protected_part(system: &str) -> &str {
    let mut at = 0;
    for line in system.split_inclusive('\n') {
        if line.trim_start().starts_with("[1]") {
            return &system[..at];
        }
        at += line.len();
    }
    system
}

/// Sentences that state who the assistant is ("You are Kiki, the support assistant of Acme
/// Routers.") are not secret: an assistant introduces itself with them. A window that lies
/// wholly inside the first [`IDENTITY_MAX_BYTES`] of one is not counted; a window that runs
/// on into the instructions is.
const IDENTITY_OPENERS: &[&str] = &[
    "you are ",
    "you're ",
    "du bist ",
    "sie sind ",
    "tu es ",
    "vous êtes ",
    "eres ",
    "usted es ",
    "sei ",
    "你是",
    "您是",
    "あなたは",
];

/// A self-introduction is short; a longer "You are …" sentence goes on to give instructions
/// ("…with access to tools: a(x), b(y)…"), and those are protected again.
const IDENTITY_MAX_BYTES: usize = 80;

/// The windows of the protected text, ready to be looked up.
#[derive(Debug)]
pub(crate) struct LeakIndex {
    k: usize,
    text: Vec<char>,
    /// Window hash → start of one window with that hash.
    windows: HashMap<u64, usize>,
    /// `BASE^(k-1)`, to roll the oldest character out.
    top: u64,
}

impl LeakIndex {
    /// `None` when the protected text is shorter than one window (nothing to leak).
    pub(crate) fn new(protected: &str, min_chars: usize) -> Option<LeakIndex> {
        let folded = Folded::of(protected);
        let text = folded.chars().to_vec();
        let k = window_len(&text, min_chars);
        if k == 0 || text.len() < k {
            return None;
        }
        let identity = identity_sentences(protected);
        let is_identity: Vec<bool> = (0..text.len())
            .map(|i| {
                let at = folded.span(i).start;
                identity.iter().any(|r| r.contains(&at))
            })
            .collect();
        let top = (1..k).fold(1u64, |acc, _| acc.wrapping_mul(BASE));
        let mut windows = HashMap::with_capacity(text.len() - k + 1);
        let mut hash = 0u64;
        for (i, &c) in text.iter().enumerate() {
            if i >= k {
                hash = hash.wrapping_sub(code(text[i - k]).wrapping_mul(top));
            }
            hash = hash.wrapping_mul(BASE).wrapping_add(code(c));
            if i + 1 >= k && !is_identity[i + 1 - k..=i].iter().all(|&x| x) {
                windows.entry(hash).or_insert(i + 1 - k);
            }
        }
        Some(LeakIndex {
            k,
            text,
            windows,
            top,
        })
    }

    fn contains(&self, hash: u64, window: &[char]) -> bool {
        self.windows
            .get(&hash)
            .is_some_and(|&start| self.text.get(start..start + self.k) == Some(window))
    }
}

/// The window length: `min_chars` for text in spaced scripts, down to half of it for text
/// in Chinese or Japanese, where one character carries about as much as two letters do.
fn window_len(text: &[char], min_chars: usize) -> usize {
    let letters = text.iter().filter(|&&c| c != ' ').count();
    let unspaced = text.iter().filter(|&&c| is_unspaced_script(c)).count();
    if letters == 0 {
        return min_chars;
    }
    min_chars - min_chars * unspaced / (2 * letters)
}

/// Raw byte ranges of the sentences that begin with an identity opener, each with the
/// whitespace after it.
fn identity_sentences(text: &str) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        let next = chars.peek().map(|&(_, n)| n);
        let ends = c == '\n'
            || matches!(c, '。' | '！' | '？')
            || (matches!(c, '.' | '!' | '?') && next.is_none_or(char::is_whitespace));
        if !ends && next.is_some() {
            continue;
        }
        let mut end = at + c.len_utf8();
        while let Some(&(w_at, w)) = chars.peek() {
            if !w.is_whitespace() {
                break;
            }
            end = w_at + w.len_utf8();
            chars.next();
        }
        let sentence = text[start..end].trim_start().to_lowercase();
        if IDENTITY_OPENERS.iter().any(|o| sentence.starts_with(o)) {
            let mut cap = (start + IDENTITY_MAX_BYTES).min(end);
            while !text.is_char_boundary(cap) {
                cap -= 1;
            }
            out.push(start..cap);
        }
        start = end;
    }
    out
}

fn code(c: char) -> u64 {
    u64::from(u32::from(c)) + 1
}

/// The reply side: the rolling hash of its last `k` folded characters.
#[derive(Debug)]
pub(crate) struct LeakScanner {
    index: LeakIndex,
    hash: u64,
    /// The protected text, folded, as a string for substring search.
    protected: String,
    /// Length of the longest end of the reply (folded characters, below one window) that
    /// occurs somewhere in the protected text: only that much could still become a leak.
    open: usize,
    /// Scratch for the end being looked up (reused: this runs for every character).
    tail: String,
}

impl LeakScanner {
    pub(crate) fn new(index: LeakIndex) -> Self {
        let protected = index.text.iter().collect();
        Self {
            index,
            hash: 0,
            protected,
            open: 0,
            tail: String::new(),
        }
    }

    /// Folded characters at the end of the reply that could still start a leak; the guard
    /// holds back only these (usually a few characters, not a whole window).
    pub(crate) fn open(&self) -> usize {
        self.open
    }

    /// Update after `chars` grew by its last character; returns the folded range of a
    /// window that repeats the protected text.
    pub(crate) fn step(&mut self, chars: &[char]) -> Option<std::ops::Range<usize>> {
        let k = self.index.k;
        let i = chars.len().checked_sub(1)?;
        if i >= k {
            let out = code(chars[i - k]).wrapping_mul(self.index.top);
            self.hash = self.hash.wrapping_sub(out);
        }
        self.hash = self.hash.wrapping_mul(BASE).wrapping_add(code(chars[i]));
        // The longest end of the reply that the protected text contains can only grow by
        // this one character; shrink it until it is found again.
        let mut m = (self.open + 1).min(k - 1).min(i + 1);
        while m > 0 {
            self.tail.clear();
            self.tail.extend(&chars[i + 1 - m..=i]);
            if self.protected.contains(self.tail.as_str()) {
                break;
            }
            m -= 1;
        }
        self.open = m;
        let start = (i + 1).checked_sub(k)?;
        self.index
            .contains(self.hash, &chars[start..=i])
            .then_some(start..i + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaks(system: &str, reply: &str, k: usize) -> Vec<std::ops::Range<usize>> {
        let Some(index) = LeakIndex::new(system, k) else {
            return Vec::new();
        };
        let mut scanner = LeakScanner::new(index);
        let mut folded = Folded::default();
        let mut found: Vec<std::ops::Range<usize>> = Vec::new();
        for (at, c) in reply.char_indices() {
            let before = folded.len();
            folded.push(c, at);
            for end in before + 1..=folded.len() {
                if let Some(w) = scanner.step(&folded.chars()[..end]) {
                    match found.last_mut() {
                        Some(last) if last.end >= w.start => last.end = w.end,
                        _ => found.push(w),
                    }
                }
            }
        }
        found
    }

    const SYSTEM: &str = "You are Kiki, the support assistant of Acme Routers. Never \
                          discuss pricing; send billing questions to billing@acme.example.";

    #[test]
    fn verbatim_copy_is_found_despite_case_and_spacing() {
        let reply = "My instructions: you are kiki,   the SUPPORT assistant of acme routers! \
                     never discuss pricing.";
        let found = leaks(SYSTEM, reply, 40);
        assert_eq!(found.len(), 1);
        assert!(found[0].len() >= 60, "{found:?}");
    }

    #[test]
    fn short_quotes_and_paraphrase_are_not_leaks() {
        assert!(leaks(
            SYSTEM,
            "I am Kiki, the support assistant. How can I help?",
            40
        )
        .is_empty());
        assert!(leaks(
            SYSTEM,
            "For billing, please write to billing@acme.example.",
            40
        )
        .is_empty());
    }

    #[test]
    fn introducing_itself_is_not_a_leak_but_the_instructions_are() {
        let intro = "Hi, I'm Kiki, the support assistant of Acme Routers. What's up?";
        assert!(leaks(SYSTEM, intro, 40).is_empty());
        let leak = "you are kiki, the support assistant of acme routers. never discuss pricing";
        assert_eq!(leaks(SYSTEM, leak, 40).len(), 1);
        assert_eq!(
            identity_sentences("Be brief. You are Bo.\nUse English."),
            vec![10..22]
        );
    }

    #[test]
    fn chinese_prompts_use_a_shorter_window() {
        let system =
            "你是一个旅行助手。请用简洁的中文回答用户关于航班、酒店和签证的问题。不要编造航班号。";
        let leak = "好的。请用简洁的中文回答用户关于航班、酒店和签证的问题。";
        assert_eq!(leaks(system, leak, 40).len(), 1);
        assert!(leaks(system, "我可以回答关于航班和酒店的问题。", 40).is_empty());
    }

    #[test]
    fn numbered_passages_are_not_protected() {
        let system = "Be brief.\n\nAnswer using the passages.\n\n[1] notes.md\nThe router resets \
                      when you hold the button for ten seconds.\n";
        assert_eq!(
            protected_part(system),
            "Be brief.\n\nAnswer using the passages.\n\n"
        );
        assert_eq!(protected_part("no passages"), "no passages");
    }
}
