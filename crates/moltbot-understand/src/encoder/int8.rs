//! The INT8 path's matrix product: `y = x·Wᵀ + b` with `W` quantized to 8 bits per output
//! row (symmetric) and each row of `x` quantized to 7 bits at run time (asymmetric, with a
//! zero point), the products summed exactly in `i32`.
//!
//! Written here because no maintained crate offers an integer GEMM for x86: the `gemm` crate
//! candle uses has float kernels only, and candle's Q8_0 CPU matmul is one dot product per
//! output element (0.5–0.8x of f32 on the AVX2 machine, BENCHMARKS.md). The inner loop is
//! AVX2's `vpmaddubsw` (unsigned × signed bytes, adjacent pairs summed to `i16`) and
//! `vpmaddwd` (pairs of `i16` summed to `i32`). Activations keep 7 bits so a pair can never
//! saturate `i16` (2·127·127 < 2¹⁵), which is the reason for 7 and not 8. A portable loop
//! computes the same integers where AVX2 is missing; the tests hold the two to identical
//! outputs. The unsafe code is the intrinsics and their loads, nothing else.
#![allow(unsafe_code)]

use rayon::prelude::*;

/// Outputs per packed panel: two AVX2 registers of eight `i32` each.
const PANEL: usize = 16;
/// Inputs per group: the four bytes one `i32` lane sums.
const GROUP: usize = 4;
/// Rows of `x` per kernel call (accumulators: `ROWS` × 2 registers).
const ROWS: usize = 4;
/// Below this many multiply-adds one thread does the whole product (splitting costs more).
const PARALLEL_MIN_MACS: usize = 1 << 20;

/// A linear layer with INT8 weights.
#[derive(Debug, Clone)]
pub struct Int8Linear {
    /// Outputs.
    n: usize,
    /// Inputs (a multiple of [`GROUP`]).
    k: usize,
    /// Weights in panels of [`PANEL`] outputs: `[panel][k / GROUP][PANEL][GROUP]`; the
    /// outputs past `n` in the last panel are zeros.
    packed: Vec<i8>,
    /// Per output: the weight scale, and the sum of its quantized weights (for the zero point
    /// of the activations).
    scale: Vec<f32>,
    sum: Vec<i32>,
    bias: Vec<f32>,
}

/// Whether this CPU runs the AVX2 kernel (else the portable loop does, slowly).
pub fn accelerated() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

impl Int8Linear {
    /// Quantize `weight` (`n` rows of `k` inputs, row-major) with `bias` (`n`). `None` when
    /// the shapes do not fit (`k` not a multiple of 4, or lengths that disagree).
    pub fn new(weight: &[f32], bias: &[f32], n: usize, k: usize) -> Option<Self> {
        if k == 0 || !k.is_multiple_of(GROUP) || weight.len() != n * k || bias.len() != n {
            return None;
        }
        let mut packed = vec![0i8; n.div_ceil(PANEL) * PANEL * k];
        let mut scale = Vec::with_capacity(n);
        let mut sum = Vec::with_capacity(n);
        for (o, row) in weight.chunks_exact(k).enumerate() {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let s = if max > 0.0 { max / 127.0 } else { 1.0 };
            scale.push(s);
            let mut total = 0i32;
            for (i, v) in row.iter().enumerate() {
                let q = (v / s).round().clamp(-127.0, 127.0) as i8;
                total += i32::from(q);
                packed[packed_at(k, o, i)] = q;
            }
            sum.push(total);
        }
        Some(Self {
            n,
            k,
            packed,
            scale,
            sum,
            bias: bias.to_vec(),
        })
    }

    pub fn outputs(&self) -> usize {
        self.n
    }

    pub fn inputs(&self) -> usize {
        self.k
    }

    /// The weights as f32 again (row-major `n × k`), and the bias.
    pub fn dequantized(&self) -> (Vec<f32>, Vec<f32>) {
        let mut w = vec![0f32; self.n * self.k];
        for o in 0..self.n {
            for i in 0..self.k {
                w[o * self.k + i] = f32::from(self.packed[packed_at(self.k, o, i)]) * self.scale[o];
            }
        }
        (w, self.bias.clone())
    }

