//! The KV cache book: which tokens each llama.cpp sequence holds, and where a new prompt's
//! KV state can come from instead of being computed again.
//!
//! # Sequences
//! The context's KV cache is unified: all sequences share one pool of cells, and copying a
//! range from one sequence to another only tags the cells with the second sequence id (no
//! data moves). The sequence ids are laid out as
//! - `0..slots`: one per request that may run at once. A finished request's tokens stay in its
//!   slot, so the next turn of the same conversation finds them there (session KV reuse).
//! - `slots..slots + prefixes`: pinned common prefixes (system prompts, frequent openings),
//!   found by a hash of their token blocks.
//! - the rest: scratch sequences for beam search (see `beam.rs`).
//!
//! A conversation whose slot is taken by another one is not lost: before its cells are
//! dropped, its state is copied to RAM (`Saved`, bounded by `session_cache_mb`, least
//! recently used first out) and copied back when that conversation speaks again.
//!
//! This module only keeps the books and decides; `scheduler.rs` carries the decisions out on
//! the llama.cpp context. Keeping the two apart lets the choices be tested without a model.

use llama_cpp_2::token::LlamaToken;
use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;

/// Prefix entries are cut at multiples of this many tokens, and found by the chain hash of
/// their blocks.
pub(super) const BLOCK: usize = 16;
/// A match shorter than this is not worth a copy (a BOS token and a role marker).
const MIN_REUSE: usize = 4;
/// A common prefix is pinned only from this length on.
const MIN_PIN: usize = 32;
/// A conversation is copied to RAM before eviction only from this length on; shorter ones
/// are cheaper to read again than to keep.
const MIN_SAVE: usize = 64;
/// When a new prompt leaves at least this many of a sequence's tokens behind, the two share a
/// prefix rather than one continuing the other.
const DIVERGENCE: usize = 16;

/// Where the start of a new prompt's KV state comes from.
#[derive(Debug)]
pub(super) enum Source<S> {
    /// Nothing reused: the slot is cleared and the whole prompt is read.
    Nothing,
    /// The slot already holds the first `keep` tokens; drop the rest.
    Own,
    /// Copy the first `keep` tokens of another sequence (a running request or a pinned prefix).
    Copy { from: i32 },
    /// Load a conversation's state from RAM, then drop what is past `keep`.
    Restore { state: Arc<S> },
}

/// What to do with the KV cache before a prompt is read. Carried out in this order.
#[derive(Debug)]
pub(super) struct Plan<S> {
    /// The slot (sequence id) the request runs in.
    pub slot: usize,
    /// Copy the slot's present content to RAM first (`KvBook::store`), as it is about to be
    /// overwritten and is worth keeping.
    pub save_old: bool,
    pub source: Source<S>,
    /// Prompt tokens already in the slot once the source has been applied; reading starts
    /// here. Always below the prompt's length, so the last token is read and yields logits.
    pub keep: usize,
    /// Pin the first `n` tokens as a common prefix once the source is applied (`KvBook::pin`).
    pub pin: Option<usize>,
    /// What reuse this was, for metrics.
    pub kind: ReuseKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReuseKind {
    /// Nothing reusable.
    Miss,
    /// The same slot (usually the previous turn of the conversation).
    Slot,
    /// Another running or idle sequence's prefix.
    Shared,
    /// A pinned prefix.
    Prefix,
    /// A conversation restored from RAM.
    Restored,
}

impl ReuseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReuseKind::Miss => "miss",
            ReuseKind::Slot => "slot",
            ReuseKind::Shared => "shared",
            ReuseKind::Prefix => "prefix",
            ReuseKind::Restored => "restored",
        }
    }
}

#[derive(Debug, Default)]
struct Slot {
    /// Tokens whose KV cells this sequence holds, at positions `0..len`.
    tokens: Vec<LlamaToken>,
    busy: bool,
    last_used: u64,
}

#[derive(Debug)]
struct Prefix {
    tokens: Vec<LlamaToken>,
    hash: u64,
    last_used: u64,
}

#[derive(Debug)]
struct Saved<S> {
    tokens: Vec<LlamaToken>,
    /// Shared with a plan that restores only its start (see [`KvBook::plan`]).
    state: Arc<S>,
    bytes: usize,
    last_used: u64,
}

/// What must be dropped from the KV cache to make room (see [`KvBook::evict_one`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Eviction {
    /// An idle slot: copy it to RAM first when `save` is set, then clear it.
    Slot { seq: usize, save: bool },
    /// A pinned prefix: copy it to RAM first when `save` is set, then forget it and clear
    /// its sequence.
    Prefix { seq: usize, save: bool },
}

