//! Telegram's MarkdownV2 parser, as the Bot API server runs it, so the fake refuses exactly
//! what Telegram refuses ("can't parse entities: …").
//!
//! This follows the rules of TDLib's `parse_markdown_v2`: a backslash escapes any ASCII
//! character; outside code every character of `_*[]()~`>#+-=|{}.!` is either an entity
//! marker or must be escaped; inside `code` and ```pre``` only the backtick is special;
//! `__` is underline and wins over `_`; `||` is a spoiler; `>` at the start of a line opens a
//! block quote; a link's URL ends at the first unescaped `)`; an entity left open is an
//! error; an empty entity is dropped.

/// An entity of the parsed text; offsets and lengths in UTF-16 code units, as the Bot API
/// reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageEntity {
    /// The Bot API type: `bold`, `italic`, `underline`, `strikethrough`, `spoiler`, `code`,
    /// `pre`, `text_link`, `custom_emoji`, `blockquote` or `expandable_blockquote`.
    pub kind: &'static str,
    pub offset: usize,
    pub length: usize,
    /// The link of a `text_link`.
    pub url: Option<String>,
    /// The language of a `pre`.
    pub language: Option<String>,
}

/// What a user sees: the text without markup, and its entities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedText {
    pub text: String,
    pub entities: Vec<MessageEntity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    PreCode,
    TextUrl,
    CustomEmoji,
    BlockQuote,
    ExpandableBlockQuote,
}

impl Kind {
    /// The name TDLib prints in "Can't find end of … entity".
    fn name(self) -> &'static str {
        match self {
            Kind::Bold => "Bold",
            Kind::Italic => "Italic",
            Kind::Underline => "Underline",
            Kind::Strikethrough => "Strikethrough",
            Kind::Spoiler => "Spoiler",
            Kind::Code => "Code",
            Kind::Pre => "Pre",
            Kind::PreCode => "PreCode",
            Kind::TextUrl => "TextUrl",
            Kind::CustomEmoji => "CustomEmoji",
            Kind::BlockQuote => "BlockQuote",
            Kind::ExpandableBlockQuote => "ExpandableBlockQuote",
        }
    }

    fn api_name(self) -> &'static str {
        match self {
            Kind::Bold => "bold",
            Kind::Italic => "italic",
            Kind::Underline => "underline",
            Kind::Strikethrough => "strikethrough",
            Kind::Spoiler => "spoiler",
            Kind::Code => "code",
            Kind::Pre | Kind::PreCode => "pre",
            Kind::TextUrl => "text_link",
            Kind::CustomEmoji => "custom_emoji",
            Kind::BlockQuote => "blockquote",
            Kind::ExpandableBlockQuote => "expandable_blockquote",
        }
    }
}

struct Open {
    kind: Kind,
    argument: String,
    /// UTF-16 offset in the result.
    offset: usize,
    /// Byte offset of the marker in the input (for error messages).
    byte: usize,
    /// Byte length of the result when the entity opened.
    begin: usize,
}

