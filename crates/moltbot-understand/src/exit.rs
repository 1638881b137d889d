//! The **sparse exit**: a turn the char + word features alone classify with confidence is
//! answered without the sentence encoder.
//!
//! The encoder is nearly all of a turn's cost (a MiniLM forward pass takes milliseconds,
//! the sparse heads microseconds), and most turns of an intent set are plain enough for
//! n-grams: on CLINC150 the sparse-only heads are sure (≥ 0.8) of 78% of the test turns and
//! right on 99.7% of those, exactly as often as the full model is on the same turns
//! (BENCHMARKS.md, "sparse exit"). So a model trained with an encoder also fits a second
//! pair of heads on the sparse block only, and learns from its held-out calibration turns
//! how sure they must be before they may answer alone:
//! - both pairs of heads are fit without the held-out turns, which they then classify;
//! - walking those turns from the exit's most confident down, the threshold is the lowest
//!   confidence at which the exit's answers lose at most [`EXIT_LOSS`] of held-out accuracy
//!   against the full model's answers to the same turns, and never below
//!   [`MIN_EXIT_CONFIDENCE`];
//! - turns the exit finds at all surprising (its own calibrated surprise at or above
//!   [`EXIT_MAX_SURPRISE`]) always go on to the encoder, so out-of-domain detection keeps
//!   the embedding's distance to the intents.
//!
//! The exit's surprise is calibrated like the full model's (share of held-out in-domain
//! turns below it), against its own held-out scores, so the two read on the same scale.

use crate::features::SparseVec;
use crate::linear::Softmax;
use crate::model::{argmax, calibrate, fit_heads, Features, IntentModel, Prediction, Scored};

/// Held-out accuracy the exit may cost, as a share of the held-out turns (0.1 point).
pub const EXIT_LOSS: f64 = 0.001;
/// The exit never answers below this confidence, whatever the held-out turns say.
pub const MIN_EXIT_CONFIDENCE: f32 = 0.5;
/// The exit answers only turns less surprising, by its own calibrated surprise, than this
/// share of in-domain turns. Out-of-domain turns the sparse heads happen to be sure of must
/// reach the encoder, whose distance to the intents is the better out-of-domain signal:
/// with 0.95 (the model's threshold), 75% of the intents known and the rest out of scope,
/// false accepts at the threshold rose from 27.7% to 32.1% on CLINC150 and 58.6% to 59.9%
/// on BANKING77 (AUROC 0.952 → 0.939, 0.897 → 0.865); with 0.6 they were 27.9% and 58.8%
/// (AUROC 0.945, 0.871), while the exit still answered 67% and 62% of the full test sets.
pub const EXIT_MAX_SURPRISE: f32 = 0.6;
/// Fewer held-out turns than this say too little to set a threshold: no exit.
pub const MIN_EXIT_HOLDOUT: usize = 100;

/// The exit's heads and the confidence at which they answer alone.
#[derive(Debug, Clone)]
pub(crate) struct SparseExit {
    pub(crate) coarse_head: Softmax,
    /// Reads the sparse block and the coarse distribution (no embedding).
    pub(crate) fine_head: Softmax,
    /// Fine confidence at or above which the exit answers; `None`: it never answers (too
    /// few held-out turns to set one, or not even the surest kept up), and the heads only
    /// rank the units of long texts.
    pub(crate) threshold: Option<f32>,
    /// Raw surprise of the held-out in-domain turns under these heads, sorted ascending.
    pub(crate) calibration: Vec<f32>,
}

/// One input as the heads judged it, before it becomes a [`Prediction`].
#[derive(Debug, Clone)]
pub(crate) struct Judged {
    pub(crate) scored: Scored,
    pub(crate) probs: Vec<f32>,
    /// `(raw, calibrated)` surprise.
    pub(crate) surprise: (f32, f32),
    /// Judged by the exit's heads, without the encoder.
    pub(crate) sparse_exit: bool,
}

impl Judged {
    pub(crate) fn confidence(&self) -> f32 {
        self.probs[argmax(&self.probs)]
    }
}

/// A held-out turn as the threshold choice sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeldOutTurn {
    /// The exit's confidence (NaN or below any threshold when it may not answer it).
    pub(crate) confidence: f32,
    pub(crate) exit_right: bool,
    pub(crate) full_right: bool,
}

