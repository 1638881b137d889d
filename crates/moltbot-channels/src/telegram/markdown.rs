//! Common Markdown, as models write it, converted to Telegram's MarkdownV2.
//!
//! MarkdownV2 is strict: every reserved character outside an entity must be escaped, and one
//! unbalanced marker makes Telegram refuse the whole message. So the text is parsed the way
//! CommonMark parses it (code spans first, then links, then emphasis by delimiter runs and
//! their flanking rules) and every marker that was not recognised is written as an escaped
//! literal.
//!
//! | Markdown                         | MarkdownV2                                  |
//! |----------------------------------|---------------------------------------------|
//! | `**bold**`, `__bold__`           | `*bold*`                                    |
//! | `*italic*`, `_italic_`           | `_italic_`                                  |
//! | `~~strike~~`                     | `~strike~`                                  |
//! | `` `code` ``, fenced blocks      | kept; inside only `` ` `` and `\` escaped   |
//! | `[text](url)`, `![alt](url)`     | `[text](url)`; in the URL `)` and `\` escaped |
//! | `# Title` (any level)            | `*Title*`                                   |
//! | `- item`, `* item`, `+ item`     | `• item`                                    |
//! | `> quote`                        | `>quote` (a Telegram block quote)           |
//!
//! Blocks (fences, headings, bullets, quotes) are handled here, line by line; the inline
//! content of each line (code spans, links, emphasis) in `inline`. Emphasis never spans
//! lines, so a stray marker cannot swallow the rest of a message. Bare URLs are kept literal
//! (underscores in them are not emphasis); Telegram links them itself.

/// Characters MarkdownV2 reserves outside entities; `\` is added because a backslash before
/// any ASCII character is an escape there.
mod inline;

const RESERVED: &str = "_*[]()~`>#+-=|{}.!\\";

/// Convert common Markdown to MarkdownV2 that Telegram accepts.
pub fn to_markdown_v2(text: &str) -> String {
    let text = text.replace("\r\n", "\n");
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = String::with_capacity(text.len() + text.len() / 8 + 8);
    let mut i = 0;
    while i < lines.len() {
        if i > 0 {
            out.push('\n');
        }
        let line = lines[i];
        i += 1;
        if let Some(fence) = Fence::open(line) {
            let mut body = Vec::new();
            while i < lines.len() {
                let next = lines[i];
                i += 1;
                if fence.closed_by(next) {
                    break;
                }
                body.push(fence.dedent(next));
            }
            // An unclosed fence runs to the end of the text, as in CommonMark.
            write_pre(&mut out, fence.language, &body.join("\n"));
            continue;
        }
        write_line(&mut out, line, false);
    }
    out
}

/// Escape `text` so MarkdownV2 shows it literally, with no formatting.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 8);
    for c in text.chars() {
        push_escaped(&mut out, c);
    }
    out
}

fn push_escaped(out: &mut String, c: char) {
    if RESERVED.contains(c) {
        out.push('\\');
    }
    out.push(c);
}

/// Inside `code` and ```pre``` only the backtick and the backslash are special.
fn push_code_escaped(out: &mut String, text: &str) {
    for c in text.chars() {
        if c == '`' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
}

/// An opening code fence: three or more backticks or tildes, with an optional language.
struct Fence<'a> {
    marker: char,
    len: usize,
    indent: usize,
    language: &'a str,
}

impl<'a> Fence<'a> {
    fn open(line: &'a str) -> Option<Self> {
        let trimmed = line.trim_start_matches(' ');
        let indent = line.len() - trimmed.len();
        let marker = trimmed.chars().next().filter(|c| *c == '`' || *c == '~')?;
        let len = trimmed.chars().take_while(|c| *c == marker).count();
        if len < 3 {
            return None;
        }
        let info = trimmed[len..].trim();
        if marker == '`' && info.contains('`') {
            return None; // an inline code span such as ```a``` on one line
        }
        let word = info.split_whitespace().next().unwrap_or("");
        // Telegram reads the language up to a space or backtick; keep it to a safe alphabet.
        let safe = |c: char| c.is_ascii_alphanumeric() || "+-#._".contains(c);
        let language = if word.chars().all(safe) { word } else { "" };
        Some(Self {
            marker,
            len,
            indent,
            language,
        })
    }

    fn closed_by(&self, line: &str) -> bool {
        let trimmed = line.trim();
        let run = trimmed.chars().take_while(|c| *c == self.marker).count();
        run >= self.len && run == trimmed.chars().count()
    }

    /// Remove the fence's own indentation from a content line (fences inside list items).
    fn dedent<'l>(&self, line: &'l str) -> &'l str {
        let spaces = line.len() - line.trim_start_matches(' ').len();
        &line[spaces.min(self.indent)..]
    }
}

fn write_pre(out: &mut String, language: &str, body: &str) {
    out.push_str("```");
    out.push_str(language);
    out.push('\n');
    push_code_escaped(out, body);
    if !body.is_empty() {
        out.push('\n');
    }
    out.push_str("```");
}