/// Parse `text` as MarkdownV2. `Err` holds TDLib's message, which the Bot API prefixes with
/// "Bad Request: can't parse entities: ".
pub fn parse_markdown_v2(text: &str) -> Result<ParsedText, String> {
    let b = text.as_bytes();
    let n = b.len();
    // TDLib reads past the end as NUL; so does this.
    let at = |i: usize| if i < n { b[i] } else { 0 };
    let reserved_error = |c: u8| {
        format!(
            "Character '{}' is reserved and must be escaped with the preceding '\\'",
            c as char
        )
    };
    let cant_find_end = |o: &Open| {
        format!(
            "Can't find end of {} entity at byte offset {}",
            o.kind.name(),
            o.byte
        )
    };

    let mut result: Vec<u8> = Vec::with_capacity(n);
    let mut utf16 = 0usize;
    let mut entities: Vec<MessageEntity> = Vec::new();
    let mut stack: Vec<Open> = Vec::new();
    let mut have_quote = false;
    let mut can_start_quote = true;
    let mut i = 0;
    while i < n {
        let c = b[i];
        if c == b'\\' && (1..=126).contains(&at(i + 1)) {
            i += 1;
            utf16 += 1;
            result.push(b[i]);
            if b[i] != b'\r' {
                can_start_quote = b[i] == b'\n';
            }
            i += 1;
            continue;
        }
        let in_code = matches!(
            stack.last().map(|o| o.kind),
            Some(Kind::Code | Kind::Pre | Kind::PreCode)
        );
        let reserved: &[u8] = if in_code {
            b"`"
        } else {
            b"_*[]()~`>#+-=|{}.!\n"
        };
        if !reserved.contains(&c) {
            if is_first_code_unit(c) {
                utf16 += if c >= 0xf0 { 2 } else { 1 };
                if c != b'\r' {
                    can_start_quote = false;
                }
            }
            result.push(c);
            i += 1;
            continue;
        }

        let is_end = match stack.last() {
            None => false,
            Some(_) if have_quote && c == b'\n' && (i + 1 == n || b[i + 1] != b'>') => true,
            Some(top) => match top.kind {
                Kind::Bold => c == b'*',
                Kind::Italic => c == b'_' && at(i + 1) != b'_',
                Kind::Code => c == b'`',
                Kind::Pre | Kind::PreCode => c == b'`' && at(i + 1) == b'`' && at(i + 2) == b'`',
                Kind::TextUrl | Kind::CustomEmoji => c == b']',
                Kind::Underline => c == b'_' && at(i + 1) == b'_',
                Kind::Strikethrough => c == b'~',
                Kind::Spoiler => c == b'|' && at(i + 1) == b'|',
                Kind::BlockQuote | Kind::ExpandableBlockQuote => false,
            },
        };

        if !is_end {
            let byte = i;
            let mut argument = String::new();
            let kind = match c {
                b'_' if at(i + 1) == b'_' => {
                    i += 1;
                    Kind::Underline
                }
                b'_' => Kind::Italic,
                b'*' => Kind::Bold,
                b'~' => Kind::Strikethrough,
                b'|' if at(i + 1) == b'|' => {
                    i += 1;
                    Kind::Spoiler
                }
                b'[' => Kind::TextUrl,
                b'`' if at(i + 1) == b'`' && at(i + 2) == b'`' => {
                    i += 3;
                    let mut kind = Kind::Pre;
                    let mut language_end = i;
                    while !is_space(at(language_end)) && at(language_end) != b'`' {
                        language_end += 1;
                    }
                    if i != language_end && language_end < n && at(language_end) != b'`' {
                        kind = Kind::PreCode;
                        argument = String::from_utf8_lossy(&b[i..language_end]).into_owned();
                        i = language_end;
                    }
                    // One newline right after the opening is not part of the code.
                    if at(i) == b'\n' || at(i) == b'\r' {
                        let pair = (at(i + 1) == b'\n' || at(i + 1) == b'\r') && at(i) != at(i + 1);
                        i += if pair { 2 } else { 1 };
                    }
                    // Compensates the `i += 1` below: `i` is already on the first content byte.
                    stack.push(Open {
                        kind,
                        argument,
                        offset: utf16,
                        byte,
                        begin: result.len(),
                    });
                    continue;
                }
                b'`' => Kind::Code,
                b'!' if at(i + 1) == b'[' => {
                    i += 1;
                    Kind::CustomEmoji
                }
                b'\n' => {
                    utf16 += 1;
                    result.push(b'\n');
                    can_start_quote = true;
                    i += 1;
                    continue;
                }
                b'>' if can_start_quote => {
                    i += 1;
                    if have_quote {
                        continue; // the `>` of a further line of the same quote
                    }
                    have_quote = true;
                    stack.push(Open {
                        kind: Kind::BlockQuote,
                        argument,
                        offset: utf16,
                        byte,
                        begin: result.len(),
                    });
                    continue;
                }
                other => return Err(reserved_error(other)),
            };
            stack.push(Open {
                kind,
                argument,
                offset: utf16,
                byte,
                begin: result.len(),
            });
            i += 1;
            continue;
        }

        // The end of the innermost entity.
        let Some(mut top) = stack.pop() else {
            unreachable!("is_end is only true with an open entity")
        };
        let mut kind = top.kind;
        if c == b'\n' && kind != Kind::BlockQuote {
            // Only `||` right before the newline may end a quote early: it makes the quote
            // expandable. Anything else still open at the end of a quote is an error.
            let spoiler_mark = kind == Kind::Spoiler
                && (top.byte + 2 == i || (top.byte + 3 == i && result.last() == Some(&b'\r')));
            if !spoiler_mark {
                return Err(cant_find_end(&top));
            }
            top = match stack.pop() {
                Some(quote) if quote.kind == Kind::BlockQuote => quote,
                Some(other) => return Err(cant_find_end(&other)),
                None => return Err(cant_find_end(&top)),
            };
            kind = Kind::ExpandableBlockQuote;
        }
        let mut argument = std::mem::take(&mut top.argument);
        let mut url = None;
        let mut skip = utf16 == top.offset;
        match kind {
            Kind::Bold | Kind::Italic | Kind::Code | Kind::Strikethrough => {}
            Kind::Underline | Kind::Spoiler => i += 1,
            Kind::Pre | Kind::PreCode => i += 2,
            Kind::TextUrl => {
                let link = if at(i + 1) != b'(' {
                    // `[text]` alone: the text is the URL.
                    String::from_utf8_lossy(&result[top.begin..]).into_owned()
                } else {
                    i += 2;
                    let begin = i;
                    let link = read_url(b, &mut i);
                    if at(i) != b')' {
                        return Err(format!("Can't find end of a URL at byte offset {begin}"));
                    }
                    link
                };
                if is_acceptable_url(&link) {
                    url = Some(link);
                } else {
                    skip = true;
                }
            }
            Kind::CustomEmoji => {
                if at(i + 1) != b'(' {
                    return Err("Custom emoji entity must contain a tg://emoji URL".into());
                }
                i += 2;
                let begin = i;
                let link = read_url(b, &mut i);
                if at(i) != b')' {
                    return Err(format!(
                        "Can't find end of a custom emoji URL at byte offset {begin}"
                    ));
                }
                let id = link.strip_prefix("tg://emoji?id=").unwrap_or("");
                if id.is_empty() || !id.bytes().all(|d| d.is_ascii_digit()) {
                    return Err("Custom emoji URL must have an emoji identifier".into());
                }
                argument = id.to_string();
            }
            Kind::BlockQuote | Kind::ExpandableBlockQuote => {
                have_quote = false;
                result.push(b[i]);
                can_start_quote = true;
                utf16 += 1;
                skip = false;
            }
        }
        if !skip {
            entities.push(MessageEntity {
                kind: kind.api_name(),
                offset: top.offset,
                length: utf16 - top.offset,
                url,
                language: (kind == Kind::PreCode).then_some(argument),
            });
        }
        i += 1;
    }

    if have_quote {
        let mut kind = Kind::BlockQuote;
        if stack
            .last()
            .is_some_and(|o| o.kind == Kind::Spoiler && o.byte + 2 == n)
        {
            stack.pop();
            kind = Kind::ExpandableBlockQuote;
        }
        if stack.last().is_some_and(|o| o.kind == Kind::BlockQuote) {
            if let Some(quote) = stack.pop() {
                if utf16 != quote.offset {
                    entities.push(MessageEntity {
                        kind: kind.api_name(),
                        offset: quote.offset,
                        length: utf16 - quote.offset,
                        url: None,
                        language: None,
                    });
                }
            }
        }
    }
    if let Some(open) = stack.last() {
        return Err(cant_find_end(open));
    }
    entities.sort_by_key(|e| (e.offset, std::cmp::Reverse(e.length)));
    Ok(ParsedText {
        // Escapes and markers are ASCII, so removing them keeps the UTF-8 valid.
        text: String::from_utf8_lossy(&result).into_owned(),
        entities,
    })
}

