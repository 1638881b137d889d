//! Evaluation: accuracy, macro-F1, per-class errors, and how well surprise separates
//! out-of-scope turns (AUROC, false-accept rate at the model's threshold).

use crate::dataset::Dataset;
use crate::model::{IntentModel, ModelError, Prediction};
use moltbot_core::Encoder;
use serde::Serialize;
use std::collections::BTreeMap;

/// Results of [`evaluate`].
#[derive(Debug, Clone, Serialize)]
pub struct EvalReport {
    pub examples: usize,
    pub accuracy: f64,
    pub macro_f1: f64,
    pub coarse_accuracy: f64,
    /// Per fine intent with at least one error: (support, errors, most common wrong answer).
    pub per_class_errors: BTreeMap<String, ClassErrors>,
    /// Present when the data held utterances of intents the model does not know.
    pub out_of_scope: Option<OosReport>,
    /// Wall time of classifying every example (sparse features, encoder, heads).
    pub classify_secs: f64,
    /// Examples the sparse exit answered without the encoder.
    pub sparse_exits: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ClassErrors {
    pub support: usize,
    pub errors: usize,
    pub confused_with: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct OosReport {
    pub in_scope: usize,
    pub out_of_scope: usize,
    /// Probability that a random out-of-scope turn scores more surprising than a random
    /// in-scope one.
    pub auroc: f64,
    pub threshold: f32,
    /// Out-of-scope turns accepted as in-domain at `threshold`.
    pub false_accept_rate: f64,
    /// In-scope turns rejected at `threshold`.
    pub false_reject_rate: f64,
    /// Out-of-scope turns accepted when the threshold keeps 95% of in-scope turns.
    pub far_at_95_recall: f64,
    /// Accuracy on in-scope turns only.
    pub in_scope_accuracy: f64,
}

/// Classify every example of `data` and score the answers. Examples whose fine label the
/// model does not know count as out-of-scope: they feed the surprise metrics, not accuracy.
pub fn evaluate(
    model: &IntentModel,
    data: &Dataset,
    encoder: Option<&dyn Encoder>,
) -> Result<(EvalReport, Vec<Prediction>), ModelError> {
    let t0 = std::time::Instant::now();
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    // Each text whole, as serving classifies a short turn (the sparse exit included); a
    // model with tuned layers embeds with them, and a missing or mismatched encoder is an
    // error.
    let preds = model.classify_whole(&texts, encoder)?;
    let classify_secs = t0.elapsed().as_secs_f64();
    let known: std::collections::HashSet<&str> =
        model.fine_labels().iter().map(String::as_str).collect();

    let mut correct = 0usize;
    let mut coarse_correct = 0usize;
    let mut in_scope = 0usize;
    // (true positives, predicted count, support) per class.
    let mut counts: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    let mut confusions: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    let mut in_scores = Vec::new();
    let mut out_scores = Vec::new();
    for (e, p) in data.examples.iter().zip(&preds) {
        if !known.contains(e.fine.as_str()) {
            out_scores.push(p.surprise);
            continue;
        }
        in_scores.push(p.surprise);
        in_scope += 1;
        counts.entry(&e.fine).or_default().2 += 1;
        counts.entry(&p.fine).or_default().1 += 1;
        if p.fine == e.fine {
            correct += 1;
            counts.entry(&e.fine).or_default().0 += 1;
        } else {
            *confusions
                .entry(&e.fine)
                .or_default()
                .entry(&p.fine)
                .or_default() += 1;
        }
        let truth = e.coarse.as_deref().or_else(|| model.coarse_of(&e.fine));
        if truth == Some(p.coarse.as_str()) {
            coarse_correct += 1;
        }
    }
    let f1s: Vec<f64> = counts
        .values()
        .filter(|c| c.2 > 0)
        .map(|&(tp, predicted, support)| {
            let precision = if predicted > 0 {
                tp as f64 / predicted as f64
            } else {
                0.0
            };
            let recall = tp as f64 / support as f64;
            if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            }
        })
        .collect();
    let per_class_errors = confusions
        .into_iter()
        .map(|(class, wrong)| {
            let errors = wrong.values().sum();
            let confused_with = wrong
                .iter()
                .max_by_key(|(_, n)| **n)
                .map(|(c, _)| c.to_string())
                .unwrap_or_default();
            (
                class.to_string(),
                ClassErrors {
                    support: counts.get(class).map_or(0, |c| c.2),
                    errors,
                    confused_with,
                },
            )
        })
        .collect();
    let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    let out_of_scope = (!out_scores.is_empty() && !in_scores.is_empty()).then(|| {
        let threshold = model.config().surprise_threshold;
        let mut sorted_in = in_scores.clone();
        sorted_in.sort_by(f32::total_cmp);
        let t95 =
            sorted_in[((sorted_in.len() as f64 * 0.95).ceil() as usize).min(sorted_in.len()) - 1];
        OosReport {
            in_scope: in_scores.len(),
            out_of_scope: out_scores.len(),
            auroc: auroc(&in_scores, &out_scores),
            threshold,
            false_accept_rate: ratio(
                out_scores.iter().filter(|s| **s < threshold).count(),
                out_scores.len(),
            ),
            false_reject_rate: ratio(
                in_scores.iter().filter(|s| **s >= threshold).count(),
                in_scores.len(),
            ),
            far_at_95_recall: ratio(
                out_scores.iter().filter(|s| **s <= t95).count(),
                out_scores.len(),
            ),
            in_scope_accuracy: ratio(correct, in_scope),
        }
    });
    let report = EvalReport {
        examples: data.examples.len(),
        accuracy: ratio(correct, in_scope),
        macro_f1: if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        },
        coarse_accuracy: ratio(coarse_correct, in_scope),
        per_class_errors,
        out_of_scope,
        classify_secs,
        sparse_exits: preds.iter().filter(|p| p.sparse_exit).count(),
    };
    Ok((report, preds))
}

/// Area under the ROC curve for "out scores higher than in", ties counted half
/// (Mann–Whitney U over the merged ranking).
pub fn auroc(in_scores: &[f32], out_scores: &[f32]) -> f64 {
    let mut all: Vec<(f32, bool)> = in_scores
        .iter()
        .map(|s| (*s, false))
        .chain(out_scores.iter().map(|s| (*s, true)))
        .collect();
    all.sort_by(|a, b| a.0.total_cmp(&b.0));
    // Average ranks over ties.
    let mut rank_sum_out = 0f64;
    let mut i = 0;
    while i < all.len() {
        let mut j = i;
        while j < all.len() && all[j].0 == all[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // 1-based ranks i+1..=j
        rank_sum_out += avg_rank * all[i..j].iter().filter(|x| x.1).count() as f64;
        i = j;
    }
    let n_out = out_scores.len() as f64;
    let n_in = in_scores.len() as f64;
    (rank_sum_out - n_out * (n_out + 1.0) / 2.0) / (n_out * n_in)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auroc_of_perfect_random_and_reversed_scores() {
        assert!((auroc(&[0.1, 0.2], &[0.8, 0.9]) - 1.0).abs() < 1e-9);
        assert!((auroc(&[0.8, 0.9], &[0.1, 0.2]) - 0.0).abs() < 1e-9);
        assert!((auroc(&[0.5, 0.5], &[0.5, 0.5]) - 0.5).abs() < 1e-9);
        assert!((auroc(&[0.1, 0.6], &[0.5, 0.9]) - 0.75).abs() < 1e-9);
    }
}