/// The books of one context. `S` is a saved sequence state (llama.cpp's `SeqState` in the
/// engine; anything in tests).
pub(super) struct KvBook<S> {
    slots: Vec<Slot>,
    prefixes: Vec<Option<Prefix>>,
    /// Chain hash of a prefix's blocks → its index in `prefixes`.
    by_hash: HashMap<u64, usize>,
    saved: Vec<Saved<S>>,
    saved_bytes: usize,
    saved_budget: usize,
    clock: u64,
    /// Off: every prompt is read in full (a baseline).
    reuse: bool,
    /// Bytes of saved state per token, from the last state stored (0 until then).
    bytes_per_token: usize,
    /// Cells idle content may keep in the KV cache: idle slots and the pinned prefixes no
    /// running request starts with. Past it the least recently used go to RAM. Every decode
    /// step attends over the span of used cells, so idle content left in the cache slows all
    /// the others down (measured: turn 20 of a conversation 337 → 480 ms with sixteen idle
    /// 100-token conversations beside it; 1.23x slower with an idle 1.4k-token prefix).
    idle_budget: usize,
}

impl<S> KvBook<S> {
    pub fn new(slots: usize, prefixes: usize, saved_budget_bytes: usize) -> Self {
        KvBook {
            slots: (0..slots).map(|_| Slot::default()).collect(),
            prefixes: (0..prefixes).map(|_| None).collect(),
            by_hash: HashMap::new(),
            saved: Vec::new(),
            saved_bytes: 0,
            saved_budget: saved_budget_bytes,
            clock: 0,
            reuse: true,
            bytes_per_token: 0,
            idle_budget: usize::MAX,
        }
    }

    /// Cells idle content may keep in the cache (`usize::MAX`: no limit).
    pub fn idle_budget(&self) -> usize {
        self.idle_budget
    }

    /// Whether KV state is reused across requests at all.
    pub fn reuses(&self) -> bool {
        self.reuse
    }

    /// Keep at most `tokens` of idle conversations in the KV cache.
    pub fn with_idle_budget(mut self, tokens: usize) -> Self {
        self.idle_budget = tokens;
        self
    }

    /// The least recently used idle content to move out while it holds more cells than the
    /// idle budget: an idle slot or a pinned prefix that no running request starts with.
    /// Cells a slot shares with a pinned prefix are counted once, with the prefix. The caller
    /// carries the eviction out (saving to RAM when asked to).
    pub fn idle_excess(&self) -> Option<Eviction> {
        self.idle_excess_over(self.idle_budget, false)
    }

    /// Like [`KvBook::idle_excess`], when a request has just started: with the RAM tier on,
    /// everything it does not use leaves the cache (llama-server does the same with its idle
    /// slots). Restoring a conversation from RAM copies a few megabytes; keeping it costs
    /// every running request attention over its cells on every token (for a 135M model a
    /// thousand idle cells add about a quarter to a decode step).
    /// Content whose state would not fit in RAM stays (it could only be read again).
    pub fn admission_excess(&self) -> Option<Eviction> {
        if !self.reuse || self.saved_budget == 0 {
            return None;
        }
        self.idle_excess_over(0, true)
    }

    fn idle_excess_over(&self, budget: usize, admission: bool) -> Option<Eviction> {
        if budget == usize::MAX {
            return None;
        }
        // At admission, only what RAM can take (as far as the states seen so far tell).
        let movable = |e: &Eviction| {
            let (Eviction::Slot { seq, save } | Eviction::Prefix { seq, save }) = *e;
            let bytes = self
                .seq_tokens(seq)
                .len()
                .saturating_mul(self.bytes_per_token);
            !admission || !save || bytes <= self.saved_budget
        };
        let idle_prefix = |p: &Prefix| {
            !self
                .slots
                .iter()
                .any(|s| s.busy && s.tokens.starts_with(&p.tokens))
        };
        let mut idle = 0;
        // (last use, eviction) of each idle item
        let mut items = Vec::new();
        for (i, p) in self.prefixes.iter().enumerate() {
            if let Some(p) = p.as_ref().filter(|p| idle_prefix(p)) {
                idle += p.tokens.len();
                let eviction = self.prefix_eviction(self.prefix_seq(i));
                if movable(&eviction) {
                    items.push((p.last_used, eviction));
                }
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            if s.busy || s.tokens.is_empty() {
                continue;
            }
            let shared = self
                .prefixes
                .iter()
                .flatten()
                .filter(|p| s.tokens.starts_with(&p.tokens))
                .map(|p| p.tokens.len())
                .max()
                .unwrap_or(0);
            idle += s.tokens.len() - shared;
            let eviction = self.slot_eviction(i);
            if movable(&eviction) {
                items.push((s.last_used, eviction));
            }
        }
        if idle <= budget {
            return None;
        }
        items.into_iter().min_by_key(|&(t, _)| t).map(|(_, e)| e)
    }

    /// Moving pinned prefix `seq` out: saved to RAM first unless a conversation that starts
    /// with it is kept already (in RAM or in a slot), or it is short.
    pub fn prefix_eviction(&self, seq: usize) -> Eviction {
        let tokens = self.seq_tokens(seq);
        let covered = self.saved.iter().any(|s| s.tokens.starts_with(tokens))
            || self.slots.iter().any(|s| s.tokens.starts_with(tokens));
        Eviction::Prefix {
            seq,
            save: self.saved_budget > 0 && tokens.len() >= MIN_SAVE && !covered,
        }
    }

    /// The least recently used idle slot that holds tokens.
    fn lru_idle_slot(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy && !s.tokens.is_empty())
            .min_by_key(|(_, s)| s.last_used)
            .map(|(i, _)| i)
    }

