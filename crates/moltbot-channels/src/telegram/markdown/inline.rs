//! Inline Markdown: code spans, links, bare URLs and emphasis, parsed as CommonMark does
//! (delimiter runs, flanking rules, the rule of three) and written as MarkdownV2 entities
//! that Telegram nests correctly.

use super::{push_code_escaped, push_escaped};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    Bold = 0,
    Italic = 1,
    Strike = 2,
}

impl Style {
    fn marker(self) -> char {
        match self {
            Style::Bold => '*',
            Style::Italic => '_',
            Style::Strike => '~',
        }
    }
}

#[derive(Debug)]
enum Item {
    /// Shown as is (escaped on output).
    Text(String),
    Code(String),
    Link {
        text: Vec<Item>,
        url: String,
    },
    Delim(Delim),
}

/// A run of `*`, `_` or `~`, and what emphasis matching made of it.
#[derive(Debug)]
struct Delim {
    ch: char,
    /// Length of the run as written (the "rule of three" looks at it).
    len: usize,
    /// Characters not used by a match yet; written as literals in the end.
    left: usize,
    can_open: bool,
    can_close: bool,
    /// Styles this run closes, innermost first.
    closes: Vec<Style>,
    /// Styles this run opens, innermost first.
    opens: Vec<Style>,
}

/// Write one line's inline content; `inside_bold` when the whole line is bold already (a
/// heading), so inner bold markers are left out.
pub(super) fn write(out: &mut String, text: &str, inside_bold: bool) {
    let items = parse_inline(text, false);
    let mut w = Writer::new(out);
    if inside_bold {
        w.active[Style::Bold as usize] = 1;
    }
    w.items(&items);
}

fn parse_inline(text: &str, in_link: bool) -> Vec<Item> {
    let mut items = scan(text, in_link);
    match_emphasis(&mut items);
    items
}

/// Whether `c` counts as punctuation for the flanking rules (CommonMark counts Unicode
/// punctuation and symbols; emoji are symbols).
fn is_punct(c: char) -> bool {
    !c.is_alphanumeric() && !c.is_whitespace()
}

/// Split a line into literal text, code spans, links and delimiter runs.
fn scan(text: &str, in_link: bool) -> Vec<Item> {
    let chars: Vec<char> = text.chars().collect();
    let mut items = Vec::new();
    let mut literal = String::new();
    let mut k = 0;
    while k < chars.len() {
        let c = chars[k];
        match c {
            '\\' => match chars.get(k + 1) {
                Some(&next) if next.is_ascii_punctuation() => {
                    literal.push(next);
                    k += 2;
                }
                _ => {
                    literal.push('\\');
                    k += 1;
                }
            },
            '`' => {
                let run = run_len(&chars, k, '`');
                match find_code_end(&chars, k + run, run) {
                    Some(end) => {
                        let content: String = chars[k + run..end].iter().collect();
                        flush(&mut items, &mut literal);
                        items.push(Item::Code(trim_code_span(content)));
                        k = end + run;
                    }
                    None => {
                        literal.extend(&chars[k..k + run]);
                        k += run;
                    }
                }
            }
            '[' | '!' if !in_link => {
                let start = if c == '!' { k + 1 } else { k };
                let link = (chars.get(start) == Some(&'['))
                    .then(|| parse_link(&chars, start))
                    .flatten();
                match link {
                    Some((label, url, end)) => {
                        flush(&mut items, &mut literal);
                        let text = if label.trim().is_empty() {
                            vec![Item::Text(url.clone())]
                        } else {
                            parse_inline(&label, true)
                        };
                        items.push(Item::Link { text, url });
                        k = end;
                    }
                    None => {
                        literal.push(c);
                        k += 1;
                    }
                }
            }
            '*' | '_' | '~' => {
                let run = run_len(&chars, k, c);
                let before = k.checked_sub(1).map(|i| chars[i]);
                let after = chars.get(k + run).copied();
                flush(&mut items, &mut literal);
                items.push(Item::Delim(delim(c, run, before, after)));
                k += run;
            }
            'h' | 'w' if starts_url(&chars, k) => {
                let end = url_end(&chars, k);
                literal.extend(&chars[k..end]);
                k = end;
            }
            _ => {
                literal.push(c);
                k += 1;
            }
        }
    }
    flush(&mut items, &mut literal);
    items
}

fn flush(items: &mut Vec<Item>, literal: &mut String) {
    if !literal.is_empty() {
        items.push(Item::Text(std::mem::take(literal)));
    }
}

fn run_len(chars: &[char], at: usize, c: char) -> usize {
    chars[at..].iter().take_while(|x| **x == c).count()
}

/// The start of a closing backtick run of exactly `run` backticks, searching from `from`.
fn find_code_end(chars: &[char], from: usize, run: usize) -> Option<usize> {
    let mut i = from;
    while i < chars.len() {
        if chars[i] == '`' {
            let n = run_len(chars, i, '`');
            if n == run {
                return Some(i);
            }
            i += n;
        } else {
            i += 1;
        }
    }
    None
}