/// The lowest confidence at which the exit may answer (see the module doc), or `None` when
/// not even its most confident turn qualifies. Turns the exit may not answer (surprising
/// ones) must be left out of `turns` by the caller, but count in `total`, the number of
/// held-out turns the loss is a share of.
pub(crate) fn choose_threshold(mut turns: Vec<HeldOutTurn>, total: usize) -> Option<f32> {
    turns.retain(|t| t.confidence >= MIN_EXIT_CONFIDENCE);
    turns.sort_by(|a, b| b.confidence.total_cmp(&a.confidence));
    let allowed = EXIT_LOSS * total as f64;
    let mut loss = 0i64;
    let mut best = None;
    for (i, t) in turns.iter().enumerate() {
        loss += i64::from(t.full_right) - i64::from(t.exit_right);
        // Only between distinct confidences: a threshold takes all turns tied at it.
        let boundary = turns
            .get(i + 1)
            .is_none_or(|next| next.confidence < t.confidence);
        if boundary && loss as f64 <= allowed {
            best = Some(t.confidence);
        }
    }
    best
}

impl IntentModel {
    /// Fit the sparse exit while the model's heads are the ones fit without `held_out`:
    /// its heads on `fit_part`; from the held-out turns, its surprise calibration and (with
    /// at least [`MIN_EXIT_HOLDOUT`] of them) its threshold; then its heads again on every
    /// example.
    pub(crate) fn fit_exit(
        &self,
        feats: &[Features],
        y: &[u32],
        fit_part: &[usize],
        held_out: &[usize],
    ) -> SparseExit {
        let sparse_only: Vec<Features> = feats
            .iter()
            .map(|f| Features {
                sparse: f.sparse.clone(),
                dense: Vec::new(),
            })
            .collect();
        let heads = |rows: &[usize]| {
            fit_heads(
                &self.config,
                self.coarse_labels.len(),
                &self.fine_to_coarse,
                &self.featurizer,
                &sparse_only,
                y,
                rows,
            )
        };
        let (coarse_head, fine_head) = heads(fit_part);
        let mut exit = SparseExit {
            coarse_head,
            fine_head,
            threshold: None,
            calibration: Vec::new(),
        };
        if held_out.is_empty() {
            return exit;
        }
        let judged: Vec<Judged> = held_out
            .iter()
            .map(|&i| self.judge_with_exit(&exit, &feats[i].sparse))
            .collect();
        exit.calibration = judged.iter().map(|j| j.surprise.0).collect();
        exit.calibration.sort_by(f32::total_cmp);
        if held_out.len() >= MIN_EXIT_HOLDOUT {
            let turns: Vec<HeldOutTurn> = held_out
                .iter()
                .zip(&judged)
                .filter_map(|(&i, j)| {
                    // Surprise against the finished calibration, as serving will see it.
                    let surprise = calibrate(&exit.calibration, j.surprise.0);
                    self.exit_unsurprised(surprise).then(|| HeldOutTurn {
                        confidence: j.confidence(),
                        exit_right: argmax(&j.probs) == y[i] as usize,
                        full_right: argmax(&self.score_vectors(&feats[i]).probabilities())
                            == y[i] as usize,
                    })
                })
                .collect();
            exit.threshold = choose_threshold(turns, held_out.len());
        }
        (exit.coarse_head, exit.fine_head) = heads(&(0..feats.len()).collect::<Vec<_>>());
        tracing::debug!(threshold = ?exit.threshold, "fitted the sparse exit");
        exit
    }

    /// The exit's judgement of a text's sparse features when it may answer alone: the exit
    /// is present and on, sure enough, and not surprised.
    pub(crate) fn judge_exit(&self, sparse: &SparseVec) -> Option<Judged> {
        let (exit, _) = self.serving_exit()?;
        Some(self.judge_with_exit(exit, sparse)).filter(|j| self.exit_may_answer(j))
    }

    /// The exit and its threshold when it may answer turns: present, on, and trained with
    /// enough held-out turns to have a threshold.
    pub(crate) fn serving_exit(&self) -> Option<(&SparseExit, f32)> {
        let exit = self.exit.as_ref().filter(|_| self.exit_enabled)?;
        Some((exit, exit.threshold?))
    }

    /// Whether the exit may answer alone for a judgement of its heads: it is serving
    /// ([`IntentModel::serving_exit`]), the confidence reaches its threshold, and the
    /// surprise is low enough.
    pub(crate) fn exit_may_answer(&self, judged: &Judged) -> bool {
        self.serving_exit().is_some_and(|(_, t)| {
            judged.confidence() >= t && self.exit_unsurprised(judged.surprise.1)
        })
    }

