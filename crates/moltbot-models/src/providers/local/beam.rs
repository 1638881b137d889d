//! Beam search over llama.cpp sequences.
//!
//! Each live hypothesis owns one sequence id: the request's slot, or a scratch sequence lent
//! by the scheduler. The KV cache of a hypothesis' sequence holds the prompt and all of its
//! tokens but the last, which is fed at the next step. When a hypothesis has several children,
//! the first keeps its parent's sequence and the others get the sequences of hypotheses that
//! died, with the parent's cells copied in (a metadata copy in the unified KV cache).
//!
//! Scores are summed log-probabilities; finished hypotheses are compared by their score per
//! token so that short answers do not win by being short.

use llama_cpp_2::token::LlamaToken;

/// One hypothesis.
#[derive(Debug, Clone)]
pub(super) struct Hyp {
    pub seq: i32,
    /// Generated tokens; all but the last are in the sequence's KV cells.
    pub tokens: Vec<LlamaToken>,
    pub logprob: f32,
    /// Where this hypothesis' logits are in the last batch.
    pub logits_at: Option<i32>,
}

impl Hyp {
    fn normalized(&self) -> f32 {
        self.logprob / (self.tokens.len().max(1) as f32)
    }
}

/// A candidate continuation: hypothesis index, token, the token's log-probability.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Cand {
    pub parent: usize,
    pub token: LlamaToken,
    pub logprob: f32,
}

#[derive(Debug)]
pub(super) struct Beam {
    pub width: usize,
    /// Position of the first generated token (the prompt's length).
    pub base: usize,
    pub live: Vec<Hyp>,
    /// Finished hypotheses (their end-of-generation token not included).
    pub done: Vec<Hyp>,
    /// Every sequence this search owns; `seqs[0]` is the request's slot.
    pub seqs: Vec<i32>,
    /// Generated tokens already handed out by [`Beam::take_settled`].
    pub streamed: usize,
}

/// What the scheduler must do to the KV cache after a step: copy the whole of sequence
/// `from` into `to` (which is cleared first).
#[derive(Debug, PartialEq, Eq)]
pub(super) struct SeqCopy {
    pub from: i32,
    pub to: i32,
}

impl Beam {
    /// A search from a prompt of `base` tokens held in `seqs[0]`.
    pub fn new(width: usize, base: usize, seqs: Vec<i32>) -> Beam {
        let root = Hyp {
            seq: seqs[0],
            tokens: Vec::new(),
            logprob: 0.0,
            logits_at: None,
        };
        Beam {
            width,
            base,
            live: vec![root],
            done: Vec::new(),
            seqs,
            streamed: 0,
        }
    }

    /// The tokens that every hypothesis still in the running (live or finished) starts
    /// with, past those handed out before. Whichever wins, the answer begins with them, so
    /// they can be streamed while the search goes on.
    pub fn take_settled(&mut self) -> Vec<LlamaToken> {
        let mut hyps = self.live.iter().chain(&self.done);
        let Some(first) = hyps.next() else {
            return Vec::new();
        };
        let shared = hyps.fold(first.tokens.len(), |n, h| {
            first.tokens[..n]
                .iter()
                .zip(&h.tokens)
                .take_while(|(a, b)| a == b)
                .count()
        });
        if shared <= self.streamed {
            return Vec::new();
        }
        let out = first.tokens[self.streamed..shared].to_vec();
        self.streamed = shared;
        out
    }

