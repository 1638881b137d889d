//! Splitting a long reply into messages a platform accepts.
//!
//! Pieces break at the gentlest boundary that fits: a paragraph, then a line, then a
//! sentence end (Latin and CJK punctuation), then a space, and only as a last resort in the
//! middle of a word (never inside a character). A code fence cut by a split is closed at the
//! end of its piece and reopened, with its language tag, at the start of the next, so every
//! piece renders on its own.
//!
//! Lengths are counted in UTF-16 code units: Telegram counts its 4096 that way, and the
//! count is never smaller than the number of characters, so it is safe for the other
//! platforms too.

/// Length as platforms count it (UTF-16 code units).
pub fn platform_len(s: &str) -> usize {
    s.chars().map(char::len_utf16).sum()
}

/// Split `text` into pieces of at most `max` UTF-16 units each. Empty and whitespace-only
/// pieces are dropped.
pub fn split_message(text: &str, max: usize) -> Vec<String> {
    // Room for a reopened fence header and a closing fence in every piece.
    const FENCE_ROOM: usize = 24;
    let max = max.max(FENCE_ROOM * 2 + 16);
    let mut pieces = Vec::new();
    let mut rest = text.trim();
    let mut open_fence: Option<String> = None;
    while !rest.is_empty() {
        let prefix = open_fence
            .as_ref()
            .map(|lang| format!("```{lang}\n"))
            .unwrap_or_default();
        let budget = max - platform_len(&prefix);
        if platform_len(rest) <= budget {
            pieces.push(format!("{prefix}{rest}"));
            break;
        }
        // Leave room to close a fence that is open at the cut.
        let cut = best_cut(rest, budget - FENCE_ROOM);
        let (head, tail) = rest.split_at(cut);
        let head = head.trim_end();
        let mut piece = format!("{prefix}{head}");
        let fence_after = fence_state(open_fence.clone(), head);
        if fence_after.is_some() {
            piece.push_str("\n```");
        }
        if !head.trim().is_empty() {
            pieces.push(piece);
        }
        open_fence = fence_after;
        rest = tail.trim_start_matches([' ', '\t', '\n', '\r']);
    }
    pieces.retain(|p| !p.trim().is_empty());
    pieces
}

/// The language of the code fence still open after `text`, given the one open before.
fn fence_state(mut open: Option<String>, text: &str) -> Option<String> {
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(after) = t.strip_prefix("```") {
            open = match open {
                Some(_) => None,
                None => Some(after.trim().to_string()),
            };
        }
    }
    open
}

/// The byte index to cut `s` at so the head holds at most `budget` UTF-16 units, at the
/// best boundary available.
fn best_cut(s: &str, budget: usize) -> usize {
    // The longest prefix within budget, on a char boundary.
    let mut limit = 0;
    let mut used = 0;
    for (i, c) in s.char_indices() {
        used += c.len_utf16();
        if used > budget {
            break;
        }
        limit = i + c.len_utf8();
    }
    let window = &s[..limit];
    // Prefer boundaries in the second half of the window, so pieces are not tiny.
    let floor = limit / 2;
    let candidates = [
        window.rfind("\n\n").map(|i| i + 2),
        window.rfind('\n').map(|i| i + 1),
        sentence_end(window),
        window.rfind([' ', '\t']).map(|i| i + 1),
    ];
    if let Some(i) = candidates.into_iter().flatten().find(|&i| i > floor) {
        return i;
    }
    if limit == 0 {
        // Budget smaller than one character: take the character anyway.
        s.chars().next().map_or(s.len(), char::len_utf8)
    } else {
        limit
    }
}

/// The end of the last sentence in `w` (after its punctuation and following space).
fn sentence_end(w: &str) -> Option<usize> {
    let mut best = None;
    let mut chars = w.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let end = i + c.len_utf8();
        match c {
            '。' | '！' | '？' | '；' => best = Some(end),
            '.' | '!' | '?' | ';' => {
                if matches!(chars.peek(), Some((_, n)) if n.is_whitespace()) {
                    best = Some(end + 1);
                }
            }
            _ => {}
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pieces: &[String], max: usize) {
        for p in pieces {
            assert!(
                platform_len(p) <= max,
                "piece of {} > {max}",
                platform_len(p)
            );
            assert!(!p.trim().is_empty());
        }
    }

    #[test]
    fn short_text_is_one_piece() {
        assert_eq!(split_message("  hello  ", 100), vec!["hello"]);
        assert!(split_message("   ", 100).is_empty());
    }

    #[test]
    fn prefers_paragraphs_then_sentences() {
        let p1 = "a".repeat(60);
        let p2 = "b".repeat(60);
        let text = format!("{p1}\n\n{p2}");
        assert_eq!(split_message(&text, 100), vec![p1.clone(), p2.clone()]);
        let text = format!("{}. {}. {}", "x".repeat(40), "y".repeat(40), "z".repeat(40));
        let pieces = split_message(&text, 100);
        check(&pieces, 100);
        assert!(pieces[0].ends_with('.'), "{pieces:?}");
    }

    #[test]
    fn cjk_and_emoji_count_and_cut_safely() {
        let text = "这是一个很长的句子。".repeat(60);
        let pieces = split_message(&text, 100);
        check(&pieces, 100);
        assert!(pieces.iter().all(|p| p.ends_with('。')));
        assert_eq!(pieces.concat(), text);
        // Each emoji is two UTF-16 units.
        let emoji = "😀".repeat(300);
        let pieces = split_message(&emoji, 100);
        check(&pieces, 100);
        assert_eq!(pieces.concat(), emoji);
    }

    #[test]
    fn no_spaces_at_all_still_splits() {
        let text = "x".repeat(1000);
        let pieces = split_message(&text, 100);
        check(&pieces, 100);
        assert_eq!(pieces.concat(), text);
    }

    #[test]
    fn code_fences_are_closed_and_reopened() {
        let code: String = (0..40).map(|i| format!("let v{i} = {i};\n")).collect();
        let text = format!("Here:\n\n```rust\n{code}```\n\nDone.");
        let pieces = split_message(&text, 200);
        check(&pieces, 200);
        assert!(pieces.len() > 2);
        for p in &pieces {
            let fences = p.matches("```").count();
            assert_eq!(fences % 2, 0, "unbalanced fence in {p:?}");
        }
        assert!(pieces[1].starts_with("```rust\n"), "{:?}", pieces[1]);
        // Nothing of the code is lost.
        let joined = pieces.join("\n");
        for i in 0..40 {
            assert!(joined.contains(&format!("let v{i} = {i};")));
        }
    }

    #[test]
    fn telegram_sized_reply() {
        let para = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(30);
        let text = [para.as_str(); 8].join("\n\n");
        let pieces = split_message(&text, 4096);
        check(&pieces, 4096);
        assert!(pieces.len() >= 3);
        let words = |s: &str| s.split_whitespace().count();
        assert_eq!(pieces.iter().map(|p| words(p)).sum::<usize>(), words(&text));
    }
}
