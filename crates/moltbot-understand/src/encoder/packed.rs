//! The encoder's non-matmul steps over a *packed* batch: the tokens of every sequence one
//! after another in a `(tokens, hidden)` buffer, with no padding.
//!
//! The projections work row by row, so they never needed the padded `(batch, len)` shape;
//! only attention must know where one sequence ends. Running attention, the residual + layer
//! norm steps and the pooling here, on plain slices, removes the padding (every sequence
//! costs its own length, not the longest one's) and candle's per-head batched matmuls,
//! transposes and copies between the projections. Written by hand because these are a few
//! short loops over one buffer layout no crate offers; they vectorize as written (eight
//! accumulators per dot product, elementwise loops elsewhere).

use super::softmax::exp_nonpositive;
use rayon::prelude::*;

/// Below this many multiply-adds attention runs on the calling thread.
const PARALLEL_MIN_MACS: usize = 1 << 21;

/// Where each sequence's rows start in the packed buffer, and the total row count.
pub fn offsets(lens: &[usize]) -> (Vec<usize>, usize) {
    let mut starts = Vec::with_capacity(lens.len());
    let mut total = 0;
    for &l in lens {
        starts.push(total);
        total += l;
    }
    (starts, total)
}

/// `a · b` with eight independent sums, so the compiler keeps them in one vector register
/// (a single running sum cannot be reordered, and would stay scalar).
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ac, ar) = a.as_chunks::<8>();
    let (bc, br) = b.as_chunks::<8>();
    for (x, y) in ac.iter().zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

/// `Σ v` with eight independent sums (see [`dot`]).
#[inline(always)]
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (chunks, rest) = v.as_chunks::<8>();
    for c in chunks {
        for i in 0..8 {
            acc[i] += c[i];
        }
    }
    acc.iter().sum::<f32>() + rest.iter().sum::<f32>()
}

/// `Σ (v − mean)²` with eight independent sums.
#[inline(always)]
fn squared_deviations(v: &[f32], mean: f32) -> f32 {
    let mut acc = [0f32; 8];
    let (chunks, rest) = v.as_chunks::<8>();
    for c in chunks {
        for i in 0..8 {
            acc[i] += (c[i] - mean) * (c[i] - mean);
        }
    }
    acc.iter().sum::<f32>() + rest.iter().map(|x| (x - mean) * (x - mean)).sum::<f32>()
}

/// The largest value, over eight lanes (a running `max` is a chain the compiler keeps
/// scalar). NaN-free input assumed: scores of finite activations.
#[inline(always)]
fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let (chunks, rest) = v.as_chunks::<8>();
    for c in chunks {
        for i in 0..8 {
            acc[i] = acc[i].max(c[i]);
        }
    }
    rest.iter()
        .chain(&acc)
        .copied()
        .fold(f32::NEG_INFINITY, f32::max)
}