    /// Keep the best `width` continuations among `cands`; hypotheses ending with an
    /// end-of-generation token are finished. Returns the copies to make so that each new
    /// hypothesis' sequence holds its parent's cells.
    pub fn advance(
        &mut self,
        mut cands: Vec<Cand>,
        is_end: impl Fn(LlamaToken) -> bool,
    ) -> Vec<SeqCopy> {
        cands.sort_by(|a, b| {
            let sa = self.live[a.parent].logprob + a.logprob;
            let sb = self.live[b.parent].logprob + b.logprob;
            sb.total_cmp(&sa)
        });
        let mut next: Vec<(usize, LlamaToken, f32)> = Vec::with_capacity(self.width);
        for (rank, c) in cands.iter().enumerate() {
            if next.len() == self.width {
                break;
            }
            let parent = &self.live[c.parent];
            let score = parent.logprob + c.logprob;
            if is_end(c.token) {
                // An ending counts only while it ranks among the best `width`.
                if rank < self.width {
                    self.done.push(Hyp {
                        seq: -1,
                        tokens: parent.tokens.clone(),
                        logprob: score,
                        logits_at: None,
                    });
                }
                continue;
            }
            next.push((c.parent, c.token, score));
        }

        // Sequences: the first child of a parent keeps the parent's; the rest take free ones.
        let mut taken = vec![false; self.live.len()];
        let mut first_child_of = vec![None; self.live.len()];
        for (i, &(p, _, _)) in next.iter().enumerate() {
            if first_child_of[p].is_none() {
                first_child_of[p] = Some(i);
                taken[p] = true;
            }
        }
        let mut free: Vec<i32> = self
            .seqs
            .iter()
            .copied()
            .filter(|s| !self.live.iter().zip(&taken).any(|(h, &t)| t && h.seq == *s))
            .collect();
        // Hand out the slot's own sequence last, so it stays with a hypothesis when it can.
        free.sort_by_key(|&s| s == self.seqs[0]);
        free.reverse();
        let mut copies = Vec::new();
        let mut live = Vec::with_capacity(next.len());
        for (i, (p, token, logprob)) in next.into_iter().enumerate() {
            let parent = &self.live[p];
            let seq = if first_child_of[p] == Some(i) {
                parent.seq
            } else {
                // There are `width` sequences and at most `width` hypotheses, so one is free.
                let Some(s) = free.pop() else { continue };
                copies.push(SeqCopy {
                    from: parent.seq,
                    to: s,
                });
                s
            };
            let mut tokens = parent.tokens.clone();
            tokens.push(token);
            live.push(Hyp {
                seq,
                tokens,
                logprob,
                logits_at: None,
            });
        }
        self.live = live;
        copies
    }

    /// Whether the search is over: enough finished hypotheses, none alive, or the length
    /// budget spent.
    pub fn finished(&self, limit: usize) -> bool {
        self.live.is_empty()
            || self.done.len() >= self.width
            || self.live.iter().all(|h| h.tokens.len() >= limit)
    }

    /// The winner: the best finished or live hypothesis by score per token, and whether it
    /// ended on its own (rather than by the length budget).
    pub fn best(&self) -> Option<(&Hyp, bool)> {
        let done = self.done.iter().map(|h| (h, true));
        let live = self.live.iter().map(|h| (h, false));
        done.chain(live)
            .max_by(|a, b| a.0.normalized().total_cmp(&b.0.normalized()))
    }
}