    /// The least recently used pinned prefix (its index in `prefixes`).
    fn lru_prefix(&self) -> Option<usize> {
        self.prefixes
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i, p.last_used)))
            .min_by_key(|&(_, t)| t)
            .map(|(i, _)| i)
    }

    /// Moving idle slot `seq` out: saved to RAM first when that is worth it (long enough,
    /// and the RAM tier is on); shorter ones are cheaper to read again than to keep.
    pub fn slot_eviction(&self, seq: usize) -> Eviction {
        Eviction::Slot {
            seq,
            save: self.saved_budget > 0 && self.slots[seq].tokens.len() >= MIN_SAVE,
        }
    }

    /// A book that never reuses anything: every prompt is read in full.
    pub fn without_reuse(slots: usize) -> Self {
        KvBook {
            reuse: false,
            ..KvBook::new(slots, 0, 0)
        }
    }

    /// Sequence id of prefix entry `i`.
    fn prefix_seq(&self, i: usize) -> usize {
        self.slots.len() + i
    }

    /// Sequences the context needs for slots and prefixes.
    pub fn sequences(&self) -> usize {
        self.slots.len() + self.prefixes.len()
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    pub fn has_idle_slot(&self) -> bool {
        self.slots.iter().any(|s| !s.busy)
    }

    pub fn slot_tokens(&self, slot: usize) -> &[LlamaToken] {
        &self.slots[slot].tokens
    }

    /// The tokens sequence `seq` holds: a slot's, or a pinned prefix's (empty if none).
    pub fn seq_tokens(&self, seq: usize) -> &[LlamaToken] {
        match seq.checked_sub(self.slots.len()) {
            None => &self.slots[seq].tokens,
            Some(i) => self
                .prefixes
                .get(i)
                .and_then(Option::as_ref)
                .map_or(&[], |p| &p.tokens),
        }
    }

    /// Conversations kept in RAM, and their bytes.
    pub fn saved_usage(&self) -> (usize, usize) {
        (self.saved.len(), self.saved_bytes)
    }

    pub fn pinned(&self) -> usize {
        self.prefixes.iter().flatten().count()
    }

    /// Decide where `prompt` runs and what it reuses; `None` when every slot is busy.
    /// The slot is marked busy; [`KvBook::release`] frees it.
    pub fn plan(&mut self, prompt: &[LlamaToken]) -> Option<Plan<S>> {
        // The last prompt token is always read again: its logits start the answer.
        let cap = if self.reuse {
            prompt.len().saturating_sub(1)
        } else {
            0
        };
        let now = self.tick();

        // The best source among the slots (running ones too: their first cells are final).
        let mut best_slot: Option<(usize, usize)> = None;
        for (i, s) in self.slots.iter().enumerate() {
            let l = common_prefix(&s.tokens, prompt).min(cap);
            let better = match best_slot {
                None => true,
                // Prefer an idle slot on ties: it needs no copy.
                Some((j, bl)) => l > bl || (l == bl && self.slots[j].busy && !s.busy),
            };
            if better {
                best_slot = Some((i, l));
            }
        }
        let (prefix_hit, prefix_len) = match self.find_prefix(prompt) {
            Some((i, l)) => (Some(i), l.min(cap)),
            None => (None, 0),
        };
        let (saved_hit, saved_len) = self
            .saved
            .iter()
            .enumerate()
            .map(|(i, s)| (i, common_prefix(&s.tokens, prompt).min(cap)))
            .max_by_key(|&(_, l)| l)
            .map_or((None, 0), |(i, l)| (Some(i), l));
        let (slot_hit, slot_len) = best_slot.map_or((None, 0), |(i, l)| (Some(i), l));

        enum From {
            Slot(usize),
            Prefix(usize),
            Saved(usize),
            Nothing,
        }
        let mut from = From::Nothing;
        let mut len = 0;
        // Ties go to the cheapest source: a slot, then a prefix, then RAM.
        if slot_len >= MIN_REUSE {
            from = From::Slot(slot_hit.unwrap_or(0));
            len = slot_len;
        }
        if prefix_len >= MIN_REUSE && prefix_len > len {
            from = From::Prefix(prefix_hit.unwrap_or(0));
            len = prefix_len;
        }
        if saved_len >= MIN_REUSE && saved_len > len {
            from = From::Saved(saved_hit.unwrap_or(0));
            len = saved_len;
        }

        // The slot: the source itself when it is idle, else an idle one, emptiest and least
        // recently used first.
        let target = match from {
            From::Slot(i) if !self.slots[i].busy => i,
            _ => self.pick_idle()?,
        };
        let old_len = self.slots[target].tokens.len();
        let (source, kind, source_len) = match from {
            From::Slot(i) if i == target => (Source::Own, ReuseKind::Slot, old_len),
            From::Slot(i) => (
                Source::Copy { from: seq_id(i) },
                ReuseKind::Shared,
                self.slots[i].tokens.len(),
            ),
            From::Prefix(p) => {
                if let Some(e) = self.prefixes[p].as_mut() {
                    e.last_used = now;
                }
                (
                    Source::Copy {
                        from: seq_id(self.prefix_seq(p)),
                    },
                    ReuseKind::Prefix,
                    usize::MAX,
                )
            }
            From::Saved(i) => {
                let n = self.saved[i].tokens.len();
                // A conversation that continues here leaves RAM (its next save replaces it);
                // one whose start only is taken (a shared system prompt) stays for its own
                // next turn.
                let state = if n.saturating_sub(len) < DIVERGENCE {
                    let saved = self.saved.swap_remove(i);
                    self.saved_bytes -= saved.bytes;
                    saved.state
                } else {
                    self.saved[i].last_used = now;
                    Arc::clone(&self.saved[i].state)
                };
                (Source::Restore { state }, ReuseKind::Restored, n)
            }
            From::Nothing => (Source::Nothing, ReuseKind::Miss, 0),
        };
        let keep = if matches!(source, Source::Nothing) {
            0
        } else {
            len
        };

        // The slot's old conversation goes to RAM when the new prompt does not continue it.
        let kept_in_place = if matches!(source, Source::Own) {
            keep
        } else {
            0
        };
        let save_old = self.reuse
            && self.saved_budget > 0
            && old_len >= MIN_SAVE
            && old_len - kept_in_place >= DIVERGENCE;

        // Two different conversations share the first `keep` tokens: pin them, unless a pinned
        // prefix covers them already.
        let pin_len = keep / BLOCK * BLOCK;
        let pin = (!self.prefixes.is_empty()
            && kind != ReuseKind::Prefix
            && pin_len >= MIN_PIN
            && pin_len > prefix_len
            && source_len.saturating_sub(keep) >= DIVERGENCE)
            .then_some(pin_len);

        let slot = &mut self.slots[target];
        slot.busy = true;
        slot.last_used = now;
        Some(Plan {
            slot: target,
            save_old,
            source,
            keep,
            pin,
            kind,
        })
    }

    fn pick_idle(&self) -> Option<usize> {
        self.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.busy)
            .min_by_key(|(_, s)| (!s.tokens.is_empty(), s.last_used))
            .map(|(i, _)| i)
    }

    /// The longest pinned prefix that starts `prompt`: (entry index, length).
    fn find_prefix(&self, prompt: &[LlamaToken]) -> Option<(usize, usize)> {
        if self.by_hash.is_empty() {
            return None;
        }
        let mut hasher = DefaultHasher::new();
        let mut best = None;
        for (b, block) in prompt.chunks_exact(BLOCK).enumerate() {
            block.hash(&mut hasher);
            let h = hasher.finish();
            if let Some(&i) = self.by_hash.get(&h) {
                let n = (b + 1) * BLOCK;
                // The hash only points; the tokens decide.
                if self.prefixes[i]
                    .as_ref()
                    .is_some_and(|p| p.tokens[..] == prompt[..n])
                {
                    best = Some((i, n));
                }
            }
        }
        best
    }

    /// The content of `slot` after the plan's source was applied: the first `keep` prompt
    /// tokens.
    pub fn set_slot(&mut self, slot: usize, tokens: &[LlamaToken]) {
        let s = &mut self.slots[slot];
        s.tokens.clear();
        s.tokens.extend_from_slice(tokens);
    }

    /// Tokens were read into `slot` at the end of its sequence.
    pub fn extend_slot(&mut self, slot: usize, tokens: &[LlamaToken]) {
        self.slots[slot].tokens.extend_from_slice(tokens);
    }

    /// The request in `slot` ended; its tokens stay for the next turn.
    pub fn release(&mut self, slot: usize) {
        let now = self.tick();
        let s = &mut self.slots[slot];
        s.busy = false;
        s.last_used = now;
    }

    /// The slot's cells were dropped (after an error, or to make room).
    pub fn clear_slot(&mut self, slot: usize) {
        self.slots[slot].tokens.clear();
    }

    /// Register `tokens` (the first `n` of a slot) as a pinned prefix. Returns the sequence
    /// to copy them into; the caller clears that sequence first (it may hold an evicted
    /// entry). `None` when the prefix cache is off.
    pub fn pin(&mut self, tokens: &[LlamaToken]) -> Option<usize> {
        if self.prefixes.is_empty() || tokens.len() < BLOCK {
            return None;
        }
        let tokens = &tokens[..tokens.len() / BLOCK * BLOCK];
        let now = self.tick();
        let i = match self.prefixes.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                let i = self.lru_prefix()?;
                self.drop_prefix(i);
                i
            }
        };
        let mut hasher = DefaultHasher::new();
        for block in tokens.chunks_exact(BLOCK) {
            block.hash(&mut hasher);
        }
        let hash = hasher.finish();
        if let Some(old) = self.by_hash.insert(hash, i) {
            // The same prefix pinned twice (two requests racing): keep the newer entry.
            if old != i {
                self.prefixes[old] = None;
            }
        }
        self.prefixes[i] = Some(Prefix {
            tokens: tokens.to_vec(),
            hash,
            last_used: now,
        });
        Some(self.prefix_seq(i))
    }

    fn drop_prefix(&mut self, i: usize) {
        if let Some(p) = self.prefixes[i].take() {
            if self.by_hash.get(&p.hash) == Some(&i) {
                self.by_hash.remove(&p.hash);
            }
        }
    }

    /// Keep a sequence's state in RAM (the tokens of slot or pinned prefix `seq`, whose
    /// state was just copied out). Older entries leave when the budget is exceeded; a state
    /// larger than the whole budget is not kept.
    pub fn store(&mut self, seq: usize, state: S, bytes: usize) {
        self.bytes_per_token = bytes / self.seq_tokens(seq).len().max(1);
        if bytes > self.saved_budget {
            return;
        }
        let tokens = self.seq_tokens(seq).to_vec();
        // A saved conversation that this one continues is stale now.
        self.saved.retain(|s| {
            let stale = tokens.starts_with(&s.tokens);
            if stale {
                self.saved_bytes -= s.bytes;
            }
            !stale
        });
        let now = self.tick();
        self.saved.push(Saved {
            tokens,
            state: Arc::new(state),
            bytes,
            last_used: now,
        });
        self.saved_bytes += bytes;
        while self.saved_bytes > self.saved_budget {
            let Some((oldest, _)) = self
                .saved
                .iter()
                .enumerate()
                .min_by_key(|(_, s)| s.last_used)
            else {
                break;
            };
            let gone = self.saved.swap_remove(oldest);
            self.saved_bytes -= gone.bytes;
        }
    }

    /// Idle slots that hold tokens, most recently used first: `(slot, tokens)`.
    pub fn idle_slots(&self) -> Vec<(usize, usize)> {
        recent_first(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| !s.busy && !s.tokens.is_empty())
                .map(|(i, s)| ((i, s.tokens.len()), s.last_used)),
        )
    }

    /// Pinned prefixes, most recently used first: `(sequence id, tokens)`.
    pub fn pinned_seqs(&self) -> Vec<(usize, usize)> {
        recent_first(self.prefixes.iter().enumerate().filter_map(|(i, p)| {
            p.as_ref()
                .map(|p| ((self.prefix_seq(i), p.tokens.len()), p.last_used))
        }))
    }

    /// Forget the prefix held in sequence `seq` (its cells are gone).
    pub fn unpin_seq(&mut self, seq: usize) {
        if let Some(i) = seq.checked_sub(self.slots.len()) {
            if i < self.prefixes.len() {
                self.drop_prefix(i);
            }
        }
    }

    /// The next thing to drop when the KV cache is full: the least recently used idle slot
    /// with content, else the least recently used pinned prefix. The book forgets a prefix at
    /// once; for a slot the caller saves it to RAM when asked to, then clears it.
    pub fn evict_one(&mut self) -> Option<Eviction> {
        if let Some(seq) = self.lru_idle_slot() {
            return Some(self.slot_eviction(seq));
        }
        let i = self.lru_prefix()?;
        self.drop_prefix(i);
        Some(Eviction::Prefix {
            seq: self.prefix_seq(i),
            save: false,
        })
    }
}