/// One line outside code fences: a heading, a quote, a list item or a paragraph line.
fn write_line(out: &mut String, line: &str, in_quote: bool) {
    let trimmed = line.trim_start_matches([' ', '\t']);
    let indent = &line[..line.len() - trimmed.len()];

    if let Some(title) = heading(trimmed) {
        out.push('*');
        inline::write(out, title, true); // the whole line is bold already
        out.push('*');
        return;
    }
    // Telegram starts a quote only with `>` at the very beginning of a line.
    if !in_quote && indent.len() <= 3 {
        if let Some(rest) = trimmed.strip_prefix('>') {
            out.push('>');
            write_line(out, rest.strip_prefix(' ').unwrap_or(rest), true);
            return;
        }
    }
    if let Some(item) = ["- ", "* ", "+ "]
        .iter()
        .find_map(|bullet| trimmed.strip_prefix(bullet))
    {
        out.push_str(indent);
        out.push_str("• ");
        inline::write(out, item.trim_start(), false);
        return;
    }
    inline::write(out, line, false);
}

/// The text of an ATX heading (`# Title`, `## Title ##`), if `line` is one.
fn heading(line: &str) -> Option<&str> {
    let level = line.chars().take_while(|c| *c == '#').count();
    if !(1..=6).contains(&level) {
        return None;
    }
    let rest = &line[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None; // `#hashtag`
    }
    let mut title = rest.trim();
    // An optional closing sequence: `## Title ##`.
    let without_hashes = title.trim_end_matches('#');
    if without_hashes.is_empty() || without_hashes.ends_with([' ', '\t']) {
        title = without_hashes.trim_end();
    }
    (!title.is_empty()).then_some(title)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moltbot_fakes::telegram::parse_markdown_v2;

    fn md(s: &str) -> String {
        to_markdown_v2(s)
    }

    #[test]
    fn plain_text_escapes_every_reserved_character() {
        assert_eq!(md("1.5 + 2 = 3.5!"), r"1\.5 \+ 2 \= 3\.5\!");
        assert_eq!(
            md(r"a_b*c[d]e(f)g~h`i>j#k+l-m=n|o{p}q.r!s\t"),
            r"a\_b\*c\[d\]e\(f\)g\~h\`i\>j\#k\+l\-m\=n\|o\{p\}q\.r\!s\\t"
        );
        assert_eq!(escape("a.b"), r"a\.b");
    }

    #[test]
    fn emphasis_maps_to_telegram_markers() {
        assert_eq!(md("**bold** and __bold__"), "*bold* and *bold*");
        assert_eq!(md("*italic* and _italic_"), "_italic_ and _italic_");
        assert_eq!(md("~~gone~~"), "~gone~");
        assert_eq!(md("***both***"), "_*both*_");
        assert_eq!(md("**bold _italic_ bold**"), "*bold _italic_ bold*");
    }

    #[test]
    fn unbalanced_markers_are_literal() {
        assert_eq!(md("2 * 3 = 6"), r"2 \* 3 \= 6");
        assert_eq!(md("*not closed"), r"\*not closed");
        assert_eq!(md("**not closed*"), r"\*_not closed_");
        assert_eq!(md("~5 min"), r"\~5 min");
        assert_eq!(md("a ~~b"), r"a \~\~b");
        assert_eq!(md("snake_case_name"), r"snake\_case\_name");
        assert_eq!(md("***"), r"\*\*\*");
        assert_eq!(md("---"), r"\-\-\-");
    }

    #[test]
    fn nested_same_style_writes_one_marker() {
        assert_eq!(md("**a **b** c**"), "*a b c*");
        assert_eq!(md("# A **bold** title"), "*A bold title*");
    }

    #[test]
    fn adjacent_italics_do_not_form_an_underline() {
        // `_a__b_` would be read as underline by Telegram.
        assert_eq!(md("*a*_b_"), "_ab_");
    }

    #[test]
    fn code_keeps_its_content() {
        assert_eq!(md("run `a_b*c.d`"), "run `a_b*c.d`");
        assert_eq!(md(r"path `C:\dir\n`"), r"path `C:\\dir\\n`");
        assert_eq!(md("``a ` b``"), r"`a \` b`");
        assert_eq!(md("`unclosed"), r"\`unclosed");
        assert_eq!(md("**run `cargo test`**"), "*run `cargo test`*");
    }

    #[test]
    fn fenced_blocks_keep_language_and_escape_only_backticks_and_backslashes() {
        let text = "Try:\n```rust\nlet s = \"a\\n\"; // `x`\n```\nDone.";
        assert_eq!(
            md(text),
            "Try:\n```rust\nlet s = \"a\\\\n\"; // \\`x\\`\n```\nDone\\."
        );
        assert_eq!(md("```\nplain.\n```"), "```\nplain.\n```");
        assert_eq!(md("```python\nx = 1"), "```python\nx = 1\n```");
        assert_eq!(md("  ```\n  indented\n  ```"), "```\nindented\n```");
        assert_eq!(md("~~~\nt\n~~~"), "```\nt\n```");
    }

    #[test]
    fn links_escape_only_parenthesis_and_backslash_in_the_url() {
        assert_eq!(
            md("see [the docs](https://example.com/a_b?x=1)."),
            r"see [the docs](https://example.com/a_b?x=1)\."
        );
        assert_eq!(
            md("[Rust](https://en.wikipedia.org/wiki/Rust_(programming_language))"),
            r"[Rust](https://en.wikipedia.org/wiki/Rust_(programming_language\))"
        );
        assert_eq!(
            md("[**bold** link](http://x.io \"title\")"),
            "[*bold* link](http://x.io)"
        );
        assert_eq!(
            md("![a cat](http://c.at/1.png)"),
            "[a cat](http://c.at/1.png)"
        );
        assert_eq!(md("[not a link] (x)"), r"\[not a link\] \(x\)");
        assert_eq!(md("[a](<http://x y>)"), "[a](http://x%20y)");
    }

    #[test]
    fn bare_urls_stay_literal() {
        assert_eq!(
            md("go to https://x.io/a_b_c_d."),
            r"go to https://x\.io/a\_b\_c\_d\."
        );
        assert_eq!(md("(https://x.io/p)"), r"\(https://x\.io/p\)");
    }

    #[test]
    fn blocks_become_telegram_blocks() {
        assert_eq!(
            md("## Plan\n- one\n* two\n  + three"),
            "*Plan*\n• one\n• two\n  • three"
        );
        assert_eq!(md("#hashtag"), r"\#hashtag");
        assert_eq!(md("1. first"), r"1\. first");
        assert_eq!(md("> quoted *text*\n> more"), ">quoted _text_\n>more");
        assert_eq!(md("# Title #"), "*Title*");
    }

    #[test]
    fn markdown_escapes_are_honoured() {
        assert_eq!(md(r"\*not italic\*"), r"\*not italic\*");
        assert_eq!(md(r"back\slash"), r"back\\slash");
    }

    /// A tiny deterministic generator: property tests without a dependency.
    struct XorShift(u64);

    impl XorShift {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    fn random_markdown(rng: &mut XorShift, pieces: &[&str]) -> String {
        let len = rng.below(40);
        (0..len).map(|_| pieces[rng.below(pieces.len())]).collect()
    }

    const PIECES: &[&str] = &[
        "*",
        "**",
        "***",
        "_",
        "__",
        "~",
        "~~",
        "`",
        "``",
        "```",
        "```rust\n",
        "[",
        "]",
        "(",
        ")",
        "](",
        "](http://x.io/",
        "\\",
        ".",
        "!",
        "![",
        "-",
        "+",
        "#",
        "# ",
        "- ",
        "* ",
        "> ",
        ">",
        "|",
        "||",
        "{",
        "}",
        "=",
        " ",
        " ",
        "\n",
        "\n",
        "a",
        "b",
        "word",
        "é",
        "🎉",
        "你好",
        "https://x.io/a_b(c)",
        "1. ",
        "\r\n",
        "\t",
    ];

    /// Whatever the model writes, Telegram's parser (the fake's faithful port of it)
    /// accepts the conversion.
    #[test]
    fn any_input_converts_to_markdown_telegram_accepts() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        for _ in 0..20_000 {
            let input = random_markdown(&mut rng, PIECES);
            let output = md(&input);
            if let Err(e) = parse_markdown_v2(&output) {
                panic!("{input:?} → {output:?} is refused: {e}");
            }
        }
    }

    /// Without links and code fences (whose URL and language are not shown), every letter
    /// the model wrote is shown, in order.
    #[test]
    fn conversion_loses_no_letters() {
        let pieces: Vec<&str> = PIECES
            .iter()
            .copied()
            .filter(|p| !p.contains(['[', '`']))
            .collect();
        let letters = |s: &str| {
            s.chars()
                .filter(|c| c.is_alphanumeric())
                .collect::<String>()
        };
        let mut rng = XorShift(42);
        for _ in 0..20_000 {
            let input = random_markdown(&mut rng, &pieces);
            if input.contains("~~~") {
                continue; // a tilde fence: its info string is the (hidden) language
            }
            let output = md(&input);
            let shown = parse_markdown_v2(&output)
                .map(|p| p.text)
                .unwrap_or_default();
            assert_eq!(letters(&shown), letters(&input), "{input:?} → {output:?}");
        }
    }

    #[test]
    fn escaped_text_shows_exactly_the_input() {
        let mut rng = XorShift(7);
        for _ in 0..5_000 {
            let input = random_markdown(&mut rng, PIECES);
            let shown = parse_markdown_v2(&escape(&input)).map(|p| p.text);
            assert_eq!(shown.as_deref(), Ok(input.as_str()));
        }
    }

    #[test]
    fn telegram_sees_the_intended_entities() {
        let parsed = parse_markdown_v2(&md("**Note:** run `ls -a` then *relax*.")).unwrap();
        assert_eq!(parsed.text, "Note: run ls -a then relax.");
        let kinds: Vec<&str> = parsed.entities.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, ["bold", "code", "italic"]);
    }

    #[test]
    fn unicode_passes_through() {
        assert_eq!(md("**你好** 🎉 *día*!"), r"*你好* 🎉 _día_\!");
        assert_eq!(md("🎉**x**🎉"), "🎉*x*🎉");
    }
}
