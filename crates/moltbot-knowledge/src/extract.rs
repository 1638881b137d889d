//! Text extraction from files: plain text, markdown, HTML and PDF; folders recursively.
//!
//! HTML is parsed with `scraper` (html5ever); `script`, `style`, `noscript`, `template` and
//! the `head` are dropped, headings become markdown `#` lines (so the chunker keeps them as
//! headings) and block elements become line breaks. PDF text comes from `pdf-extract`
//! (on top of `lopdf`), run under `catch_unwind` because malformed PDFs can make it panic.

use std::path::{Path, PathBuf};

use ego_tree::NodeRef;
use scraper::{Html, Node};

/// What kind of document a file is, judged by its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DocKind {
    /// `.txt`, `.text`, `.log`, `.rst`, `.csv`
    Text,
    /// `.md`, `.markdown`
    Markdown,
    /// `.html`, `.htm`, `.xhtml`
    Html,
    /// `.pdf`
    Pdf,
}

impl DocKind {
    /// The kind for `path`'s extension, or `None` when it is not a supported document.
    pub fn of(path: &Path) -> Option<DocKind> {
        let ext = path.extension()?.to_str()?.to_ascii_lowercase();
        match ext.as_str() {
            "txt" | "text" | "log" | "rst" | "csv" => Some(DocKind::Text),
            "md" | "markdown" => Some(DocKind::Markdown),
            "html" | "htm" | "xhtml" => Some(DocKind::Html),
            "pdf" => Some(DocKind::Pdf),
            _ => None,
        }
    }
}

/// Why a file could not be turned into text.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    /// The file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The extension is not one we extract.
    #[error("{} has an unsupported type\nhint: supported extensions are txt, md, markdown, html, htm, pdf", path.display())]
    Unsupported { path: PathBuf },
    /// The PDF parser refused the file.
    #[error("cannot extract text from PDF {}: {reason}", path.display())]
    Pdf { path: PathBuf, reason: String },
}

impl ExtractError {
    /// Stable name used in metrics labels and JSON error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            ExtractError::Io { .. } => "extract_io",
            ExtractError::Unsupported { .. } => "extract_unsupported",
            ExtractError::Pdf { .. } => "extract_pdf",
        }
    }
}