/// Multi-head self-attention for a packed batch. `qkv` holds, per token, its query, key and
/// value (`3 · hidden` values, heads side by side in each); sequence `s` owns `lens[s]`
/// consecutive tokens. Gives the context `(tokens, hidden)`: for each token and head,
/// `softmax(q·kᵀ / √head_dim)` over its own sequence's keys applied to their values.
pub fn attention(qkv: &[f32], lens: &[usize], heads: usize, head_dim: usize) -> Vec<f32> {
    let hidden = heads * head_dim;
    let (starts, total) = offsets(lens);
    assert_eq!(
        qkv.len(),
        total * 3 * hidden,
        "qkv is not 3·hidden per token"
    );
    // The sequence of every row, as (first row, length).
    let mut seq_of = Vec::with_capacity(total);
    for (&s, &l) in starts.iter().zip(lens) {
        seq_of.extend(std::iter::repeat_n((s, l), l));
    }
    let scale = 1.0 / (head_dim as f32).sqrt();
    let longest = lens.iter().copied().max().unwrap_or(0);
    let mut out = vec![0f32; total * hidden];
    let run = |first_row: usize, rows: &mut [f32]| {
        let mut scores = vec![0f32; longest];
        for (i, ctx) in rows.chunks_exact_mut(hidden).enumerate() {
            let row = first_row + i;
            let (start, len) = seq_of[row];
            let scores = &mut scores[..len];
            for h in 0..heads {
                let q = &qkv[row * 3 * hidden + h * head_dim..][..head_dim];
                for (j, s) in scores.iter_mut().enumerate() {
                    let k = &qkv[(start + j) * 3 * hidden + hidden + h * head_dim..][..head_dim];
                    *s = dot(q, k) * scale;
                }
                // Separate passes, so the `exp` loop has no running sum and vectorizes.
                let top = max(scores);
                for s in scores.iter_mut() {
                    *s = exp_nonpositive(*s - top);
                }
                let inv = 1.0 / sum(scores);
                let c = &mut ctx[h * head_dim..][..head_dim];
                for (j, &p) in scores.iter().enumerate() {
                    let v =
                        &qkv[(start + j) * 3 * hidden + 2 * hidden + h * head_dim..][..head_dim];
                    let w = p * inv;
                    for (o, &x) in c.iter_mut().zip(v) {
                        *o += w * x;
                    }
                }
            }
        }
    };
    let macs = 2 * hidden * lens.iter().map(|l| l * l).sum::<usize>();
    let threads = rayon::current_num_threads();
    if threads <= 1 || macs < PARALLEL_MIN_MACS {
        run(0, &mut out);
    } else {
        // Rows cost their sequence's length each; equal row counts per task are close
        // enough, with a few tasks per thread to even out the rest.
        let per = total.div_ceil(threads * 4).max(1);
        out.par_chunks_mut(per * hidden)
            .enumerate()
            .for_each(|(t, rows)| run(t * per, rows));
    }
    out
}

/// `x ← layer_norm(x + residual)` row by row (`residual` optional), with the learned
/// `weight` and `bias`; mean and variance over each row of `weight.len()` values, as BERT's.
pub fn add_layer_norm(
    x: &mut [f32],
    residual: Option<&[f32]>,
    weight: &[f32],
    bias: &[f32],
    eps: f32,
) {
    let hidden = weight.len();
    assert_eq!(x.len() % hidden, 0, "rows are not of {hidden}");
    if let Some(r) = residual {
        assert_eq!(r.len(), x.len(), "residual of another shape");
        x.iter_mut().zip(r).for_each(|(a, b)| *a += b);
    }
    for row in x.chunks_exact_mut(hidden) {
        let mean = sum(row) / hidden as f32;
        let var = squared_deviations(row, mean) / hidden as f32;
        let inv = 1.0 / (var + eps).sqrt();
        for ((v, w), b) in row.iter_mut().zip(weight).zip(bias) {
            *v = (*v - mean) * inv * w + b;
        }
    }
}

