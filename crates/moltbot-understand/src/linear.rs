//! A multinomial logistic-regression head over a sparse block and a dense block.
//!
//! Written here rather than taken from a crate because the input is a mix no Rust ML crate
//! handles well: a few hundred non-zeros out of ~10^5 TF-IDF features joined with a dense
//! 384-d sentence embedding. Training is plain SGD with L2 decay applied through one global
//! scale factor (so a step costs only the non-zeros it touches) and a learning rate that
//! decays as `lr / (1 + lr·l2·t)`. Classes whose gradient is negligible are skipped, which
//! makes later epochs several times cheaper than the first.

use crate::features::SparseVec;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

/// One example as the head sees it.
#[derive(Debug, Clone, Copy)]
pub struct Input<'a> {
    pub sparse: &'a SparseVec,
    pub dense: &'a [f32],
}

/// Training knobs of one head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    pub epochs: usize,
    pub learning_rate: f32,
    /// L2 penalty per example.
    pub l2: f32,
    /// Share of the target probability spread over the other classes.
    pub label_smoothing: f32,
    pub seed: u64,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: 25,
            learning_rate: 0.5,
            l2: 2e-6,
            label_smoothing: 0.1,
            seed: 17,
        }
    }
}

/// Gradients below this (|p - y|) are skipped.
const MIN_GRAD: f32 = 1e-5;

/// Weights are stored feature-major (`[feature][class]`) so a sparse row update touches
/// one contiguous run of `classes` floats.
#[derive(Debug, Clone)]
pub struct Softmax {
    classes: usize,
    sparse_dim: usize,
    dense_dim: usize,
    w_sparse: Vec<f32>,
    w_dense: Vec<f32>,
    bias: Vec<f32>,
}

