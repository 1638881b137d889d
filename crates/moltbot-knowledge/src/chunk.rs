//! Splitting extracted text into retrieval chunks.
//!
//! Markdown headings (`#` .. `######` at the start of a line, outside fenced code) start a
//! new section, and the path of headings above a chunk is kept with it. Inside a section,
//! text is cut into sentences — after `.`, `!`, `?` followed by whitespace, after the CJK
//! marks `。！？；` wherever they stand, and at blank lines — and sentences are packed into
//! chunks of about `target_chars` characters. Consecutive chunks of a section share up to
//! `overlap_chars` characters of whole sentences, so a fact cut at a boundary is still whole
//! in one of them. A sentence longer than `target_chars` is cut at whitespace (or anywhere,
//! for text without spaces).
//!
//! Every chunk records byte offsets into the input with `text[start..end] == chunk.text`.

/// Chunk sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkOptions {
    /// Aim for chunks of about this many characters (roughly 4 per token in English, 1–2 per
    /// token in Chinese). At least 16.
    pub target_chars: usize,
    /// Characters of whole sentences repeated at the start of the next chunk of a section.
    pub overlap_chars: usize,
}

impl Default for ChunkOptions {
    fn default() -> Self {
        Self {
            target_chars: 800,
            overlap_chars: 150,
        }
    }
}

/// One piece of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chunk {
    /// Byte offset of the first byte in the extracted text.
    pub start: usize,
    /// Byte offset one past the last byte.
    pub end: usize,
    /// `text[start..end]`.
    pub text: String,
    /// Titles of the enclosing headings, outermost first.
    pub heading: Vec<String>,
}

/// Splits `text` into chunks; see the module docs.
pub fn chunk_text(text: &str, opts: &ChunkOptions) -> Vec<Chunk> {
    let target = opts.target_chars.max(16);
    let overlap = opts.overlap_chars.min(target / 2);
    let mut out = Vec::new();
    for section in sections(text) {
        let spans = sentences(text, section.start, section.end, target);
        pack(text, &spans, &section.heading, target, overlap, &mut out);
    }
    out
}

struct Section {
    start: usize,
    end: usize,
    heading: Vec<String>,
}

/// Returns `(level, title)` when `line` is a markdown ATX heading.
fn heading_of(line: &str) -> Option<(usize, &str)> {
    let t = line.trim_start_matches([' ', '\t']);
    if line.len() - t.len() > 3 {
        return None;
    }
    let level = t.bytes().take_while(|b| *b == b'#').count();
    if level == 0 || level > 6 {
        return None;
    }
    let rest = &t[level..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t']) {
        return None;
    }
    Some((level, rest.trim().trim_end_matches('#').trim()))
}

fn sections(text: &str) -> Vec<Section> {
    let mut out = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut start = 0;
    let mut in_fence = false;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let line_start = pos;
        pos += line.len();
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
            continue;
        }
        if in_fence {
            continue;
        }
        let Some((level, title)) = heading_of(line.trim_end_matches(['\n', '\r'])) else {
            continue;
        };
        out.push(Section {
            start,
            end: line_start,
            heading: stack.iter().map(|(_, t)| t.clone()).collect(),
        });
        while stack.last().is_some_and(|(l, _)| *l >= level) {
            stack.pop();
        }
        stack.push((level, title.to_string()));
        start = pos;
    }
    out.push(Section {
        start,
        end: text.len(),
        heading: stack.iter().map(|(_, t)| t.clone()).collect(),
    });
    out
}

/// A sentence as `(start, end, chars)`; spans cover `[from, to)` except blank runs.
type Span = (usize, usize, usize);

fn sentences(text: &str, from: usize, to: usize, target: usize) -> Vec<Span> {
    let body = &text[from..to];
    let mut cuts = Vec::new();
    let mut iter = body.char_indices().peekable();
    let mut prev_newline = false;
    while let Some((i, c)) = iter.next() {
        let next = iter.peek().map(|(_, n)| *n);
        let end = i + c.len_utf8();
        let cut = match c {
            '。' | '！' | '？' | '；' => true,
            '.' | '!' | '?' => next.is_none_or(char::is_whitespace),
            '\n' => prev_newline,
            _ => false,
        };
        prev_newline = c == '\n' || (prev_newline && (c == ' ' || c == '\t' || c == '\r'));
        if cut {
            // Let the sentence own the whitespace after it.
            let mut stop = end;
            while let Some((j, n)) = iter.peek() {
                if n.is_whitespace() {
                    stop = j + n.len_utf8();
                    prev_newline = prev_newline || *n == '\n';
                    iter.next();
                } else {
                    break;
                }
            }
            cuts.push(stop);
        }
    }
    if cuts.last() != Some(&body.len()) {
        cuts.push(body.len());
    }
    let mut out = Vec::new();
    let mut a = 0;
    for b in cuts {
        // Whitespace-only spans (runs of blank lines) carry nothing; dropping them keeps
        // the overlap logic from producing two chunks that trim to the same text.
        if b > a && !body[a..b].trim().is_empty() {
            split_long(body, a, b, target, from, &mut out);
        }
        a = b;
    }
    out
}

/// Pushes `[a, b)` of `body` as one or more spans of at most `target` characters.
fn split_long(body: &str, a: usize, b: usize, target: usize, base: usize, out: &mut Vec<Span>) {
    let mut start = a;
    loop {
        let piece = &body[start..b];
        let n = piece.chars().count();
        if n <= target {
            out.push((base + start, base + b, n));
            return;
        }
        // Byte offset after `target` characters, then back to the last whitespace if any.
        let hard = piece
            .char_indices()
            .nth(target)
            .map_or(piece.len(), |(i, _)| i);
        let soft = piece[..hard]
            .rfind(char::is_whitespace)
            .filter(|i| *i > hard / 2)
            .map_or(hard, |i| i + 1);
        let soft = if piece.is_char_boundary(soft) {
            soft
        } else {
            hard
        };
        out.push((
            base + start,
            base + start + soft,
            piece[..soft].chars().count(),
        ));
        start += soft;
    }
}

fn pack(
    text: &str,
    spans: &[Span],
    heading: &[String],
    target: usize,
    overlap: usize,
    out: &mut Vec<Chunk>,
) {
    let mut i = 0;
    while i < spans.len() {
        let mut j = i;
        let mut chars = 0;
        while j < spans.len() && (j == i || chars + spans[j].2 <= target) {
            chars += spans[j].2;
            j += 1;
        }
        push_trimmed(text, spans[i].0, spans[j - 1].1, heading, out);
        if j >= spans.len() {
            break;
        }
        // Step back over trailing sentences for the overlap, but always advance.
        let mut back = j;
        let mut kept = 0;
        while back > i + 1 && kept + spans[back - 1].2 <= overlap {
            kept += spans[back - 1].2;
            back -= 1;
        }
        i = back;
    }
}

fn push_trimmed(text: &str, start: usize, end: usize, heading: &[String], out: &mut Vec<Chunk>) {
    let slice = &text[start..end];
    let lead = slice.len() - slice.trim_start().len();
    let trail = slice.len() - slice.trim_end().len();
    if lead + trail >= slice.len() {
        return;
    }
    let (s, e) = (start + lead, end - trail);
    if let Some(last) = out.last_mut() {
        if last.start == s {
            // Same start as the previous chunk (possible after trimming): keep the longer.
            if e > last.end {
                last.end = e;
                last.text = text[s..e].to_string();
            }
            return;
        }
    }
    out.push(Chunk {
        start: s,
        end: e,
        text: text[s..e].to_string(),
        heading: heading.to_vec(),
    });
}