/// One L2-normalised mean of each sequence's rows.
pub fn mean_pool(x: &[f32], lens: &[usize], hidden: usize) -> Vec<Vec<f32>> {
    let mut rows = x.chunks_exact(hidden);
    lens.iter()
        .map(|&len| {
            let mut v = vec![0f32; hidden];
            for row in rows.by_ref().take(len) {
                v.iter_mut().zip(row).for_each(|(a, b)| *a += b);
            }
            let n = len.max(1) as f32;
            v.iter_mut().for_each(|a| *a /= n);
            let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
            v.iter_mut().for_each(|a| *a /= norm);
            v
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Tensor, D};

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (((i + seed) * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect()
    }

    #[test]
    fn packed_attention_matches_padded_attention_in_candle() {
        // Three sequences of different lengths, long enough for the threaded path; the
        // reference pads them to the longest and masks the padded keys.
        let (heads, d) = (4usize, 8usize);
        let hidden = heads * d;
        let lens = [5usize, 61, 23];
        let (starts, total) = offsets(&lens);
        let qkv = values(total * 3 * hidden, 3);
        let ours = attention(&qkv, &lens, heads, d);
        let dev = Device::Cpu;
        let longest = 61;
        for (s, (&start, &len)) in starts.iter().zip(&lens).enumerate() {
            let mut padded = vec![0f32; longest * 3 * hidden];
            padded[..len * 3 * hidden]
                .copy_from_slice(&qkv[start * 3 * hidden..(start + len) * 3 * hidden]);
            let t = Tensor::from_vec(padded, (longest, 3 * hidden), &dev).unwrap();
            let part = |i: usize| {
                t.narrow(1, i * hidden, hidden)
                    .unwrap()
                    .reshape((longest, heads, d))
                    .unwrap()
                    .transpose(0, 1)
                    .unwrap()
                    .contiguous()
                    .unwrap()
            };
            let (q, k, v) = (part(0), part(1), part(2));
            let bias: Vec<f32> = (0..longest)
                .map(|j| if j < len { 0.0 } else { -1e4 })
                .collect();
            let bias = Tensor::from_vec(bias, (1, 1, longest), &dev).unwrap();
            let scores = (q.matmul(&k.t().unwrap()).unwrap() / (d as f64).sqrt())
                .unwrap()
                .broadcast_add(&bias)
                .unwrap();
            let probs = candle_nn::ops::softmax(&scores, D::Minus1).unwrap();
            let want = probs
                .matmul(&v)
                .unwrap()
                .transpose(0, 1)
                .unwrap()
                .reshape((longest, hidden))
                .unwrap()
                .to_vec2::<f32>()
                .unwrap();
            for (r, want_row) in want.iter().take(len).enumerate() {
                let got = &ours[(start + r) * hidden..][..hidden];
                for (c, (a, b)) in got.iter().zip(want_row).enumerate() {
                    assert!((a - b).abs() < 1e-5, "seq {s} row {r} col {c}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn layer_norm_with_residual_matches_candle() {
        let hidden = 48;
        let x = values(7 * hidden, 1);
        let r = values(7 * hidden, 5);
        let w = values(hidden, 9);
        let b = values(hidden, 11);
        let mut ours = x.clone();
        add_layer_norm(&mut ours, Some(&r), &w, &b, 1e-12);
        let dev = Device::Cpu;
        let t = (Tensor::from_vec(x, (7, hidden), &dev).unwrap()
            + Tensor::from_vec(r, (7, hidden), &dev).unwrap())
        .unwrap();
        let want = candle_nn::ops::layer_norm(
            &t,
            &Tensor::new(w.as_slice(), &dev).unwrap(),
            &Tensor::new(b.as_slice(), &dev).unwrap(),
            1e-12,
        )
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap();
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!((a - b).abs() < 1e-4, "at {i}: {a} vs {b}");
        }
    }

    #[test]
    fn lane_sums_and_max_match_plain_loops() {
        for n in [0usize, 3, 8, 13, 384] {
            let v = values(n, n);
            let plain: f32 = v.iter().sum();
            assert!((sum(&v) - plain).abs() < 1e-3, "sum of {n}");
            let m = plain / n.max(1) as f32;
            let dev: f32 = v.iter().map(|x| (x - m) * (x - m)).sum();
            assert!(
                (squared_deviations(&v, m) - dev).abs() < 1e-2,
                "deviations of {n}"
            );
            assert_eq!(max(&v), v.iter().copied().fold(f32::NEG_INFINITY, f32::max));
        }
    }

    #[test]
    fn pooling_averages_each_sequence_and_normalises() {
        let x = vec![1.0, 0.0, 3.0, 0.0, 0.0, 2.0];
        let v = mean_pool(&x, &[2, 1], 2);
        assert_eq!(v, vec![vec![1.0, 0.0], vec![0.0, 1.0]]);
    }
}
