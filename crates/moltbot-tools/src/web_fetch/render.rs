//! From a fetched body to text for the model: which content types are read, which charset
//! a body is in, and HTML as markdown-ish text (`#` headings, `[text](href)` links, title).

use moltbot_knowledge::extract::html_to_text;
use scraper::{node::Text, Html, Node, Selector, StrTendril};
use url::Url;

/// How a body is turned into text, by its content type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// `text/html`, `application/xhtml+xml`: readable text without markup.
    Html,
    /// `application/json`, `*/*+json`: pretty-printed.
    Json,
    /// `text/*`, XML, JavaScript, YAML, TOML: as sent.
    Text,
}

impl Kind {
    /// The kind for a content type's essence (lowercase `type/subtype`, no parameters), or
    /// `None` when it is not text (images, audio, video, PDF, archives, octet streams).
    pub(super) fn of_mime(essence: &str) -> Option<Kind> {
        let (top, sub) = essence.split_once('/')?;
        match (top, sub) {
            ("text", "html") | ("application", "xhtml+xml") => Some(Kind::Html),
            ("application" | "text", "json") => Some(Kind::Json),
            // SVG is XML, but a model asking for an image wants to hear that it is one.
            ("image" | "audio" | "video" | "font", _) => None,
            (_, s) if s.ends_with("+json") => Some(Kind::Json),
            (_, s) if s.ends_with("+xml") => Some(Kind::Text),
            ("text", _) => Some(Kind::Text),
            (
                "application",
                "xml" | "javascript" | "ecmascript" | "x-javascript" | "yaml" | "x-yaml" | "toml"
                | "x-ndjson" | "ndjson" | "csv" | "markdown",
            ) => Some(Kind::Text),
            _ => None,
        }
    }

    /// A guess for a body sent without a content type, from its first bytes: HTML by its
    /// opening tag; text when there is no NUL byte and it is UTF-8 (a multi-byte character
    /// cut at the end of the sample is fine); otherwise binary (`None`).
    pub(super) fn sniff(body: &[u8]) -> Option<Kind> {
        let head = &body[..body.len().min(1024)];
        if head.contains(&0) {
            return None;
        }
        let start = String::from_utf8_lossy(head)
            .trim_start_matches('\u{feff}')
            .trim_start()
            .get(..14)
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        if start.starts_with("<!doctype html") || start.starts_with("<html") {
            return Some(Kind::Html);
        }
        match std::str::from_utf8(head) {
            Ok(_) => Some(Kind::Text),
            Err(e) if e.error_len().is_none() => Some(Kind::Text),
            Err(_) => None,
        }
    }
}

/// A `Content-Type` value split into its essence (lowercase) and its `charset`, if any.
pub(super) fn parse_content_type(value: &str) -> (String, Option<String>) {
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
    let charset = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| v.trim().trim_matches(['"', '\'']).to_owned())
    });
    (essence, charset)
}

/// The body as text: in the charset the header names, else (HTML) the one a `<meta>` in
/// the first KiB names, else UTF-8. A byte-order mark wins over both. Bytes that are not
/// valid in the charset become U+FFFD, as does a character cut by the byte limit.
pub(super) fn decode(body: &[u8], charset: Option<&str>, kind: Kind) -> String {
    let label = charset
        .map(str::to_owned)
        .or_else(|| (kind == Kind::Html).then(|| meta_charset(body)).flatten());
    let encoding = label
        .and_then(|l| encoding_rs::Encoding::for_label(l.as_bytes()))
        .unwrap_or(encoding_rs::UTF_8);
    encoding.decode(body).0.into_owned()
}

/// The label after the first `charset=` in the first KiB of an HTML document (covers both
/// `<meta charset="…">` and `<meta http-equiv … content="text/html; charset=…">`).
fn meta_charset(body: &[u8]) -> Option<String> {
    let head = body[..body.len().min(1024)].to_ascii_lowercase();
    let at = head.windows(8).position(|w| w == b"charset=")? + 8;
    let rest = &head[at..];
    let rest = rest
        .strip_prefix(b"\"")
        .or_else(|| rest.strip_prefix(b"'"))
        .unwrap_or(rest);
    let end = rest
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || b"-_:.".contains(b)))
        .unwrap_or(rest.len());
    (end > 0).then(|| String::from_utf8_lossy(&rest[..end]).into_owned())
}

/// A rendered body: the HTML title, if any, and the text.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Rendered {
    pub title: Option<String>,
    pub text: String,
}

/// Render decoded text of `kind`; `base` is the URL it came from (for relative links).
pub(super) fn render(kind: Kind, text: &str, base: &Url) -> Rendered {
    match kind {
        Kind::Html => html(text, base),
        Kind::Json => Rendered {
            title: None,
            // A malformed or truncated document is shown as sent.
            text: serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or_else(|| text.to_owned()),
        },
        Kind::Text => Rendered {
            title: None,
            text: text.to_owned(),
        },
    }
}

/// Elements that make `html_to_text` start new lines; a link holding one of them keeps only
/// its text (brackets around a heading or a card would scatter over several lines).
const BLOCKS: &str = "address, article, aside, blockquote, div, dl, figure, footer, form, \
                      h1, h2, h3, h4, h5, h6, header, hr, li, main, nav, ol, p, pre, section, \
                      table, ul, br";