/// Items by their last use, most recent first.
fn recent_first<T>(items: impl Iterator<Item = (T, u64)>) -> Vec<T> {
    let mut items: Vec<(T, u64)> = items.collect();
    items.sort_by_key(|&(_, t)| std::cmp::Reverse(t));
    items.into_iter().map(|(x, _)| x).collect()
}

/// llama.cpp sequence ids are `i32`; ours are bounded by the context's `n_seq_max` (≤ 256).
pub(super) fn seq_id(i: usize) -> i32 {
    i32::try_from(i).unwrap_or(i32::MAX)
}

fn common_prefix(a: &[LlamaToken], b: &[LlamaToken]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(range: std::ops::Range<i32>) -> Vec<LlamaToken> {
        range.map(LlamaToken).collect()
    }

    fn cat(a: &[LlamaToken], b: &[LlamaToken]) -> Vec<LlamaToken> {
        [a, b].concat()
    }

    /// Run a plan's bookkeeping the way the scheduler does, without a model.
    fn apply(
        book: &mut KvBook<Vec<LlamaToken>>,
        plan: Plan<Vec<LlamaToken>>,
        prompt: &[LlamaToken],
    ) {
        if plan.save_old {
            let state = book.slot_tokens(plan.slot).to_vec();
            let bytes = state.len();
            book.store(plan.slot, state, bytes);
        }
        if let Source::Restore { state } = &plan.source {
            assert_eq!(state[..plan.keep], prompt[..plan.keep]);
        }
        book.set_slot(plan.slot, &prompt[..plan.keep]);
        if let Some(n) = plan.pin {
            book.pin(&prompt[..n]);
        }
        book.extend_slot(plan.slot, &prompt[plan.keep..]);
    }

    /// A whole request that reuses nothing worth checking: plan, apply, release.
    fn past_turn(book: &mut KvBook<Vec<LlamaToken>>, prompt: &[LlamaToken]) {
        let plan = book.plan(prompt).unwrap();
        let slot = plan.slot;
        apply(book, plan, prompt);
        book.release(slot);
    }

    #[test]
    fn next_turn_reuses_its_own_slot() {
        let mut book = KvBook::new(2, 2, 1 << 20);
        let turn1 = toks(0..100);
        let plan = book.plan(&turn1).unwrap();
        assert_eq!((plan.kind, plan.keep), (ReuseKind::Miss, 0));
        let slot = plan.slot;
        apply(&mut book, plan, &turn1);
        book.release(slot);

        let turn2 = cat(&turn1, &toks(500..540));
        let plan = book.plan(&turn2).unwrap();
        assert_eq!(plan.slot, slot);
        assert_eq!((plan.kind, plan.keep), (ReuseKind::Slot, 100));
        assert!(!plan.save_old && plan.pin.is_none());
    }

    #[test]
    fn an_identical_prompt_still_reads_its_last_token() {
        let mut book = KvBook::new(1, 0, 0);
        let p = toks(0..50);
        past_turn(&mut book, &p);
        let plan = book.plan(&p).unwrap();
        assert_eq!(plan.keep, 49);
    }

    #[test]
    fn a_shared_system_prompt_is_copied_and_pinned() {
        let mut book = KvBook::new(2, 2, 1 << 20);
        let system = toks(0..70);
        let a = cat(&system, &toks(1000..1100));
        let b = cat(&system, &toks(2000..2020));
        let plan = book.plan(&a).unwrap();
        let slot_a = plan.slot;
        apply(&mut book, plan, &a);
        // A is still running: B copies the system prompt from A's sequence.
        let plan = book.plan(&b).unwrap();
        assert_ne!(plan.slot, slot_a);
        assert!(matches!(plan.source, Source::Copy { from } if from == seq_id(slot_a)));
        assert_eq!((plan.kind, plan.keep), (ReuseKind::Shared, 70));
        assert_eq!(plan.pin, Some(64));
        let slot_b = plan.slot;
        apply(&mut book, plan, &b);
        book.release(slot_a);
        book.release(slot_b);
        assert_eq!(book.pinned(), 1);
        // A third conversation finds the system prompt in a slot first (cheaper than the pin).
        let c = cat(&system, &toks(3000..3010));
        let plan = book.plan(&c).unwrap();
        assert_eq!(plan.keep, 70);
    }

    #[test]
    fn an_overwritten_conversation_goes_to_ram_and_comes_back() {
        let mut book = KvBook::new(1, 2, 1 << 20);
        let system = toks(0..40);
        let a1 = cat(&system, &toks(1000..1100));
        past_turn(&mut book, &a1);

        // Another conversation takes the only slot: A is saved, the system prompt pinned.
        let b = cat(&system, &toks(2000..2100));
        let plan = book.plan(&b).unwrap();
        assert!(plan.save_old);
        assert_eq!(
            (plan.kind, plan.keep, plan.pin),
            (ReuseKind::Slot, 40, Some(32))
        );
        apply(&mut book, plan, &b);
        book.release(0);
        assert_eq!(book.saved_usage().0, 1);

        // A's next turn is restored from RAM rather than read again.
        let a2 = cat(&a1, &toks(5000..5010));
        let plan = book.plan(&a2).unwrap();
        assert_eq!((plan.kind, plan.keep), (ReuseKind::Restored, 140));
        assert!(plan.save_old, "B goes to RAM in turn");
        apply(&mut book, plan, &a2);
        assert_eq!(book.saved_usage().0, 1, "A left RAM, B entered it");
    }

    #[test]
    fn ram_budget_drops_the_oldest_conversation() {
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::new(1, 0, 250);
        for k in 0..4 {
            past_turn(&mut book, &toks(k * 1000..k * 1000 + 100));
        }
        // Three conversations were pushed out; each is 100 "bytes" and the budget holds two.
        assert_eq!(book.saved_usage(), (2, 200));
        let oldest = toks(0..100);
        assert_eq!(book.plan(&oldest).unwrap().kind, ReuseKind::Miss);
    }

    #[test]
    fn without_reuse_every_prompt_is_read_in_full() {
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::without_reuse(1);
        let p = toks(0..100);
        for _ in 0..2 {
            let plan = book.plan(&p).unwrap();
            assert_eq!(
                (plan.kind, plan.keep, plan.save_old),
                (ReuseKind::Miss, 0, false)
            );
            apply(&mut book, plan, &p);
            book.release(0);
        }
    }

    #[test]
    fn idle_conversations_past_the_budget_leave_oldest_first() {
        let mut book: KvBook<()> = KvBook::new(3, 0, 1 << 20).with_idle_budget(150);
        for (i, len) in [100, 100, 30].into_iter().enumerate() {
            let p = toks(i as i32 * 1000..i as i32 * 1000 + len);
            let plan = book.plan(&p).unwrap();
            book.set_slot(plan.slot, &p);
            book.release(plan.slot);
        }
        // 230 idle tokens: the oldest (slot 0) goes; 130 are within the budget.
        assert_eq!(
            book.idle_excess(),
            Some(Eviction::Slot { seq: 0, save: true })
        );
        book.clear_slot(0);
        assert_eq!(book.idle_excess(), None);
    }

    /// Two requests under one system prompt at once: the second copies the first one's
    /// system prompt and pins it. Both are still running. Returns their prompts and slots.
    fn two_sharing(
        book: &mut KvBook<Vec<LlamaToken>>,
        system: &[LlamaToken],
    ) -> ([Vec<LlamaToken>; 2], [usize; 2]) {
        let (p1, p2) = (cat(system, &toks(100..180)), cat(system, &toks(200..210)));
        let plan1 = book.plan(&p1).unwrap();
        let slot1 = plan1.slot;
        apply(book, plan1, &p1);
        let plan2 = book.plan(&p2).unwrap();
        let slot2 = plan2.slot;
        assert_eq!(
            (plan2.kind, plan2.pin),
            (ReuseKind::Shared, Some(system.len())),
            "{plan2:?}"
        );
        apply(book, plan2, &p2);
        ([p1, p2], [slot1, slot2])
    }

    /// Carry out an eviction's bookkeeping the way the scheduler does (a saved state is the
    /// sequence's tokens).
    fn carry_out(book: &mut KvBook<Vec<LlamaToken>>, eviction: Eviction) {
        let (Eviction::Slot { seq, save } | Eviction::Prefix { seq, save }) = eviction;
        if save {
            let state = book.seq_tokens(seq).to_vec();
            let bytes = state.len();
            book.store(seq, state, bytes);
        }
        match eviction {
            Eviction::Slot { seq, .. } => book.clear_slot(seq),
            Eviction::Prefix { seq, .. } => book.unpin_seq(seq),
        }
    }

    #[test]
    fn an_idle_prefix_counts_toward_the_idle_budget_and_a_running_one_does_not() {
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::new(3, 2, 1 << 20).with_idle_budget(100);
        let system = toks(1000..1128);
        let ([p1, _], [slot1, slot2]) = two_sharing(&mut book, &system);
        // The second ends: its 10 own tokens are idle; the prefix is still read by the first.
        book.release(slot2);
        assert_eq!(book.idle_excess(), None);
        // Both idle: 128 (prefix) + 80 + 10 > 100. The prefix was used least recently; the
        // slots that start with it keep its tokens, so it is not saved.
        book.release(slot1);
        let prefix_seq = 3;
        assert_eq!(
            book.idle_excess(),
            Some(Eviction::Prefix {
                seq: prefix_seq,
                save: false
            })
        );
        carry_out(
            &mut book,
            Eviction::Prefix {
                seq: prefix_seq,
                save: false,
            },
        );
        assert_eq!(book.pinned(), 0);
        // Then the conversations, oldest first, until 100 cells are left at most.
        let mut evicted = Vec::new();
        while let Some(eviction) = book.idle_excess() {
            evicted.push(eviction);
            carry_out(&mut book, evicted[evicted.len() - 1].clone());
        }
        assert_eq!(
            evicted,
            [
                Eviction::Slot {
                    seq: slot2,
                    save: true
                },
                Eviction::Slot {
                    seq: slot1,
                    save: true
                }
            ]
        );
        // A later request under the same system prompt finds it in RAM.
        let p3 = cat(&system, &toks(300..320));
        let plan3 = book.plan(&p3).unwrap();
        assert_eq!((plan3.kind, plan3.keep), (ReuseKind::Restored, 128));
        // Only its start was taken: the saved conversation stays for its own next turn.
        assert_eq!(book.saved_usage().0, 2);
        let p1_next = cat(&p1, &toks(400..410));
        let plan = book.plan(&p1_next).unwrap();
        assert_eq!((plan.kind, plan.keep), (ReuseKind::Restored, p1.len()));
        assert_eq!(
            book.saved_usage().0,
            1,
            "a continued conversation leaves RAM"
        );
    }

    #[test]
    fn an_idle_prefix_no_conversation_holds_is_saved_before_it_goes() {
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::new(1, 1, 1 << 20).with_idle_budget(50);
        let system = toks(0..96);
        assert_eq!(book.pin(&system), Some(1));
        let eviction = book.idle_excess().unwrap();
        assert_eq!(eviction, Eviction::Prefix { seq: 1, save: true });
        carry_out(&mut book, eviction);
        assert_eq!((book.pinned(), book.saved_usage().0), (0, 1));
        assert_eq!(book.idle_excess(), None);
        let prompt = cat(&system, &toks(500..510));
        let plan = book.plan(&prompt).unwrap();
        assert_eq!((plan.kind, plan.keep), (ReuseKind::Restored, 96));
    }

    #[test]
    fn a_starting_request_sends_the_idle_content_it_does_not_use_to_ram() {
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::new(3, 2, 1 << 20).with_idle_budget(1000);
        let (a, b) = (toks(0..100), toks(1000..1100));
        past_turn(&mut book, &a);
        past_turn(&mut book, &b);
        // Nothing runs: idle content within the budget stays.
        assert_eq!(book.idle_excess(), None);
        // The next turn of `b` uses its own slot; only `a` has to go.
        let b2 = cat(&b, &toks(5000..5010));
        let plan = book.plan(&b2).unwrap();
        let slot_b = plan.slot;
        apply(&mut book, plan, &b2);
        let eviction = book.admission_excess().unwrap();
        let Eviction::Slot { seq: slot_a, save } = eviction else {
            panic!("{eviction:?}")
        };
        assert!(save && slot_a != slot_b);
        carry_out(&mut book, eviction);
        assert_eq!(book.admission_excess(), None);
        book.release(slot_b);
        // `a` comes back from RAM.
        let a2 = cat(&a, &toks(6000..6010));
        let plan = book.plan(&a2).unwrap();
        assert_eq!((plan.kind, plan.keep), (ReuseKind::Restored, 100));

        // A state RAM could not hold stays in the cache: 100 tokens at 20 bytes each are
        // more than a 1000-byte tier.
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::new(3, 0, 1000).with_idle_budget(1000);
        past_turn(&mut book, &a);
        book.store(0, Vec::new(), 2000);
        assert_eq!(book.saved_usage().0, 0);
        let plan = book.plan(&b).unwrap();
        apply(&mut book, plan, &b);
        assert_eq!(book.admission_excess(), None);

        // Without a RAM tier nothing leaves: it could only be read again.
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::new(2, 0, 0);
        past_turn(&mut book, &a);
        let plan = book.plan(&b).unwrap();
        apply(&mut book, plan, &b);
        assert_eq!(book.admission_excess(), None);
    }

    #[test]
    fn all_busy_means_no_plan() {
        let mut book: KvBook<()> = KvBook::new(2, 0, 0);
        assert!(book.plan(&toks(0..10)).is_some());
        assert!(book.plan(&toks(0..10)).is_some());
        assert!(book.plan(&toks(0..10)).is_none());
        book.release(1);
        assert_eq!(book.plan(&toks(0..10)).map(|p| p.slot), Some(1));
    }

    #[test]
    fn pinned_prefix_is_found_by_block_hash_and_evicted_lru() {
        let mut book: KvBook<()> = KvBook::new(1, 2, 0);
        let p1 = toks(0..64);
        let p2 = toks(100..164);
        let p3 = toks(200..264);
        assert_eq!(book.pin(&p1), Some(1));
        assert_eq!(book.pin(&p2), Some(2));
        assert_eq!(book.find_prefix(&cat(&p1, &toks(900..910))), Some((0, 64)));
        // An entry matches whole or not at all.
        assert_eq!(book.find_prefix(&toks(0..40)), None);
        // p1 is the least recently used: it makes room for p3.
        assert_eq!(book.pin(&p3), Some(1));
        assert_eq!(book.find_prefix(&p1), None);
        assert_eq!(book.find_prefix(&p3), Some((0, 64)));
        assert_eq!(
            book.evict_one(),
            Some(Eviction::Prefix {
                seq: 2,
                save: false
            })
        );
    }

    #[test]
    fn compaction_lists_idle_slots_and_prefixes_and_forgets_a_lost_prefix() {
        let mut book: KvBook<Vec<LlamaToken>> = KvBook::new(3, 2, 1 << 20);
        let system = toks(1000..1064);
        let (_, [slot1, slot2]) = two_sharing(&mut book, &system);
        book.release(slot1);
        book.release(slot2);
        let pinned = book.pinned_seqs();
        assert_eq!(pinned.len(), 1, "the shared system prompt is pinned");
        assert!(
            pinned[0].0 >= 3,
            "prefix sequences come after the 3 slots: {pinned:?}"
        );
        assert_eq!(pinned[0].1, 64);
        // Idle slots with tokens, the most recently used first; long ones would be saved.
        assert_eq!(book.idle_slots(), [(slot2, 74), (slot1, 144)]);
        assert_eq!(
            book.slot_eviction(slot1),
            Eviction::Slot {
                seq: slot1,
                save: true
            }
        );
        // A prefix whose cells could not be kept is forgotten: the next prompt misses.
        book.unpin_seq(pinned[0].0);
        assert!(book.pinned_seqs().is_empty());
        book.clear_slot(slot1);
        book.clear_slot(slot2);
        let prompt = cat(&system, &toks(900..910));
        let plan = book.plan(&prompt).unwrap();
        assert_eq!(plan.kind, ReuseKind::Miss, "{plan:?}");
    }

    #[test]
    fn eviction_prefers_idle_slots_and_saves_long_ones() {
        let mut book: KvBook<()> = KvBook::new(2, 1, 1 << 20);
        let long = toks(0..100);
        let plan = book.plan(&long).unwrap();
        book.set_slot(plan.slot, &long);
        let busy = book.plan(&toks(500..600)).unwrap();
        book.set_slot(busy.slot, &toks(500..600));
        book.release(plan.slot);
        assert_eq!(
            book.evict_one(),
            Some(Eviction::Slot {
                seq: plan.slot,
                save: true
            })
        );
    }
}