    /// `x·Wᵀ + b` for `x` of `m` rows (row-major `m × k`); returns `m × n`, row-major.
    pub fn forward(&self, x: &[f32], m: usize) -> Vec<f32> {
        self.forward_with(x, m, accelerated())
    }

    /// `simd` asks for the AVX2 kernel; it is used only where the CPU has it.
    fn forward_with(&self, x: &[f32], m: usize, simd: bool) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not {m} rows of {}", self.k);
        let simd = simd && accelerated();
        let rows = QuantRows::new(x, m, self.k);
        let panels = self.n.div_ceil(PANEL);
        let mut y = vec![0f32; m * self.n];
        let threads = rayon::current_num_threads().min(panels);
        if threads <= 1 || m * self.n * self.k < PARALLEL_MIN_MACS {
            self.panels(&rows, 0..panels, simd, &mut y, self.n);
            return y;
        }
        // Each thread takes a run of panels (a band of output columns) for every row.
        let per = panels.div_ceil(threads);
        let bands: Vec<(usize, Vec<f32>)> = (0..panels)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|first| {
                let last = (first + per).min(panels);
                let width = ((last * PANEL).min(self.n)) - first * PANEL;
                let mut band = vec![0f32; m * width];
                self.panels(&rows, first..last, simd, &mut band, width);
                (first * PANEL, band)
            })
            .collect();
        for (col, band) in bands {
            let width = band.len() / m.max(1);
            for (r, out) in band.chunks_exact(width).enumerate() {
                y[r * self.n + col..r * self.n + col + width].copy_from_slice(out);
            }
        }
        y
    }

    /// Panels `range` for every row, written into `out` (rows of `width` columns that start
    /// at the range's first output).
    fn panels(
        &self,
        rows: &QuantRows,
        range: std::ops::Range<usize>,
        simd: bool,
        out: &mut [f32],
        width: usize,
    ) {
        let col0 = range.start * PANEL;
        let panel_len = PANEL * self.k;
        for p in range {
            let w = &self.packed[p * panel_len..(p + 1) * panel_len];
            let mut r0 = 0;
            while r0 < rows.m {
                let mr = ROWS.min(rows.m - r0);
                let mut acc = [[0i32; PANEL]; ROWS];
                dot_panel(rows, r0, mr, w, &mut acc, simd);
                for (r, acc) in acc.iter().enumerate().take(mr) {
                    let row = r0 + r;
                    // A row with NaN or infinity gives NaN, as the f32 product would.
                    let sx = if rows.finite[row] {
                        rows.scale[row]
                    } else {
                        f32::NAN
                    };
                    let zp = rows.zero[row];
                    for (lane, &a) in acc.iter().enumerate() {
                        let o = p * PANEL + lane;
                        if o >= self.n {
                            break;
                        }
                        let exact = a - zp * self.sum[o];
                        out[row * width + o - col0] =
                            exact as f32 * (sx * self.scale[o]) + self.bias[o];
                    }
                }
                r0 += mr;
            }
        }
    }
}

/// Where weight `(output o, input i)` sits in the packed panels of a layer with `k` inputs:
/// panel `o / 16`, group `i / 4`, lane `o % 16`, byte `i % 4`.
fn packed_at(k: usize, o: usize, i: usize) -> usize {
    (((o / PANEL) * (k / GROUP) + i / GROUP) * PANEL + o % PANEL) * GROUP + i % GROUP
}

/// Rows of `x` quantized to 7 bits: `x ≈ scale · (q − zero)`.
struct QuantRows {
    m: usize,
    k: usize,
    q: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    /// Rows without NaN or infinity.
    finite: Vec<bool>,
}