/// Reads `path` and returns its raw bytes and extracted text.
pub fn extract_file(path: &Path) -> Result<(Vec<u8>, String), ExtractError> {
    let kind = DocKind::of(path).ok_or_else(|| ExtractError::Unsupported {
        path: path.to_path_buf(),
    })?;
    let bytes = std::fs::read(path).map_err(|source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let text = extract_bytes(kind, &bytes, path)?;
    Ok((bytes, text))
}

/// Extracts text from the contents of a document; `path` only names it in errors.
pub fn extract_bytes(kind: DocKind, bytes: &[u8], path: &Path) -> Result<String, ExtractError> {
    match kind {
        DocKind::Text | DocKind::Markdown => Ok(String::from_utf8_lossy(bytes).into_owned()),
        DocKind::Html => Ok(html_to_text(&String::from_utf8_lossy(bytes))),
        DocKind::Pdf => pdf_to_text(bytes, path),
    }
}

fn pdf_to_text(bytes: &[u8], path: &Path) -> Result<String, ExtractError> {
    let result = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(bytes));
    match result {
        Ok(Ok(text)) => Ok(text),
        Ok(Err(e)) => Err(ExtractError::Pdf {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
        Err(panic) => Err(ExtractError::Pdf {
            path: path.to_path_buf(),
            reason: format!(
                "the PDF parser gave up: {}",
                panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("malformed file")
            ),
        }),
    }
}

/// Visible text of an HTML document, with headings as markdown `#` lines.
pub fn html_to_text(html: &str) -> String {
    let doc = Html::parse_document(html);
    let mut out = String::new();
    walk(doc.tree.root(), &mut out, false);
    // Collapse runs of blank lines left by nested blocks.
    let mut clean = String::with_capacity(out.len());
    let mut blank = 0;
    for line in out.lines() {
        let line = line.trim_end();
        if line.trim().is_empty() {
            blank += 1;
            if blank == 1 && !clean.is_empty() {
                clean.push('\n');
            }
        } else {
            blank = 0;
            clean.push_str(line.trim_start());
            clean.push('\n');
        }
    }
    clean
}

fn walk(node: NodeRef<'_, Node>, out: &mut String, pre: bool) {
    match node.value() {
        Node::Text(t) => {
            if pre {
                out.push_str(t);
            } else {
                let mut last_space = out.ends_with([' ', '\n']) || out.is_empty();
                for c in t.chars() {
                    if c.is_whitespace() {
                        if !last_space {
                            out.push(' ');
                            last_space = true;
                        }
                    } else {
                        out.push(c);
                        last_space = false;
                    }
                }
            }
        }
        Node::Element(e) => {
            let name = e.name();
            match name {
                "script" | "style" | "noscript" | "template" | "head" | "svg" => {}
                "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                    let level = usize::from(name.as_bytes()[1] - b'0');
                    let mut inner = String::new();
                    for c in node.children() {
                        walk(c, &mut inner, false);
                    }
                    let title = inner.split_whitespace().collect::<Vec<_>>().join(" ");
                    out.push_str("\n\n");
                    out.push_str(&"#".repeat(level));
                    out.push(' ');
                    out.push_str(&title);
                    out.push_str("\n\n");
                }
                "br" => out.push('\n'),
                _ => {
                    let block = matches!(
                        name,
                        "p" | "div"
                            | "section"
                            | "article"
                            | "main"
                            | "header"
                            | "footer"
                            | "nav"
                            | "aside"
                            | "ul"
                            | "ol"
                            | "li"
                            | "table"
                            | "tr"
                            | "blockquote"
                            | "pre"
                            | "dl"
                            | "dt"
                            | "dd"
                            | "figure"
                            | "figcaption"
                            | "form"
                            | "hr"
                    );
                    let para = matches!(name, "p" | "pre" | "blockquote" | "table" | "ul" | "ol");
                    if block {
                        out.push_str(if para { "\n\n" } else { "\n" });
                    }
                    if name == "li" {
                        out.push_str("- ");
                    }
                    if name == "td" || name == "th" {
                        out.push(' ');
                    }
                    for c in node.children() {
                        walk(c, out, pre || name == "pre");
                    }
                    if block {
                        out.push_str(if para { "\n\n" } else { "\n" });
                    }
                }
            }
        }
        _ => {
            for c in node.children() {
                walk(c, out, pre);
            }
        }
    }
}

/// Supported documents under `path` (itself when it is a file), sorted. Hidden files and
/// folders (name starting with `.`) are skipped.
pub fn collect_files(path: &Path) -> Result<Vec<PathBuf>, ExtractError> {
    let meta = std::fs::metadata(path).map_err(|source| ExtractError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if meta.is_file() {
        if DocKind::of(path).is_none() {
            return Err(ExtractError::Unsupported {
                path: path.to_path_buf(),
            });
        }
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files = Vec::new();
    let walker = walkdir::WalkDir::new(path)
        .follow_links(true)
        .into_iter()
        .filter_entry(|e| e.depth() == 0 || !e.file_name().to_string_lossy().starts_with('.'));
    for entry in walker {
        let entry = entry.map_err(|e| {
            let p = e
                .path()
                .map_or_else(|| path.to_path_buf(), Path::to_path_buf);
            ExtractError::Io {
                path: p,
                source: e
                    .into_io_error()
                    .unwrap_or_else(|| std::io::Error::other("filesystem loop")),
            }
        })?;
        if entry.file_type().is_file() && DocKind::of(entry.path()).is_some() {
            files.push(entry.into_path());
        }
    }
    files.sort();
    Ok(files)
}