    /// Whether the exit's calibrated surprise lets it answer (below
    /// [`EXIT_MAX_SURPRISE`] and the model's out-of-domain threshold).
    pub(crate) fn exit_unsurprised(&self, surprise: f32) -> bool {
        surprise < EXIT_MAX_SURPRISE.min(self.config.surprise_threshold)
    }

    /// The exit's heads' judgement, whether or not it may answer.
    pub(crate) fn judge_with_exit(&self, exit: &SparseExit, sparse: &SparseVec) -> Judged {
        let scored = self.score_heads(&exit.coarse_head, &exit.fine_head, sparse, &[]);
        let probs = scored.probabilities();
        let raw = self.raw_surprise(&scored, &[], argmax(&probs));
        Judged {
            surprise: (raw, calibrate(&exit.calibration, raw)),
            scored,
            probs,
            sparse_exit: true,
        }
    }

    /// The full model's judgement of features with their embedding.
    pub(crate) fn judge_full(&self, f: &Features) -> Judged {
        let scored = self.score_vectors(f);
        let probs = scored.probabilities();
        let raw = self.raw_surprise(&scored, &f.dense, argmax(&probs));
        Judged {
            surprise: (raw, calibrate(&self.calibration, raw)),
            scored,
            probs,
            sparse_exit: false,
        }
    }

    pub(crate) fn finish(&self, j: &Judged) -> Prediction {
        self.prediction(&j.scored, &j.probs, j.surprise, j.sparse_exit)
    }

    /// The confidence at which the model's sparse exit answers, if it has one that does
    /// (trained with an encoder and enough held-out turns).
    pub fn sparse_exit_threshold(&self) -> Option<f32> {
        self.exit.as_ref().and_then(|e| e.threshold)
    }

    /// Number of training examples held out to calibrate surprise (and to set the exit).
    pub fn held_out_turns(&self) -> usize {
        self.calibration.len()
    }

    /// Serve with the sparse exit (the default) or send every turn through the encoder.
    pub fn set_sparse_exit(&mut self, on: bool) {
        self.exit_enabled = on;
    }

    /// Apply the serving choices of `[understanding]` (surprise threshold, long-text
    /// shortlist, sparse exit): the same for a model loaded at start and one swapped in.
    pub fn serve_with(&mut self, cfg: &moltbot_core::config::UnderstandingConfig) {
        self.set_surprise_threshold(cfg.surprise_threshold);
        self.set_long_shortlist(cfg.long_shortlist);
        self.set_sparse_exit(cfg.sparse_exit);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(confidence: f32, exit_right: bool, full_right: bool) -> HeldOutTurn {
        HeldOutTurn {
            confidence,
            exit_right,
            full_right,
        }
    }

    #[test]
    fn the_threshold_stops_where_the_exit_starts_losing() {
        // 1000 turns allow one lost turn. The exit is wrong where the full model is right
        // at 0.7 and at 0.6: the threshold stays above 0.6.
        let turns = vec![
            turn(0.99, true, true),
            turn(0.9, false, false),
            turn(0.8, true, true),
            turn(0.7, false, true),
            turn(0.65, true, true),
            turn(0.6, false, true),
            turn(0.55, true, true),
        ];
        assert_eq!(choose_threshold(turns.clone(), 1000), Some(0.65));
        // With nothing allowed, the first loss ends it.
        assert_eq!(choose_threshold(turns.clone(), 100), Some(0.8));
        // A turn the exit gets right and the full model wrong pays for a later loss.
        let mut paid = turns;
        paid.push(turn(0.97, true, false));
        assert_eq!(choose_threshold(paid, 100), Some(0.65));
    }

    #[test]
    fn ties_and_the_floor_bound_the_threshold() {
        // Two turns at the same confidence go in or out together.
        let tied = vec![
            turn(0.9, true, true),
            turn(0.8, true, true),
            turn(0.8, false, true),
        ];
        assert_eq!(choose_threshold(tied, 100), Some(0.9));
        // Below MIN_EXIT_CONFIDENCE nothing counts, however right.
        let low = vec![turn(0.4, true, true), turn(0.3, true, true)];
        assert_eq!(choose_threshold(low, 100), None);
        // A first loss with nothing allowed: no exit at all.
        assert_eq!(choose_threshold(vec![turn(0.95, false, true)], 100), None);
    }
}
