//! The stream guard: runs every check on a reply as it streams in, and decides how much of
//! it may be emitted so far.
//!
//! Text is emitted once nothing that comes later can change it: the end of the text could
//! not be the start of a blocked term (with blocked patterns, whose prefixes cannot be
//! judged, a fixed tail of [`PATTERN_TAIL_CHARS`] is held instead), nothing before the end
//! still matches the system prompt so far that a leak window could reach back into it, it is not part of a stretch that is
//! repeating itself or of a run of punctuation, and the reply does not look like a tool call
//! (those are held whole so they can be repaired).

use super::leak::{protected_part, LeakIndex, LeakScanner};
use super::repeat::{LoopDetector, LoopHit};
use super::text::{content_chars, ends_sentence, is_content, Folded};
use super::tool_json::{self, Judgement, Opening};
use super::{Action, FilterContext, Issue, Outcome, ResponseFilter};
use moltbot_core::model::ToolCallDelta;
use std::ops::Range;

/// Characters held back at the end of the text when blocked patterns are configured. Holding
/// back only what could still start a match keeps the first words flowing otherwise: a fixed
/// tail of 48 characters delayed the first token by about ten tokens' time.
const PATTERN_TAIL_CHARS: usize = 48;
/// Characters always held back (at least 1: the tail is found with `nth(tail - 1)`). The
/// loop detector holds any start-over from its first character itself
/// (`repeat::HOLD_RUN`), so loops need nothing more here; this was 16
/// characters while the detector needed a 12-character run to notice a start-over, which
/// cost 27 ms of time to first token at concurrency 1 and 180 ms at 16.
const MIN_TAIL_CHARS: usize = 1;
/// A run of this many characters without a letter, digit or emoji ("!!!!…", blank lines)
/// is a loop.
const FLOOD_CHARS: usize = 200;
/// A run without content this long is held back until it ends or becomes a flood.
const FLOOD_HOLD_CHARS: usize = 8;
/// A reply that looks like a tool call is held whole up to this size; past it, streaming
/// resumes and a broken call can only be flagged.
const MAX_HELD_CALL_BYTES: usize = 64 * 1024;
/// Blocked content is looked for from this far before the newest piece (or from the first
/// byte not yet emitted, if that is later), so a long held reply (a tool call) is not searched
/// again from its start on every piece. The final look at the end covers everything held.
const SCAN_LOOKBACK_BYTES: usize = 1024;
/// Past this size the guard stops checking and lets the rest through (bounds its memory).
const MAX_CHECKED_BYTES: usize = 4 << 20;
/// A reply cut at a loop must keep this many letters or digits, or it is rejected.
const MIN_USEFUL_AFTER_LOOP: usize = 3;
/// A reply with a leak removed must keep this many, or it is rejected.
const MIN_USEFUL_AFTER_LEAK: usize = 20;
/// Copies needed for a loop inside a code fence (repeated lines are common in code)…
const CODE_MIN_COPIES: usize = 6;
/// …and inside table cells or tab-separated columns ("| Yes | Yes | Yes | Yes |").
const CELL_MIN_COPIES: usize = 8;

/// What [`StreamGuard::push`] allows now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Step {
    /// Text that may be sent to the user now (may be empty).
    pub emit: String,
    /// The reply is over (a loop was cut or blocked content found): stop generating, then
    /// call [`StreamGuard::finish`].
    pub stop: bool,
}

/// What [`StreamGuard::finish`] adds at the end of a reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardEnd {
    /// The last text to send (the held tail, a repaired tool call, or the fallback message).
    pub emit: String,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub struct StreamGuard {
    filter: ResponseFilter,
    tools: bool,
    /// Everything received.
    raw: String,
    folded: Folded,
    loops: LoopDetector,
    leak: Option<LeakScanner>,
    /// Raw byte ranges removed as leaked, in order and disjoint.
    leaked: Vec<Range<usize>>,
    /// The last folded character was part of a leak window.
    leak_open: bool,
    /// Folded index of the gap right after a leak, to tidy once the gap is complete.
    gap_after_leak: Option<usize>,
    /// Raw bytes before this offset are decided (emitted, or dropped as leaked).
    decided: usize,
    /// Content characters (see [`is_content`]) emitted so far.
    sent_content: usize,
    /// Where the reply ends: a loop cut or the start of blocked content.
    end: Option<usize>,
    /// Why it ends there.
    stopped_for: Option<Issue>,
    /// Start of a blocked-term match at the very end of the text, which may still grow.
    term_hold: Option<usize>,
    /// No blocked content starts before this byte except in the last bytes looked at.
    scan_floor: usize,
    opening: Opening,
    /// Raw offsets of the ``` fences seen, to tell code from prose.
    fences: Vec<usize>,
    backticks: usize,
    /// Start and length (characters) of the current run without content.
    dry_run: (usize, usize),
    /// Arguments of native tool calls, by call index.
    tool_calls: Vec<(u32, String)>,
    tail_chars: usize,
    /// Too long to check: everything passes from here on.
    passthrough: bool,
}