impl QuantRows {
    fn new(x: &[f32], m: usize, k: usize) -> Self {
        let mut q = vec![0u8; m * k];
        let mut scale = Vec::with_capacity(m);
        let mut zero = Vec::with_capacity(m);
        let mut finite = Vec::with_capacity(m);
        for (row, out) in x.chunks_exact(k).zip(q.chunks_exact_mut(k)) {
            finite.push(row.iter().all(|v| v.is_finite()));
            // The range always holds 0, so zero is exact (padding and ReLU-like zeros stay 0).
            let (lo, hi) = row
                .iter()
                .fold((0f32, 0f32), |(lo, hi), &v| (lo.min(v), hi.max(v)));
            let s = if hi > lo { (hi - lo) / 127.0 } else { 1.0 };
            let zp = (-lo / s).round().clamp(0.0, 127.0);
            for (o, &v) in out.iter_mut().zip(row) {
                *o = (v / s + zp).round().clamp(0.0, 127.0) as u8;
            }
            scale.push(s);
            zero.push(zp as i32);
        }
        Self {
            m,
            k,
            q,
            scale,
            zero,
            finite,
        }
    }
}

/// Integer dot products of rows `r0..r0 + mr` (1 to 4) with one panel's 16 outputs; `simd`
/// only when [`accelerated`] said so.
fn dot_panel(
    rows: &QuantRows,
    r0: usize,
    mr: usize,
    w: &[i8],
    acc: &mut [[i32; PANEL]; ROWS],
    simd: bool,
) {
    let x = &rows.q[r0 * rows.k..(r0 + mr) * rows.k];
    assert_eq!(w.len(), rows.k * PANEL);
    #[cfg(target_arch = "x86_64")]
    if simd {
        // SAFETY: `simd` is only set when `accelerated()` found AVX2; the kernel reads `x`
        // (`mr` rows of `k`) and `w` (`k · PANEL` bytes) within the lengths checked above.
        unsafe {
            match mr {
                1 => avx2::dot_panel::<1>(x, rows.k, w, acc),
                2 => avx2::dot_panel::<2>(x, rows.k, w, acc),
                3 => avx2::dot_panel::<3>(x, rows.k, w, acc),
                4 => avx2::dot_panel::<4>(x, rows.k, w, acc),
                _ => unreachable!("the caller passes 1 to {ROWS} rows"),
            }
        }
        return;
    }
    let _ = simd;
    for (r, row) in x.chunks_exact(rows.k).enumerate() {
        for (g, four) in row.chunks_exact(GROUP).enumerate() {
            let block = &w[g * PANEL * GROUP..(g + 1) * PANEL * GROUP];
            for (lane, ws) in block.chunks_exact(GROUP).enumerate() {
                acc[r][lane] += four
                    .iter()
                    .zip(ws)
                    .map(|(&a, &b)| i32::from(a) * i32::from(b))
                    .sum::<i32>();
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{GROUP, PANEL, ROWS};
    use std::arch::x86_64::*;

    /// `MR` rows (1..=4) of 7-bit activations against one panel.
    ///
    /// # Safety
    /// The CPU has AVX2; `x` holds `MR · k` bytes and `w` holds `k · PANEL` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_panel<const MR: usize>(
        x: &[u8],
        k: usize,
        w: &[i8],
        acc: &mut [[i32; PANEL]; ROWS],
    ) {
        debug_assert!(x.len() >= MR * k && w.len() >= k * PANEL && MR <= ROWS);
        let ones = _mm256_set1_epi16(1);
        let mut lo = [_mm256_setzero_si256(); MR];
        let mut hi = [_mm256_setzero_si256(); MR];
        let wp = w.as_ptr();
        let xp = x.as_ptr();
        for g in 0..k / GROUP {
            // SAFETY (all loads): g < k/4, so the panel offset stays below k·PANEL bytes and
            // the row offset below MR·k bytes.
            let b0 = _mm256_loadu_si256(wp.add(g * PANEL * GROUP).cast());
            let b1 = _mm256_loadu_si256(wp.add(g * PANEL * GROUP + 32).cast());
            for r in 0..MR {
                let four = xp.add(r * k + g * GROUP).cast::<i32>().read_unaligned();
                let a = _mm256_set1_epi32(four);
                lo[r] =
                    _mm256_add_epi32(lo[r], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b0), ones));
                hi[r] =
                    _mm256_add_epi32(hi[r], _mm256_madd_epi16(_mm256_maddubs_epi16(a, b1), ones));
            }
        }
        for r in 0..MR {
            _mm256_storeu_si256(acc[r].as_mut_ptr().cast(), lo[r]);
            _mm256_storeu_si256(acc[r][8..].as_mut_ptr().cast(), hi[r]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn random(rng: &mut rand::rngs::StdRng, len: usize) -> Vec<f32> {
        (0..len).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn reference(x: &[f32], w: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        let mut y = vec![0f32; m * n];
        for r in 0..m {
            for o in 0..n {
                let dot: f32 = (0..k).map(|i| x[r * k + i] * w[o * k + i]).sum();
                y[r * n + o] = dot + b[o];
            }
        }
        y
    }

    #[test]
    fn matches_the_f32_product_within_quantization_error() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        // Row counts around the kernel's block of 4, outputs that do not fill the last panel.
        for (m, n, k) in [(1, 16, 32), (3, 40, 64), (9, 33, 128), (4, 1, 4)] {
            let (x, w, b) = (
                random(&mut rng, m * k),
                random(&mut rng, n * k),
                random(&mut rng, n),
            );
            let lin = Int8Linear::new(&w, &b, n, k).unwrap();
            let want = reference(&x, &w, &b, m, n, k);
            let got = lin.forward(&x, m);
            // Each product carries ~1/127 relative error per factor; summed over k random
            // terms the error grows like sqrt(k).
            let bound = 0.04 * (k as f32).sqrt();
            for (i, (g, e)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (g - e).abs() < bound,
                    "m={m} n={n} k={k} at {i}: {g} vs {e}"
                );
            }
            // A shifted input (all positive) still works: the zero point absorbs it.
            let shifted: Vec<f32> = x.iter().map(|v| v + 3.0).collect();
            let want = reference(&shifted, &w, &b, m, n, k);
            let got = lin.forward(&shifted, m);
            for (g, e) in got.iter().zip(&want) {
                assert!((g - e).abs() < 4.0 * bound, "{g} vs {e}");
            }
        }
    }

    #[test]
    fn a_row_with_nan_gives_nan_and_leaves_the_others_alone() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        let (w, b) = (random(&mut rng, 16 * 8), random(&mut rng, 16));
        let lin = Int8Linear::new(&w, &b, 16, 8).unwrap();
        let mut x = random(&mut rng, 2 * 8);
        let clean = lin.forward(&x, 2);
        x[3] = f32::NAN;
        let y = lin.forward(&x, 2);
        assert!(y[..16].iter().all(|v| v.is_nan()));
        assert_eq!(y[16..], clean[16..]);
    }

    #[test]
    fn the_simd_kernel_and_the_portable_loop_agree_exactly() {
        if !accelerated() {
            eprintln!("skipping: no AVX2 on this CPU");
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // Large enough to take the threaded path as well.
        for (m, n, k) in [(7, 48, 96), (37, 384, 384)] {
            let (x, w, b) = (
                random(&mut rng, m * k),
                random(&mut rng, n * k),
                random(&mut rng, n),
            );
            let lin = Int8Linear::new(&w, &b, n, k).unwrap();
            assert_eq!(
                lin.forward_with(&x, m, true),
                lin.forward_with(&x, m, false)
            );
        }
    }

    #[test]
    fn dequantized_weights_are_close_and_shapes_are_checked() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (w, b) = (random(&mut rng, 20 * 8), random(&mut rng, 20));
        let lin = Int8Linear::new(&w, &b, 20, 8).unwrap();
        assert_eq!((lin.outputs(), lin.inputs()), (20, 8));
        let (back, bias) = lin.dequantized();
        assert_eq!(bias, b);
        for (a, e) in back.iter().zip(&w) {
            assert!((a - e).abs() <= 1.0 / 254.0 + 1e-6, "{a} vs {e}");
        }
        assert!(
            Int8Linear::new(&w[..160], &b[..16], 16, 10).is_none(),
            "k not a multiple of 4"
        );
        assert!(
            Int8Linear::new(&w, &b[..3], 20, 8).is_none(),
            "bias too short"
        );
    }
}
