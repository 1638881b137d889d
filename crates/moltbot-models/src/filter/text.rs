//! The folded form of a reply that the loop and leak checks compare: letters and digits
//! lowercased, every run of anything else (spaces, punctuation, markup) one space. Each
//! folded character remembers which bytes of the raw reply it stands for, so a finding in
//! the folded text can be cut out of the raw one.

use std::ops::Range;

/// The folded form of a text, built one raw character at a time.
#[derive(Debug, Default)]
pub(crate) struct Folded {
    chars: Vec<char>,
    /// For each folded character, the raw bytes it stands for (a separator: the whole run).
    spans: Vec<Range<usize>>,
    /// The last raw character was a separator, so the next one extends the same run.
    in_gap: bool,
}

impl Folded {
    /// Fold `text` at once (the system prompt).
    pub(crate) fn of(text: &str) -> Folded {
        let mut f = Folded::default();
        for (at, c) in text.char_indices() {
            f.push(c, at);
        }
        f
    }

    /// Add the raw character `c` found at byte `at`; returns how many folded characters were
    /// added (0 when it extends a separator run, several for a few lowercase expansions).
    pub(crate) fn push(&mut self, c: char, at: usize) -> usize {
        let end = at + c.len_utf8();
        if c.is_alphanumeric() {
            self.in_gap = false;
            let before = self.chars.len();
            for lower in c.to_lowercase() {
                self.chars.push(lower);
                self.spans.push(at..end);
            }
            return self.chars.len() - before;
        }
        if self.in_gap {
            if let Some(last) = self.spans.last_mut() {
                last.end = end;
            }
            return 0;
        }
        // Separators before the first letter are not represented: nothing can repeat or leak
        // in them.
        if self.chars.is_empty() {
            return 0;
        }
        self.in_gap = true;
        self.chars.push(' ');
        self.spans.push(at..end);
        1
    }

    pub(crate) fn chars(&self) -> &[char] {
        &self.chars
    }

    pub(crate) fn len(&self) -> usize {
        self.chars.len()
    }

    /// Raw bytes of folded character `i`.
    pub(crate) fn span(&self, i: usize) -> Range<usize> {
        self.spans[i].clone()
    }
}

/// Whether `c` carries meaning on its own: a letter or digit in any script, or an emoji
/// (a reply of just "👍" answers "thanks!"). Punctuation and whitespace do not.
pub(crate) fn is_content(c: char) -> bool {
    c.is_alphanumeric()
        || matches!(u32::from(c), 0x1F300..=0x1FAFF | 0x2600..=0x27BF | 0x1F000..=0x1F2FF)
}

/// Characters of `text` that carry meaning (see [`is_content`]).
pub(crate) fn content_chars(text: &str) -> usize {
    text.chars().filter(|&c| is_content(c)).count()
}

/// Scripts written without spaces between words, where a word boundary cannot be told from
/// the characters around a term (Chinese, Japanese, Thai, Lao, Khmer, Myanmar).
pub(crate) fn is_unspaced_script(c: char) -> bool {
    matches!(
        u32::from(c),
        0x0E00..=0x0EFF
            | 0x1000..=0x109F
            | 0x1780..=0x17FF
            | 0x3040..=0x30FF
            | 0x3400..=0x4DBF
            | 0x4E00..=0x9FFF
            | 0xF900..=0xFAFF
            | 0x20000..=0x2FA1F
    )
}

/// Ends a sentence (a loop is preferably cut right after one).
pub(crate) fn ends_sentence(c: char) -> bool {
    matches!(c, '.' | '!' | '?' | '。' | '！' | '？' | '…')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_whitespace_and_punctuation() {
        let f = Folded::of("  Hello,  WORLD!\n\nÜber 2 Äpfel…");
        let s: String = f.chars().iter().collect();
        assert_eq!(s, "hello world über 2 äpfel ");
        // The first separator stands for ",  " (bytes 7..10 of the raw text).
        assert_eq!(f.span(5), 7..10);
    }

    #[test]
    fn content_counts_letters_digits_and_emoji_only() {
        assert_eq!(content_chars("..!? \n"), 0);
        assert_eq!(content_chars("👍"), 1);
        assert_eq!(content_chars("好的。"), 2);
        assert_eq!(content_chars("a1-"), 2);
    }
}