impl StreamGuard {
    pub(crate) fn new(filter: ResponseFilter, ctx: &FilterContext) -> StreamGuard {
        let leak = LeakIndex::new(protected_part(&ctx.system), filter.min_leak_chars())
            .map(LeakScanner::new);
        let tail_chars = if filter.blocklist().has_patterns() {
            PATTERN_TAIL_CHARS.max(filter.blocklist().longest_term() + 8)
        } else {
            MIN_TAIL_CHARS
        };
        StreamGuard {
            filter,
            tools: ctx.tools,
            raw: String::new(),
            folded: Folded::default(),
            loops: LoopDetector::new(),
            leak,
            leaked: Vec::new(),
            leak_open: false,
            gap_after_leak: None,
            decided: 0,
            sent_content: 0,
            end: None,
            stopped_for: None,
            term_hold: None,
            scan_floor: 0,
            opening: if ctx.tools {
                Opening::Undecided
            } else {
                Opening::Text
            },
            fences: Vec::new(),
            backticks: 0,
            dry_run: (0, 0),
            tool_calls: Vec::new(),
            tail_chars,
            passthrough: false,
        }
    }

    /// Take the next piece of the reply; returns what may be emitted now.
    pub fn push(&mut self, text: &str) -> Step {
        if self.end.is_some() {
            return Step {
                emit: String::new(),
                stop: true,
            };
        }
        if self.passthrough {
            return Step {
                emit: text.to_string(),
                stop: false,
            };
        }
        let base = self.raw.len();
        self.raw.push_str(text);
        let mut floor = base.saturating_sub(SCAN_LOOKBACK_BYTES);
        while !self.raw.is_char_boundary(floor) {
            floor -= 1;
        }
        self.scan_floor = floor;
        if self.raw.len() > MAX_CHECKED_BYTES {
            self.passthrough = true;
            let emit = self.take(self.raw.len());
            return Step { emit, stop: false };
        }
        'chars: for (offset, c) in text.char_indices() {
            let at = base + offset;
            self.track_fences(c, at);
            if let Some(cut) = self.track_dry_run(c, at) {
                self.stop_at(cut, Issue::Loop);
                break;
            }
            let added = self.folded.push(c, at);
            let len = self.folded.len();
            for upto in len + 1 - added..=len {
                if let Some(cut) = self.step_folded(upto) {
                    self.stop_at(cut, Issue::Loop);
                    break 'chars;
                }
            }
        }
        if self.opening == Opening::Undecided {
            self.opening = tool_json::opening(&self.raw, false);
        }
        if self.opening == Opening::Call && self.raw.len() > MAX_HELD_CALL_BYTES {
            self.opening = Opening::Text;
        }
        self.scan_terms(false);
        let limit = self.limit();
        let emit = self.take(limit);
        Step {
            emit,
            stop: self.end.is_some(),
        }
    }

    /// Note a native tool-call fragment (passed on unchanged by the caller): a reply that
    /// calls a tool may have no text, and its arguments are checked at the end.
    pub fn tool_call(&mut self, delta: &ToolCallDelta) {
        match self.tool_calls.iter_mut().find(|(i, _)| *i == delta.index) {
            Some((_, args)) => args.push_str(&delta.arguments),
            None => self.tool_calls.push((delta.index, delta.arguments.clone())),
        }
    }

    /// The reply is complete (or generation was stopped): the last text to emit and the
    /// outcome.
    pub fn finish(mut self) -> GuardEnd {
        if self.passthrough {
            return GuardEnd {
                emit: self.take(self.raw.len()),
                outcome: Outcome::PASS,
            };
        }
        if self.opening == Opening::Undecided {
            self.opening = tool_json::opening(&self.raw, true);
        }
        if self.end.is_none() {
            self.scan_terms(true);
        }
        if let Some(gap) = self.gap_after_leak.take() {
            self.tidy_after_leak(gap);
        }
        // A reply that ends inside a leak: drop the punctuation after it too.
        if let Some(last) = self.folded.len().checked_sub(1) {
            if self.leak_open && self.folded.chars()[last] == ' ' {
                self.tidy_after_leak(last);
            }
        }
        let end = self.end.unwrap_or(self.raw.len());
        let rest = self.collect(self.decided, end);
        let delivered = self.sent_content + content_chars(&rest);
        let (outcome, rest) = self.judge(end, rest, delivered);
        let emit = match outcome.action {
            Action::Rejected => {
                let fallback = self.filter.fallback();
                if self.sent_content > 0 {
                    format!("\n\n{fallback}")
                } else {
                    fallback.to_string()
                }
            }
            Action::Pass | Action::Repaired | Action::Flagged => rest,
        };
        GuardEnd { emit, outcome }
    }

    /// The final outcome, most serious issue first; `rest` is the text not yet emitted and
    /// may be replaced (a repaired tool call).
    fn judge(&self, end: usize, rest: String, delivered: usize) -> (Outcome, String) {
        if self.stopped_for == Some(Issue::Unsafe) {
            return (Outcome::new(Action::Rejected, Issue::Unsafe), rest);
        }
        if content_chars(&self.raw) == 0 && self.tool_calls.is_empty() {
            return (Outcome::new(Action::Rejected, Issue::Empty), rest);
        }
        if !self.leaked.is_empty() {
            let leaked: usize = self
                .leaked
                .iter()
                .map(|r| content_chars(&self.raw[r.clone()]))
                .sum();
            let total = content_chars(&self.raw[..end]);
            let action = if delivered < MIN_USEFUL_AFTER_LEAK || leaked * 2 > total {
                Action::Rejected
            } else {
                Action::Repaired
            };
            return (Outcome::new(action, Issue::Leak), rest);
        }
        if self.stopped_for == Some(Issue::Loop) {
            if delivered < MIN_USEFUL_AFTER_LOOP {
                return (Outcome::new(Action::Rejected, Issue::Loop), rest);
            }
            let mut rest = rest;
            // Cut inside a code block: close it, so the rest of the chat is not code.
            if self.fences.iter().filter(|&&f| f < end).count() % 2 == 1 {
                rest.push_str("\n```");
            }
            return (Outcome::new(Action::Repaired, Issue::Loop), rest);
        }
        if !self.tools {
            return (Outcome::PASS, rest);
        }
        if self.opening == Opening::Call {
            // Held whole, so it can still be fixed.
            if tool_json::judge(&rest) == Judgement::Broken {
                return match tool_json::repair(&rest) {
                    Some(fixed) => (Outcome::new(Action::Repaired, Issue::ToolJson), fixed),
                    None => (Outcome::new(Action::Flagged, Issue::ToolJson), rest),
                };
            }
        } else if tool_json::has_call_shape(&self.raw)
            && tool_json::judge(&self.raw) == Judgement::Broken
        {
            return (Outcome::new(Action::Flagged, Issue::ToolJson), rest);
        }
        if self
            .tool_calls
            .iter()
            .any(|(_, args)| !tool_json::arguments_parse(args))
        {
            return (Outcome::new(Action::Flagged, Issue::ToolJson), rest);
        }
        (Outcome::PASS, rest)
    }

    /// Run the folded-text checks for `folded[..upto]`; returns a loop cut (raw byte).
    fn step_folded(&mut self, upto: usize) -> Option<usize> {
        if let Some(gap) = self.gap_after_leak.filter(|&g| g + 1 < upto) {
            self.gap_after_leak = None;
            self.tidy_after_leak(gap);
        }
        let chars = &self.folded.chars()[..upto];
        if let Some(scanner) = self.leak.as_mut() {
            match scanner.step(chars) {
                Some(window) => {
                    self.mark_leak(window);
                    self.leak_open = true;
                }
                None if self.leak_open => {
                    self.leak_open = false;
                    self.end_leak_at_word(upto - 1);
                }
                None => {}
            }
        }
        let (raw, folded, fences) = (&self.raw, &self.folded, &self.fences);
        let hit = self
            .loops
            .step(&folded.chars()[..upto], |period, region_start| {
                let first =
                    folded.span(region_start - period).start..folded.span(region_start - 1).end;
                let mut floor = 0;
                if fences.iter().filter(|&&f| f < first.start).count() % 2 == 1 {
                    floor = CODE_MIN_COPIES;
                }
                if raw[first].contains(['|', '\t']) {
                    floor = floor.max(CELL_MIN_COPIES);
                }
                floor
            })?;
        Some(self.loop_cut(hit))
    }

    /// Where to end a reply at a loop: after the first copy, at the first sentence end in
    /// the next copy's span if there is one (so the copy ends with its full stop), else at
    /// the first word gap, else right after the first copy.
    fn loop_cut(&self, hit: LoopHit) -> usize {
        let first_gap_from = hit.region_start - 1;
        let mut word_gap = None;
        let candidates = self.folded.chars()[first_gap_from..]
            .iter()
            .take(hit.period)
            .enumerate();
        for (offset, &c) in candidates {
            if c != ' ' {
                continue;
            }
            let span = self.folded.span(first_gap_from + offset);
            let gap = &self.raw[span.clone()];
            if let Some((i, c)) = gap.char_indices().rev().find(|&(_, c)| ends_sentence(c)) {
                return span.start + i + c.len_utf8();
            }
            if let Some(newline) = gap.find('\n') {
                return span.start + newline;
            }
            word_gap.get_or_insert(span.start);
        }
        word_gap.unwrap_or_else(|| self.folded.span(first_gap_from).end)
    }

    fn mark_leak(&mut self, window: Range<usize>) {
        let chars = self.folded.chars();
        let (mut a, mut b) = (window.start, window.end);
        // A copy that begins inside a word ("blink|s never discuss…") begins at the next
        // word; the gaps at the edges stay, so the words around the leak stay apart.
        if a > 0 && chars[a - 1] != ' ' {
            while a < b && chars[a] != ' ' {
                a += 1;
            }
        }
        if a < b && chars[a] == ' ' {
            a += 1;
        }
        if b > a && chars[b - 1] == ' ' {
            b -= 1;
        }
        if a >= b {
            return;
        }
        let start = self.folded.span(a).start.max(self.decided);
        let end = self.folded.span(b - 1).end;
        if start >= end {
            return;
        }
        match self.leaked.last_mut() {
            Some(last) if last.end >= start => last.end = last.end.max(end),
            _ => self.leaked.push(start..end),
        }
    }

    /// A leak ended before folded character `next`. If it ended inside a word, give the
    /// word back (it is still held, so nothing was emitted wrongly); if it ended at a gap,
    /// tidy the punctuation it leaves behind once the gap is complete.
    fn end_leak_at_word(&mut self, next: usize) {
        let chars = self.folded.chars();
        if chars[next] == ' ' {
            self.gap_after_leak = Some(next);
            return;
        }
        if next == 0 || chars[next - 1] == ' ' {
            if next > 0 {
                self.tidy_after_leak(next - 1);
            }
            return;
        }
        let Some(last) = self.leaked.last_mut() else {
            return;
        };
        let word_start = (0..next)
            .rev()
            .find(|&j| chars[j] == ' ')
            .map_or(0, |gap| self.folded.span(gap).start);
        if word_start <= last.start {
            self.leaked.pop();
        } else {
            last.end = last.end.min(word_start);
        }
    }

    /// Remove the punctuation that closed a removed leak (and a doubled space), so
    /// "…ten seconds. <leak>. After…" reads "…ten seconds. After…".
    fn tidy_after_leak(&mut self, gap: usize) {
        let span = self.folded.span(gap);
        let Some(last) = self.leaked.last_mut() else {
            return;
        };
        if last.end != span.start {
            return;
        }
        let text = &self.raw[span.clone()];
        let punct = text.find(|c: char| c.is_whitespace()).unwrap_or(text.len());
        let mut end = span.start + punct;
        let space_before = self.raw[..last.start]
            .chars()
            .next_back()
            .is_some_and(char::is_whitespace);
        if space_before {
            end += text[punct..]
                .find(|c: char| !matches!(c, ' ' | '\t'))
                .unwrap_or(text.len() - punct);
        }
        last.end = end;
    }

    fn track_fences(&mut self, c: char, at: usize) {
        if c == '`' {
            self.backticks += 1;
            if self.backticks == 3 {
                self.fences.push(at + 1 - 3);
            }
        } else {
            self.backticks = 0;
        }
    }

    /// Count a run without content; returns a cut when it becomes a flood.
    fn track_dry_run(&mut self, c: char, at: usize) -> Option<usize> {
        if is_content(c) {
            self.dry_run = (0, 0);
            return None;
        }
        if self.dry_run.1 == 0 {
            self.dry_run.0 = at;
        }
        self.dry_run.1 += 1;
        (self.dry_run.1 >= FLOOD_CHARS).then_some(self.dry_run.0)
    }

    fn stop_at(&mut self, cut: usize, issue: Issue) {
        self.end = Some(cut.max(self.decided));
        self.stopped_for = Some(issue);
    }

    /// Look for blocked content in the undecided text. A match that touches the end of the
    /// text may still grow or turn out not to end a word, so it only holds text back.
    fn scan_terms(&mut self, complete: bool) {
        let held_match = self.term_hold.take();
        let blocklist = self.filter.blocklist();
        if blocklist.is_empty() {
            return;
        }
        let final_text = complete || self.end.is_some();
        let end = self.end.unwrap_or(self.raw.len());
        // The last look found nothing complete before the floor; a match that was still
        // growing is looked at again from its start. The final look goes over everything.
        let from = if complete {
            self.decided
        } else {
            self.decided
                .max(self.scan_floor)
                .min(held_match.unwrap_or(usize::MAX))
        };
        let Some(found) = blocklist.find_at(&self.raw[..end], from) else {
            return;
        };
        if found.end < end || final_text {
            self.stop_at(found.start, Issue::Unsafe);
        } else {
            self.term_hold = Some(found.start);
        }
    }

    /// The raw byte up to which text may be emitted now.
    fn limit(&self) -> usize {
        if matches!(self.opening, Opening::Undecided | Opening::Call) {
            return self.decided;
        }
        let mut limit = self.end.unwrap_or(self.raw.len());
        let tail = self
            .raw
            .char_indices()
            .rev()
            .nth(self.tail_chars - 1)
            .map_or(0, |(i, _)| i);
        limit = limit.min(tail);
        // Trailing blanks and punctuation wait for the next content: a reply that turns out
        // empty, or a loop cut after them, must not have sent them.
        let trailing = self.raw[..limit]
            .char_indices()
            .rev()
            .take_while(|&(_, c)| !is_content(c))
            .last()
            .map_or(limit, |(i, _)| i);
        limit = limit.min(trailing);
        if let Some(open) = self.filter.blocklist().open_from(&self.raw, self.decided) {
            limit = limit.min(open);
        }
        if let Some(hold) = self.term_hold {
            limit = limit.min(hold);
        }
        let n = self.folded.len();
        if let Some(scanner) = &self.leak {
            let oldest_open = n.saturating_sub(scanner.open());
            if oldest_open < n {
                limit = limit.min(self.folded.span(oldest_open).start);
            }
        }
        if let Some(from) = self.loops.hold_from() {
            limit = limit.min(self.folded.span(from.saturating_sub(1)).start);
        }
        if self.dry_run.1 >= FLOOD_HOLD_CHARS {
            limit = limit.min(self.dry_run.0);
        }
        limit.max(self.decided)
    }

    /// Raw text between two offsets, without leaked ranges.
    fn collect(&self, from: usize, to: usize) -> String {
        let mut out = String::new();
        let mut pos = from;
        for r in &self.leaked {
            if r.end <= pos {
                continue;
            }
            if r.start >= to {
                break;
            }
            if r.start > pos {
                out.push_str(&self.raw[pos..r.start]);
            }
            pos = r.end;
        }
        if pos < to {
            out.push_str(&self.raw[pos..to]);
        }
        out
    }

    /// Emit everything up to `limit`.
    fn take(&mut self, limit: usize) -> String {
        if limit <= self.decided {
            return String::new();
        }
        let out = self.collect(self.decided, limit);
        self.decided = limit;
        self.sent_content += content_chars(&out);
        out
    }
}