impl Softmax {
    /// Fit on `inputs` with class ids `labels` (each `< classes`).
    pub fn train(
        inputs: &[Input<'_>],
        labels: &[u32],
        classes: usize,
        sparse_dim: usize,
        dense_dim: usize,
        cfg: &TrainConfig,
    ) -> Self {
        assert_eq!(inputs.len(), labels.len(), "one label per input");
        let mut w_sparse = vec![0f32; sparse_dim * classes];
        let mut w_dense = vec![0f32; dense_dim * classes];
        let mut bias = vec![0f32; classes];
        // The true weights are `scale * w`; decaying `scale` is the L2 step.
        let mut scale = 1f32;
        let mut order: Vec<usize> = (0..inputs.len()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(cfg.seed);
        let mut z = vec![0f32; classes];
        let mut t = 0f32;
        let smooth_other = if classes > 1 {
            cfg.label_smoothing / (classes - 1) as f32
        } else {
            0.0
        };
        let mut active: Vec<(usize, f32)> = Vec::with_capacity(classes);
        for _ in 0..cfg.epochs {
            order.shuffle(&mut rng);
            for &n in &order {
                let x = inputs[n];
                let y = labels[n] as usize;
                let lr = cfg.learning_rate / (1.0 + cfg.learning_rate * cfg.l2 * t);
                t += 1.0;
                logits_into(&w_sparse, &w_dense, &bias, scale, classes, x, &mut z);
                softmax_in_place(&mut z);
                active.clear();
                for (c, p) in z.iter().enumerate() {
                    let target = if c == y {
                        1.0 - cfg.label_smoothing
                    } else {
                        smooth_other
                    };
                    let g = p - target;
                    if g.abs() > MIN_GRAD {
                        active.push((c, g));
                    }
                }
                scale *= 1.0 - lr * cfg.l2;
                if scale < 1e-6 {
                    w_sparse.iter_mut().for_each(|w| *w *= scale);
                    w_dense.iter_mut().for_each(|w| *w *= scale);
                    scale = 1.0;
                }
                let step = lr / scale;
                for (&i, &v) in x.sparse.idx.iter().zip(&x.sparse.val) {
                    let row = &mut w_sparse[i as usize * classes..][..classes];
                    for &(c, g) in &active {
                        row[c] -= step * g * v;
                    }
                }
                for (d, &v) in x.dense.iter().enumerate() {
                    let row = &mut w_dense[d * classes..][..classes];
                    for &(c, g) in &active {
                        row[c] -= step * g * v;
                    }
                }
                for &(c, g) in &active {
                    bias[c] -= lr * g;
                }
            }
        }
        w_sparse.iter_mut().for_each(|w| *w *= scale);
        w_dense.iter_mut().for_each(|w| *w *= scale);
        Self {
            classes,
            sparse_dim,
            dense_dim,
            w_sparse,
            w_dense,
            bias,
        }
    }

    pub fn classes(&self) -> usize {
        self.classes
    }

    pub fn dims(&self) -> (usize, usize) {
        (self.sparse_dim, self.dense_dim)
    }

    /// Raw scores, one per class.
    pub fn logits(&self, x: Input<'_>) -> Vec<f32> {
        let mut z = vec![0f32; self.classes];
        logits_into(
            &self.w_sparse,
            &self.w_dense,
            &self.bias,
            1.0,
            self.classes,
            x,
            &mut z,
        );
        z
    }

    /// The weights, for saving: (sparse `[feature][class]`, dense `[dim][class]`, bias).
    pub fn parts(&self) -> (&[f32], &[f32], &[f32]) {
        (&self.w_sparse, &self.w_dense, &self.bias)
    }

    /// Rebuild from saved weights; `None` when the lengths do not agree.
    pub fn from_parts(
        classes: usize,
        sparse_dim: usize,
        dense_dim: usize,
        w_sparse: Vec<f32>,
        w_dense: Vec<f32>,
        bias: Vec<f32>,
    ) -> Option<Self> {
        (w_sparse.len() == sparse_dim * classes
            && w_dense.len() == dense_dim * classes
            && bias.len() == classes)
            .then_some(Self {
                classes,
                sparse_dim,
                dense_dim,
                w_sparse,
                w_dense,
                bias,
            })
    }
}

fn logits_into(
    w_sparse: &[f32],
    w_dense: &[f32],
    bias: &[f32],
    scale: f32,
    classes: usize,
    x: Input<'_>,
    z: &mut [f32],
) {
    z.fill(0.0);
    for (&i, &v) in x.sparse.idx.iter().zip(&x.sparse.val) {
        let row = &w_sparse[i as usize * classes..][..classes];
        for (zc, w) in z.iter_mut().zip(row) {
            *zc += w * v;
        }
    }
    for (d, &v) in x.dense.iter().enumerate() {
        let row = &w_dense[d * classes..][..classes];
        for (zc, w) in z.iter_mut().zip(row) {
            *zc += w * v;
        }
    }
    for (zc, b) in z.iter_mut().zip(bias) {
        *zc = *zc * scale + b;
    }
}

/// Turn scores into probabilities in place (numerically stable).
pub fn softmax_in_place(z: &mut [f32]) {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in z.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    if sum > 0.0 {
        z.iter_mut().for_each(|v| *v /= sum);
    }
}

/// `log Σ exp(z)`, the negative energy of a logit vector.
pub fn log_sum_exp(z: &[f32]) -> f32 {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if !max.is_finite() {
        return max;
    }
    max + z.iter().map(|v| (v - max).exp()).sum::<f32>().ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(pairs: &[(u32, f32)]) -> SparseVec {
        SparseVec {
            idx: pairs.iter().map(|p| p.0).collect(),
            val: pairs.iter().map(|p| p.1).collect(),
        }
    }

    #[test]
    fn learns_a_separable_problem_from_sparse_and_dense_parts() {
        // Class 0 marked by sparse feature 0, class 1 by feature 1, class 2 only by the dense
        // part.
        let xs = [sv(&[(0, 1.0)]), sv(&[(1, 1.0)]), sv(&[(2, 0.1)])];
        let dense = [vec![0.0, 0.0], vec![0.0, 0.0], vec![1.0, 0.0]];
        let mut inputs = Vec::new();
        let mut labels = Vec::new();
        for _ in 0..20 {
            for c in 0..3 {
                inputs.push(Input {
                    sparse: &xs[c],
                    dense: &dense[c],
                });
                labels.push(c as u32);
            }
        }
        let m = Softmax::train(&inputs, &labels, 3, 3, 2, &TrainConfig::default());
        for (c, input) in inputs.iter().take(3).enumerate() {
            let z = m.logits(*input);
            let best = (0..3)
                .max_by(|a, b| z[*a].total_cmp(&z[*b]))
                .expect("three classes");
            assert_eq!(best, c, "logits {z:?}");
        }
    }

    #[test]
    fn softmax_and_lse_agree() {
        let z = [1.0f32, 2.0, 3.0];
        let mut p = z;
        softmax_in_place(&mut p);
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        let lse = log_sum_exp(&z);
        assert!((p[2] - (z[2] - lse).exp()).abs() < 1e-6);
    }
}