/// CommonMark strips one space on each side of a code span that has both (`` ` a ` ``).
fn trim_code_span(content: String) -> String {
    let stripped = content.len() >= 2
        && content.starts_with(' ')
        && content.ends_with(' ')
        && !content.trim().is_empty();
    if stripped {
        content[1..content.len() - 1].to_string()
    } else {
        content
    }
}

/// `[label](destination "title")` starting at `chars[open]`: label, URL (unescaped) and the
/// index just past the closing parenthesis.
fn parse_link(chars: &[char], open: usize) -> Option<(String, String, usize)> {
    // The label: brackets nest; escapes and code spans cannot close it.
    let mut depth = 0usize;
    let mut i = open;
    let close = loop {
        match chars.get(i)? {
            '\\' => i += 1,
            '`' => {
                let run = run_len(chars, i, '`');
                if let Some(end) = find_code_end(chars, i + run, run) {
                    i = end + run - 1;
                } else {
                    i += run - 1;
                }
            }
            '[' => depth += 1,
            ']' => {
                depth -= 1;
                if depth == 0 {
                    break i;
                }
            }
            _ => {}
        }
        i += 1;
    };
    if chars.get(close + 1) != Some(&'(') {
        return None;
    }
    let mut i = close + 2;
    while chars.get(i) == Some(&' ') {
        i += 1;
    }
    let mut url = String::new();
    if chars.get(i) == Some(&'<') {
        i += 1;
        loop {
            match *chars.get(i)? {
                '>' => break,
                '\n' | '<' => return None,
                c => url.push(c),
            }
            i += 1;
        }
        i += 1;
    } else {
        // Parentheses may nest in a URL (`…/Rust_(programming_language)`).
        let mut parens = 0usize;
        while let Some(&c) = chars.get(i) {
            match c {
                '\\' if chars.get(i + 1).is_some_and(|n| n.is_ascii_punctuation()) => {
                    url.push(chars[i + 1]);
                    i += 1;
                }
                '(' => {
                    parens += 1;
                    url.push(c);
                }
                ')' if parens == 0 => break,
                ')' => {
                    parens -= 1;
                    url.push(c);
                }
                c if c.is_whitespace() || c.is_control() => break,
                c => url.push(c),
            }
            i += 1;
        }
    }
    // An optional title, which Telegram has no place for.
    while chars.get(i) == Some(&' ') {
        i += 1;
    }
    if let Some(&q) = chars.get(i).filter(|c| matches!(c, '"' | '\'' | '(')) {
        let end_quote = if q == '(' { ')' } else { q };
        i += 1;
        while *chars.get(i)? != end_quote {
            i += 1;
        }
        i += 1;
        while chars.get(i) == Some(&' ') {
            i += 1;
        }
    }
    if chars.get(i) != Some(&')') || url.is_empty() {
        return None;
    }
    let label = chars[open + 1..close].iter().collect();
    Some((label, url, i + 1))
}

/// A bare `http://`, `https://` or `www.` URL starting at `at`, at the start of a word.
fn starts_url(chars: &[char], at: usize) -> bool {
    if at > 0 && chars[at - 1].is_alphanumeric() {
        return false;
    }
    let rest = || chars[at..].iter().take(8).collect::<String>();
    let rest = rest();
    rest.starts_with("http://") || rest.starts_with("https://") || rest.starts_with("www.")
}

/// Where a bare URL ends: at whitespace, without trailing punctuation and without an
/// unbalanced closing parenthesis (GFM's extended autolink rules).
fn url_end(chars: &[char], start: usize) -> usize {
    let mut end = start;
    while end < chars.len() && !chars[end].is_whitespace() && chars[end] != '<' {
        end += 1;
    }
    loop {
        let Some(&last) = chars[start..end].last() else {
            return end;
        };
        let unbalanced_paren = last == ')' && {
            let url = &chars[start..end];
            let open = url.iter().filter(|c| **c == '(').count();
            let close = url.iter().filter(|c| **c == ')').count();
            close > open
        };
        if "?!.,:;*_~'\"".contains(last) || unbalanced_paren {
            end -= 1;
        } else {
            return end;
        }
    }
}

fn delim(ch: char, len: usize, before: Option<char>, after: Option<char>) -> Delim {
    // The start and the end of the line count as whitespace.
    let before_ws = before.is_none_or(char::is_whitespace);
    let after_ws = after.is_none_or(char::is_whitespace);
    let before_punct = before.is_some_and(is_punct);
    let after_punct = after.is_some_and(is_punct);
    let left_flanking = !after_ws && (!after_punct || before_ws || before_punct);
    let right_flanking = !before_ws && (!before_punct || after_ws || after_punct);
    let (can_open, can_close) = match ch {
        // `_` inside a word is never emphasis (`snake_case_name`).
        '_' => (
            left_flanking && (!right_flanking || before_punct),
            right_flanking && (!left_flanking || after_punct),
        ),
        // Only `~~` strikes through; a single `~` usually means "about" (`~5 min`).
        '~' if len != 2 => (false, false),
        _ => (left_flanking, right_flanking),
    };
    Delim {
        ch,
        len,
        left: len,
        can_open,
        can_close,
        closes: Vec::new(),
        opens: Vec::new(),
    }
}