/// A URL inside `(…)`: a backslash escapes any ASCII character; ends before the first
/// unescaped `)` (or at the end of the text).
fn read_url(b: &[u8], i: &mut usize) -> String {
    let mut url = Vec::new();
    while *i < b.len() && b[*i] != b')' {
        if b[*i] == b'\\' && b.get(*i + 1).is_some_and(|x| (1..=126).contains(x)) {
            url.push(b[*i + 1]);
            *i += 2;
            continue;
        }
        url.push(b[*i]);
        *i += 1;
    }
    String::from_utf8_lossy(&url).into_owned()
}

/// Telegram drops (without an error) a link whose URL it does not accept.
fn is_acceptable_url(url: &str) -> bool {
    !url.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control())
}

fn is_first_code_unit(c: u8) -> bool {
    (c & 0xc0) != 0x80
}

/// TDLib's `is_space`, which also counts the NUL past the end.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\r' | b'\n' | 0 | 0x0b | 0x0c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> String {
        parse_markdown_v2(s)
            .map(|p| p.text)
            .unwrap_or_else(|e| panic!("{s:?}: {e}"))
    }

    fn kinds(s: &str) -> Vec<(&'static str, usize, usize)> {
        let parsed = parse_markdown_v2(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
        parsed
            .entities
            .iter()
            .map(|e| (e.kind, e.offset, e.length))
            .collect()
    }

    #[test]
    fn reserved_characters_must_be_escaped() {
        assert_eq!(
            parse_markdown_v2("Hello.").unwrap_err(),
            "Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        assert_eq!(text(r"1\.5 \+ 2 \= 3\.5\!"), "1.5 + 2 = 3.5!");
        assert!(parse_markdown_v2("a-b").is_err());
        assert!(parse_markdown_v2("x > y").is_err());
        // A backslash before a letter is an escape too; before non-ASCII it is literal.
        assert_eq!(text(r"\a é\é"), "a é\\é");
    }

    #[test]
    fn entities_are_parsed() {
        assert_eq!(
            kinds("*b* _i_ __u__ ~s~ ||sp||"),
            [
                ("bold", 0, 1),
                ("italic", 2, 1),
                ("underline", 4, 1),
                ("strikethrough", 6, 1),
                ("spoiler", 8, 2),
            ]
        );
        assert_eq!(
            kinds("*bold _italic_*"),
            [("bold", 0, 11), ("italic", 5, 6)]
        );
        let link = parse_markdown_v2(r"[a](http://x.io/a_(b\))").unwrap();
        assert_eq!(link.text, "a");
        assert_eq!(link.entities[0].url.as_deref(), Some("http://x.io/a_(b)"));
        let pre = parse_markdown_v2("```rust\nlet a = b.c(); // \\` \\\\\n```").unwrap();
        assert_eq!(pre.text, "let a = b.c(); // ` \\\n");
        assert_eq!(pre.entities[0].language.as_deref(), Some("rust"));
        assert_eq!(text("`a.b_c`"), "a.b_c");
        assert_eq!(kinds("🎉*x*"), [("bold", 2, 1)]);
    }

    #[test]
    fn unbalanced_entities_are_errors() {
        assert_eq!(
            parse_markdown_v2("*open").unwrap_err(),
            "Can't find end of Bold entity at byte offset 0"
        );
        assert!(parse_markdown_v2("_a__b_").is_err()); // `__` reads as underline
        assert!(parse_markdown_v2("`code").is_err());
        assert!(parse_markdown_v2("[a](http://x").is_err());
        assert!(parse_markdown_v2(">quote *bold\nnext*").is_err());
    }

    #[test]
    fn quotes_start_only_at_line_starts() {
        assert_eq!(kinds(">one\n>two\nafter"), [("blockquote", 0, 8)]);
        assert_eq!(text(">one\n>two\nafter"), "one\ntwo\nafter");
        assert!(parse_markdown_v2("a >b").is_err());
        assert_eq!(kinds(">hidden||"), [("expandable_blockquote", 0, 6)]);
    }

    #[test]
    fn empty_entities_are_dropped() {
        assert_eq!(kinds("a**b"), []);
        assert_eq!(text("a**b"), "ab");
    }
}
