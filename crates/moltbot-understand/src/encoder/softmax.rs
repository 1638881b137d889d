//! Softmax over the last dimension of attention scores, vectorized and split over threads.
//!
//! candle's `softmax_last_dim` calls libm's scalar `expf` per element, and every masked
//! position (a score near −10⁴) takes `expf`'s underflow path, which sets `errno`: perf
//! showed about 10% of the INT8 encoder's batch-32 time there. Here `exp` is evaluated for
//! `x ≤ 0` only (scores minus their row's maximum) with no calls or branches, so the
//! compiler vectorizes it, and anything below −87 is 0 outright.

use rayon::prelude::*;

/// Below this, `eˣ` is under f32's smallest normal number: the result is 0.
const UNDERFLOW: f32 = -87.0;
/// 1.5 · 2²³: adding it rounds a float of magnitude < 2²² to an integer held in the low
/// bits of the mantissa.
const ROUND: f32 = 12_582_912.0;
/// ln 2 in two parts (the first with trailing zero bits, so `n · LN2_HI` is exact).
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Rows per task when the scores are split over threads.
const ROWS_PER_TASK: usize = 256;

/// `eˣ` for `x ≤ 0`, to about 2 units in the last place; 0 below −87 (and for −∞), NaN for
/// NaN.
#[inline(always)]
pub fn exp_nonpositive(x_in: f32) -> f32 {
    let under = x_in < UNDERFLOW;
    let x = x_in.max(UNDERFLOW);
    // x = n·ln2 + r with n an integer and |r| ≤ ln2/2, so eˣ = 2ⁿ · eʳ.
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let n = shifted - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    // eʳ by its Taylor series to r⁶; the next term is below 1.2e-7 for |r| ≤ ln2/2.
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2ⁿ built from its bits: n sits in the low mantissa bits of `shifted` as an offset
    // from ROUND's, and n ≥ −126 here, so the exponent field n + 127 is at least 1.
    let n_int = shifted.to_bits().wrapping_sub(ROUND.to_bits());
    let two_n = f32::from_bits(n_int.wrapping_add(127) << 23);
    if under {
        0.0
    } else if x_in.is_nan() {
        x_in
    } else {
        p * two_n
    }
}

/// Attention weights from raw scores, in place: each row of `len` values `s` becomes
/// `softmax(scale · s + bias)`. Rows come in runs of `rows_per_seq` (heads × query
/// positions) that belong to one sequence, whose `len` key biases are the matching slice of
/// `bias` (0 for a token, a large negative number for padding).
pub fn attention_in_place(
    v: &mut [f32],
    len: usize,
    rows_per_seq: usize,
    scale: f32,
    bias: &[f32],
) {
    if len == 0 || rows_per_seq == 0 {
        return;
    }
    assert!(v.len().is_multiple_of(len), "scores are not rows of {len}");
    assert_eq!(
        bias.len(),
        v.len() / len / rows_per_seq * len,
        "one bias row per sequence"
    );
    let run = |first_row: usize, rows: &mut [f32]| {
        for (i, row) in rows.chunks_exact_mut(len).enumerate() {
            let seq = (first_row + i) / rows_per_seq;
            let b = &bias[seq * len..(seq + 1) * len];
            let mut max = f32::NEG_INFINITY;
            for (x, &b) in row.iter_mut().zip(b) {
                *x = *x * scale + b;
                max = max.max(*x);
            }
            let mut sum = 0f32;
            for x in row.iter_mut() {
                *x = exp_nonpositive(*x - max);
                sum += *x;
            }
            let inv = 1.0 / sum;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    };
    let rows = v.len() / len;
    if rows < 2 * ROWS_PER_TASK {
        run(0, v);
    } else {
        v.par_chunks_mut(ROWS_PER_TASK * len)
            .enumerate()
            .for_each(|(i, rows)| run(i * ROWS_PER_TASK, rows));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_within_two_ulp_and_zero_past_underflow() {
        let mut worst = 0f64;
        for i in 0..=870_000 {
            let x = -(i as f32) * 1e-4;
            let want = f64::from(x).exp();
            let got = f64::from(exp_nonpositive(x));
            if want > 1.2e-38 {
                worst = worst.max((got - want).abs() / want);
            }
        }
        assert!(worst < 2.5e-7, "max relative error {worst}");
        assert_eq!(exp_nonpositive(0.0), 1.0);
        assert_eq!(exp_nonpositive(-100.0), 0.0);
        assert_eq!(exp_nonpositive(f32::NEG_INFINITY), 0.0);
        assert!(exp_nonpositive(f32::NAN).is_nan());
    }

    #[test]
    fn attention_matches_candle_with_scale_and_masked_keys() {
        // 3 sequences × 2 heads × 37 query positions, rows of 37 keys; each sequence masks
        // a different tail. Enough rows to be split over threads.
        let (seqs, heads, len) = (3usize, 2usize, 37usize);
        let per = heads * len;
        let rows = seqs * per;
        let scores: Vec<f32> = (0..rows * len)
            .map(|i| ((i * 7919) % 1000) as f32 / 50.0 - 10.0)
            .collect();
        let bias: Vec<f32> = (0..seqs * len)
            .map(|i| {
                if i % len >= len - 5 * (i / len) {
                    -1e4
                } else {
                    0.0
                }
            })
            .collect();
        let scale = 0.125;
        let mut ours = scores.clone();
        attention_in_place(&mut ours, len, per, scale, &bias);
        let dev = candle_core::Device::Cpu;
        let t = candle_core::Tensor::from_vec(scores, (seqs, heads, len, len), &dev).unwrap();
        let b = candle_core::Tensor::from_vec(bias, (seqs, 1, 1, len), &dev).unwrap();
        let want =
            candle_nn::ops::softmax_last_dim(&(t * 0.125).unwrap().broadcast_add(&b).unwrap())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
        for (i, (a, b)) in ours.iter().zip(&want).enumerate() {
            assert!((a - b).abs() <= 1e-6, "at {i}: {a} vs candle {b}");
        }
        for (r, row) in ours.chunks(len).enumerate() {
            assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5);
            let masked = 5 * (r / per);
            assert!(row[len - masked..].iter().all(|&p| p == 0.0), "row {r}");
        }
    }
}