/// HTML as text: the `<title>`, and the body through [`html_to_text`] after each link was
/// wrapped as `[text](absolute href)` in the tree.
fn html(source: &str, base: &Url) -> Rendered {
    // The selectors are constants; `parse` only fails on invalid selector syntax.
    let title_sel = Selector::parse("title").expect("valid selector");
    let link_sel = Selector::parse("a[href]").expect("valid selector");
    let block_sel = Selector::parse(BLOCKS).expect("valid selector");

    let mut doc = Html::parse_document(source);
    let title = doc
        .select(&title_sel)
        .next()
        .map(|t| t.text().collect::<Vec<_>>().join(" "))
        .map(|t| t.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|t| !t.is_empty())
        .map(|t| match t.char_indices().nth(300) {
            Some((cut, _)) => format!("{}…", &t[..cut]),
            None => t,
        });

    let links: Vec<_> = doc
        .select(&link_sel)
        .filter_map(|a| {
            let href = a.value().attr("href")?.trim();
            if href.is_empty() || href.starts_with('#') {
                return None;
            }
            let target = base.join(href).ok()?;
            if !matches!(target.scheme(), "http" | "https" | "mailto") {
                return None;
            }
            let text = a.text().collect::<String>();
            let text = text.trim();
            let target = target.to_string();
            if text.is_empty()
                || text == href
                || text == target
                || a.select(&block_sel).next().is_some()
            {
                return None;
            }
            Some((a.id(), target))
        })
        .collect();
    for (id, target) in links {
        if let Some(mut a) = doc.tree.get_mut(id) {
            a.prepend(text_node("["));
            a.append(text_node(&format!("]({target})")));
        }
    }
    Rendered {
        title,
        text: html_to_text(&doc.html()),
    }
}

fn text_node(s: &str) -> Node {
    Node::Text(Text {
        text: StrTendril::from_slice(s),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_types() {
        for (ct, kind) in [
            ("text/html", Some(Kind::Html)),
            ("application/xhtml+xml", Some(Kind::Html)),
            ("application/json", Some(Kind::Json)),
            ("application/ld+json", Some(Kind::Json)),
            ("text/plain", Some(Kind::Text)),
            ("application/rss+xml", Some(Kind::Text)),
            ("application/xml", Some(Kind::Text)),
            ("image/png", None),
            ("image/svg+xml", None),
            ("application/octet-stream", None),
            ("application/pdf", None),
            ("nonsense", None),
        ] {
            assert_eq!(Kind::of_mime(ct), kind, "{ct}");
        }
        assert_eq!(
            parse_content_type("Text/HTML; Charset=\"ISO-8859-1\""),
            ("text/html".into(), Some("ISO-8859-1".into()))
        );
        assert_eq!(Kind::sniff(b"  <!DOCTYPE html><p>x"), Some(Kind::Html));
        assert_eq!(Kind::sniff("plain é".as_bytes()), Some(Kind::Text));
        assert_eq!(Kind::sniff(b"\x89PNG\r\n\x1a\n\0\0"), None);
    }

    #[test]
    fn charsets() {
        assert_eq!(decode(b"caf\xe9", Some("iso-8859-1"), Kind::Text), "café");
        let page = b"<html><head><meta charset=\"windows-1251\"></head><body>\xcf\xf0\xe8\xe2\xe5\xf2</body>";
        assert!(decode(page, None, Kind::Html).contains("Привет"));
        // A byte-order mark wins over a wrong header.
        assert_eq!(
            decode(b"\xef\xbb\xbfcaf\xc3\xa9", Some("latin1"), Kind::Text),
            "café"
        );
        assert_eq!(decode(b"caf\xc3", None, Kind::Text), "caf\u{fffd}");
    }

    #[test]
    fn links_become_markdown() {
        let base = Url::parse("https://example.org/docs/").unwrap();
        let page = r##"<html><head><title> The
            Docs </title></head><body>
            <h2><a href="intro">Intro</a></h2>
            <p>See <a href="/faq?a=1&amp;b=2">the FAQ</a> or <a href="#top">top</a>.</p>
            <a href="/card"><div><h3>Card</h3></div></a>
            <a href="javascript:void(0)">js</a>
            <a href="https://x.org/">https://x.org/</a>
            </body></html>"##;
        let r = render(Kind::Html, page, &base);
        assert_eq!(r.title.as_deref(), Some("The Docs"));
        let t = &r.text;
        assert!(
            t.contains("## [Intro](https://example.org/docs/intro)"),
            "{t}"
        );
        assert!(
            t.contains("See [the FAQ](https://example.org/faq?a=1&b=2) or top."),
            "{t}"
        );
        assert!(
            t.contains("### Card") && !t.contains("(https://example.org/card)"),
            "{t}"
        );
        assert!(t.contains("js") && !t.contains("javascript:"), "{t}");
        assert!(
            t.contains("https://x.org/") && !t.contains("[https://x.org/]"),
            "{t}"
        );
    }

    #[test]
    fn json_is_pretty_and_broken_json_is_kept() {
        let base = Url::parse("https://example.org/").unwrap();
        let r = render(Kind::Json, r#"{"a":1,"b":[true]}"#, &base);
        assert_eq!(r.text, "{\n  \"a\": 1,\n  \"b\": [\n    true\n  ]\n}");
        assert_eq!(render(Kind::Json, r#"{"a":"#, &base).text, r#"{"a":"#);
    }
}