/// The `k` best next tokens from raw logits, as log-probabilities, after dividing the scores
/// of recently generated tokens by `penalty` (multiplying negative ones), as llama.cpp's
/// repetition penalty does.
pub(super) fn top_logprobs(
    logits: &[f32],
    recent: &[LlamaToken],
    penalty: f32,
    k: usize,
) -> Vec<(LlamaToken, f32)> {
    let mut scores: Vec<f32> = logits.to_vec();
    if penalty != 1.0 {
        for t in recent {
            if let Some(s) = usize::try_from(t.0).ok().and_then(|i| scores.get_mut(i)) {
                *s = if *s > 0.0 { *s / penalty } else { *s * penalty };
            }
        }
    }
    let max = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let log_norm = max + scores.iter().map(|s| (s - max).exp()).sum::<f32>().ln();
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    let k = k.min(idx.len());
    if k == 0 {
        return Vec::new();
    }
    idx.select_nth_unstable_by(k - 1, |&a, &b| scores[b].total_cmp(&scores[a]));
    idx.truncate(k);
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx.into_iter()
        .map(|i| {
            let token = LlamaToken(i32::try_from(i).unwrap_or(i32::MAX));
            (token, scores[i] - log_norm)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const END: LlamaToken = LlamaToken(0);

    fn cand(parent: usize, token: i32, p: f32) -> Cand {
        Cand {
            parent,
            token: LlamaToken(token),
            logprob: p.ln(),
        }
    }

    #[test]
    fn top_logprobs_are_normalized_and_penalized() {
        let logits = [1.0, 3.0, 2.0, -1.0];
        let top = top_logprobs(&logits, &[], 1.0, 2);
        assert_eq!(top.iter().map(|t| t.0 .0).collect::<Vec<_>>(), [1, 2]);
        let log_norm = 3.0 - top[0].1;
        let total: f32 = logits.iter().map(|l| (l - log_norm).exp()).sum();
        assert!((total - 1.0).abs() < 1e-4, "softmax mass {total}");
        // Token 1 was just generated: a penalty of 2 halves its score, 2 wins.
        let top = top_logprobs(&logits, &[LlamaToken(1)], 2.0, 1);
        assert_eq!(top[0].0, LlamaToken(2));
    }

    #[test]
    fn beams_fork_copy_and_finish() {
        let mut beam = Beam::new(2, 10, vec![5, 40]);
        // From the prompt: two children of the root; the second needs a copy of the prompt.
        let copies = beam.advance(
            vec![cand(0, 7, 0.6), cand(0, 8, 0.3), cand(0, 9, 0.1)],
            |t| t == END,
        );
        assert_eq!(copies, [SeqCopy { from: 5, to: 40 }]);
        assert_eq!(beam.live.len(), 2);
        assert_eq!(beam.live[0].seq, 5);
        assert_eq!(beam.live[0].tokens, [LlamaToken(7)]);

        // Both best continuations come from hypothesis 1 (token 8): hypothesis 0 dies and
        // its sequence (the slot, 5) receives a copy of hypothesis 1's cells.
        let copies = beam.advance(
            vec![cand(0, 1, 0.01), cand(1, 2, 0.9), cand(1, 3, 0.09)],
            |t| t == END,
        );
        assert_eq!(copies, [SeqCopy { from: 40, to: 5 }]);
        assert_eq!(beam.live[0].tokens, [LlamaToken(8), LlamaToken(2)]);
        assert_eq!(beam.live[1].tokens, [LlamaToken(8), LlamaToken(3)]);

        // An ending among the best two finishes that hypothesis.
        beam.advance(vec![cand(0, 0, 0.95), cand(1, 4, 0.5)], |t| t == END);
        assert_eq!(beam.done.len(), 1);
        assert_eq!(beam.done[0].tokens, [LlamaToken(8), LlamaToken(2)]);
        assert!(!beam.finished(100));
        let (best, ended) = beam.best().unwrap();
        assert!(ended);
        assert_eq!(best.tokens, [LlamaToken(8), LlamaToken(2)]);
    }

    #[test]
    fn settled_tokens_are_what_every_contender_starts_with() {
        let is_end = |t: LlamaToken| t == END;
        let mut beam = Beam::new(2, 0, vec![0, 1]);
        beam.advance(vec![cand(0, 7, 0.6), cand(0, 8, 0.4)], is_end);
        // 7… and 8…: nothing is settled yet.
        assert!(beam.take_settled().is_empty());
        // Both continue from 7: the first token is settled, and handed out once.
        beam.advance(
            vec![cand(0, 2, 0.5), cand(0, 3, 0.4), cand(1, 4, 0.1)],
            is_end,
        );
        assert_eq!(beam.take_settled(), [LlamaToken(7)]);
        assert!(beam.take_settled().is_empty());
        // 7 2 ends (and may still win); 7 3 goes on as 7 3 5 and 7 3 6. Those two share
        // 7 3, but the finished 7 2 does not: nothing more is settled.
        beam.advance(
            vec![cand(0, 0, 0.9), cand(1, 5, 0.5), cand(1, 6, 0.4)],
            is_end,
        );
        assert_eq!(beam.done.len(), 1);
        assert!(beam.take_settled().is_empty());

        // A finished hypothesis that the live ones extend holds them back to its length.
        let mut beam = Beam::new(2, 0, vec![0, 1]);
        beam.advance(vec![cand(0, 7, 0.9), cand(0, 8, 0.1)], is_end);
        beam.advance(vec![cand(0, 2, 0.9), cand(0, 3, 0.1)], is_end);
        assert_eq!(beam.take_settled(), [LlamaToken(7)]);
        beam.advance(
            vec![
                cand(0, 0, 0.5),
                cand(0, 5, 0.3),
                cand(0, 6, 0.2),
                cand(1, 9, 0.01),
            ],
            is_end,
        );
        assert_eq!(beam.done.len(), 1);
        assert_eq!(beam.take_settled(), [LlamaToken(2)]);
        beam.advance(vec![cand(0, 1, 0.9), cand(1, 1, 0.9)], is_end);
        assert!(beam.take_settled().is_empty());
    }

    #[test]
    fn the_length_budget_ends_the_search() {
        let mut beam = Beam::new(1, 0, vec![0]);
        beam.advance(vec![cand(0, 3, 0.5)], |t| t == END);
        assert!(beam.finished(1));
        assert!(!beam.finished(2));
        let (best, ended) = beam.best().unwrap();
        assert!(!ended && best.tokens == [LlamaToken(3)]);
    }
}