/// CommonMark's "process emphasis": pair closers with the nearest compatible opener.
fn match_emphasis(items: &mut [Item]) {
    for closer in 0..items.len() {
        while let Item::Delim(c) = &items[closer] {
            if !c.can_close || c.left == 0 {
                break;
            }
            let (ch, c_len, c_left, c_both) = (c.ch, c.len, c.left, c.can_open);
            let opener = (0..closer).rev().find(|&j| match &items[j] {
                Item::Delim(o) => {
                    o.ch == ch
                        && o.can_open
                        && o.left > 0
                        && (ch != '~' || (o.left == 2 && c_left == 2))
                        && !breaks_rule_of_three(o, c_len, c_both)
                }
                _ => false,
            });
            let Some(opener) = opener else {
                break;
            };
            let (style, used) = match ch {
                '~' => (Style::Strike, 2),
                _ => {
                    let o_left = match &items[opener] {
                        Item::Delim(o) => o.left,
                        _ => 0,
                    };
                    if o_left >= 2 && c_left >= 2 {
                        (Style::Bold, 2)
                    } else {
                        (Style::Italic, 1)
                    }
                }
            };
            if let Item::Delim(o) = &mut items[opener] {
                o.left -= used;
                o.opens.push(style);
            }
            if let Item::Delim(c) = &mut items[closer] {
                c.left -= used;
                c.closes.push(style);
            }
            // Runs between the pair can no longer match anything: they stay literal.
            for item in &mut items[opener + 1..closer] {
                if let Item::Delim(d) = item {
                    d.can_open = false;
                    d.can_close = false;
                }
            }
        }
    }
}

/// "If one of the delimiters can both open and close emphasis, then the sum of the lengths
/// of the delimiter runs containing the opening and closing delimiters must not be a
/// multiple of 3 unless both lengths are multiples of 3."
#[expect(
    clippy::manual_is_multiple_of,
    reason = "the workspace's rust-version is 1.85; `is_multiple_of` needs 1.87"
)]
fn breaks_rule_of_three(opener: &Delim, closer_len: usize, closer_both: bool) -> bool {
    let either_both = closer_both || (opener.can_open && opener.can_close);
    either_both
        && (opener.len + closer_len) % 3 == 0
        && !(opener.len % 3 == 0 && closer_len % 3 == 0)
}

/// Writes items as MarkdownV2, keeping entities well nested.
struct Writer<'o> {
    out: &'o mut String,
    /// How many times each style is open; only the outermost writes a marker (Telegram has
    /// no bold-inside-bold: a second `*` would end the first).
    active: [u32; 3],
    /// `out.len()` right after an italic closing `_`. An italic opening there would make
    /// `__`, which Telegram reads as underline, so the two italics are joined instead.
    italic_closed_at: Option<usize>,
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut String) -> Self {
        Self {
            out,
            active: [0; 3],
            italic_closed_at: None,
        }
    }

    fn items(&mut self, items: &[Item]) {
        for item in items {
            match item {
                Item::Text(t) => self.literal(t),
                Item::Code(code) => {
                    self.out.push('`');
                    push_code_escaped(self.out, code);
                    self.out.push('`');
                }
                Item::Link { text, url } => {
                    self.out.push('[');
                    self.items(text);
                    self.out.push_str("](");
                    for c in url.chars() {
                        match c {
                            ')' | '\\' => {
                                self.out.push('\\');
                                self.out.push(c);
                            }
                            ' ' => self.out.push_str("%20"),
                            c => self.out.push(c),
                        }
                    }
                    self.out.push(')');
                }
                Item::Delim(d) => {
                    for style in &d.closes {
                        self.close(*style);
                    }
                    for _ in 0..d.left {
                        push_escaped(self.out, d.ch);
                    }
                    // Opens were matched innermost first; the outermost is written first.
                    for style in d.opens.iter().rev() {
                        self.open(*style);
                    }
                }
            }
        }
    }

    fn literal(&mut self, text: &str) {
        for c in text.chars() {
            push_escaped(self.out, c);
        }
    }

    fn open(&mut self, style: Style) {
        let count = &mut self.active[style as usize];
        *count += 1;
        if *count > 1 {
            return;
        }
        if style == Style::Italic && self.italic_closed_at == Some(self.out.len()) {
            self.out.pop(); // `_a_` + `_b_` → `_ab_`
            self.italic_closed_at = None;
            return;
        }
        self.out.push(style.marker());
    }

    fn close(&mut self, style: Style) {
        let count = &mut self.active[style as usize];
        *count = count.saturating_sub(1);
        if *count > 0 {
            return;
        }
        self.out.push(style.marker());
        if style == Style::Italic {
            self.italic_closed_at = Some(self.out.len());
        }
    }
}
