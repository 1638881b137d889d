//! The INT8 path's matrix product: `y = x·Wᵀ + b` with `W` quantized to 8 bits per output
//! row (symmetric) and each row of `x` quantized to 7 bits at run time (asymmetric, with a
//! zero point), the products summed exactly in `i32`.
//!
//! Written here because no maintained crate offers an integer GEMM for x86: the `gemm` crate
//! candle uses has float kernels only, and candle's Q8_0 CPU matmul is one dot product per
//! output element (0.5–0.8x of f32 on the AVX2 machine, BENCHMARKS.md).
//!
//! Three kernels share one weight layout and one quantization, best first:
//! - **AVX-512 VNNI** (`vpdpbusd` on 512-bit registers): one instruction multiplies four
//!   unsigned activation bytes by four signed weight bytes for 16 outputs and adds the sums to
//!   `i32`; a call covers 4 rows × 64 outputs (16 accumulators).
//! - **AVX-VNNI** (the same instruction on 256-bit registers, on CPUs without AVX-512).
//! - **AVX2**: `vpmaddubsw` (unsigned × signed bytes, adjacent pairs summed to `i16`) and
//!   `vpmaddwd` (pairs of `i16` summed to `i32`), three instructions where VNNI needs one.
//!
//! Activations keep 7 bits so an AVX2 pair can never saturate `i16` (2·127·127 < 2¹⁵), which
//! is the reason for 7 and not 8; the VNNI kernels cannot saturate at all but use the same 7
//! bits, so every kernel computes the same integers. A portable loop computes them too where
//! none of the three runs; the tests hold all of them to identical outputs. The quantization
//! of activations and the float epilogue are plain Rust compiled once per kernel with that
//! kernel's CPU features, so the compiler vectorizes them. The unsafe code is the intrinsics,
//! their loads, and the calls into code compiled for features checked at run time.
#![allow(unsafe_code)]

use rayon::prelude::*;
use std::sync::OnceLock;

/// Outputs per packed panel: one 512-bit register (or two 256-bit ones) of `i32`.
const PANEL: usize = 16;
/// Inputs per group: the four bytes one `i32` lane sums.
const GROUP: usize = 4;
/// Rows of `x` per kernel call.
const ROWS: usize = 4;
/// Panels per kernel call at most (the AVX-512 kernel takes four: 64 outputs).
const MAX_PANELS: usize = 4;
/// Below this many multiply-adds one thread does the whole product (splitting costs more).
const PARALLEL_MIN_MACS: usize = 1 << 20;
/// From this many rows threads split the rows rather than the outputs.
const ROW_SPLIT_MIN: usize = 64;

/// One kernel call's sums: `ROWS` rows of up to `MAX_PANELS` panels.
type Acc = [[i32; PANEL * MAX_PANELS]; ROWS];

/// The integer kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kernel {
    /// `vpdpbusd` on 512-bit registers (AVX-512F + AVX-512 VNNI).
    Avx512Vnni,
    /// `vpdpbusd` on 256-bit registers (AVX-VNNI).
    AvxVnni,
    /// `vpmaddubsw` + `vpmaddwd` (AVX2).
    Avx2,
    /// Plain Rust on any CPU (slow; it sets the reference the others must match).
    Portable,
}

impl Kernel {
    /// Every kernel, best first.
    pub const ALL: [Kernel; 4] = [
        Kernel::Avx512Vnni,
        Kernel::AvxVnni,
        Kernel::Avx2,
        Kernel::Portable,
    ];

    /// The best kernel this CPU runs, or the one `MOLTBOT_INT8_KERNEL` names (`avx512-vnni`,
    /// `avx-vnni`, `avx2`, `portable`) when the CPU runs it, for comparing kernels.
    pub fn best() -> Kernel {
        static BEST: OnceLock<Kernel> = OnceLock::new();
        *BEST.get_or_init(|| {
            let asked = std::env::var("MOLTBOT_INT8_KERNEL").ok();
            let asked = asked.as_deref().and_then(Kernel::from_name);
            match asked {
                Some(k) if k.supported() => k,
                _ => Self::ALL
                    .into_iter()
                    .find(|k| k.supported())
                    .unwrap_or(Kernel::Portable),
            }
        })
    }

    /// Whether this CPU has the instructions the kernel needs.
    pub fn supported(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Kernel::Avx512Vnni => has!("avx512f") && has!("avx512vnni"),
                Kernel::AvxVnni => has!("avx2") && has!("avxvnni"),
                Kernel::Avx2 => has!("avx2"),
                Kernel::Portable => true,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self == Kernel::Portable
        }
    }

    /// The SIMD kernels this CPU runs, best first (the portable loop is not among them).
    pub fn simd_supported() -> Vec<Kernel> {
        Self::ALL
            .into_iter()
            .filter(|k| *k != Kernel::Portable && k.supported())
            .collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Kernel::Avx512Vnni => "avx512-vnni",
            Kernel::AvxVnni => "avx-vnni",
            Kernel::Avx2 => "avx2",
            Kernel::Portable => "portable",
        }
    }

    pub fn from_name(name: &str) -> Option<Kernel> {
        Self::ALL.into_iter().find(|k| k.name() == name)
    }

    /// Panels one call covers when enough are left.
    fn panels_per_call(self) -> usize {
        match self {
            Kernel::Avx512Vnni => MAX_PANELS,
            _ => 1,
        }
    }
}

/// Whether this CPU runs one of the SIMD kernels (else the portable loop does, slowly).
pub fn accelerated() -> bool {
    Kernel::best() != Kernel::Portable
}

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
        self.forward_on(x, m, Kernel::best())
    }

    /// [`Self::forward`] on a given kernel; the portable loop runs instead when this CPU
    /// lacks the kernel's instructions. Every kernel returns the same numbers.
    pub fn forward_on(&self, x: &[f32], m: usize, kernel: Kernel) -> Vec<f32> {
        assert_eq!(x.len(), m * self.k, "input is not {m} rows of {}", self.k);
        let kernel = if kernel.supported() {
            kernel
        } else {
            Kernel::Portable
        };
        let rows = QuantRows::new(x, m, self.k, kernel);
        let panels = self.n.div_ceil(PANEL);
        let mut y = vec![0f32; m * self.n];
        let threads = rayon::current_num_threads().min(panels);
        if threads <= 1 || m * self.n * self.k < PARALLEL_MIN_MACS {
            self.band(&rows, 0..m, 0..panels, kernel, &mut y, self.n);
            return y;
        }
        if m >= ROW_SPLIT_MIN {
            // Many rows: each thread takes a run of rows (whole kernel calls) with every
            // output, and writes straight into its part of `y`.
            let per = m.div_ceil(threads).next_multiple_of(ROWS);
            y.par_chunks_mut(per * self.n)
                .enumerate()
                .for_each(|(i, out)| {
                    let first = i * per;
                    let last = (first + per).min(m);
                    self.band(&rows, first..last, 0..panels, kernel, out, self.n);
                });
            return y;
        }
        // Few rows: each thread takes a run of panels (a band of output columns) for every
        // row, so it reads only its share of the weights; runs are whole kernel calls where
        // there are panels enough.
        let per = panels
            .div_ceil(threads)
            .next_multiple_of(kernel.panels_per_call());
        let bands: Vec<(usize, Vec<f32>)> = (0..panels)
            .step_by(per)
            .collect::<Vec<_>>()
            .into_par_iter()
            .map(|first| {
                let last = (first + per).min(panels);
                let width = ((last * PANEL).min(self.n)) - first * PANEL;
                let mut band = vec![0f32; m * width];
                self.band(&rows, 0..m, first..last, kernel, &mut band, width);
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

    /// Rows `row_range` against panels `range`, written into `out` (the rows of the row
    /// range, each `width` columns that start at the range's first output), in code compiled
    /// for `kernel`'s CPU features.
    fn band(
        &self,
        rows: &QuantRows,
        row_range: std::ops::Range<usize>,
        range: std::ops::Range<usize>,
        kernel: Kernel,
        out: &mut [f32],
        width: usize,
    ) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `forward_on` replaced a kernel this CPU lacks by the portable one, so the
        // features each function is compiled for are present.
        unsafe {
            match kernel {
                Kernel::Avx512Vnni => {
                    return x86::band_avx512vnni(self, rows, row_range, range, out, width);
                }
                Kernel::AvxVnni => {
                    return x86::band_avxvnni(self, rows, row_range, range, out, width);
                }
                Kernel::Avx2 => return x86::band_avx2(self, rows, row_range, range, out, width),
                Kernel::Portable => {}
            }
        }
        self.band_body(rows, row_range, range, kernel, out, width)
    }

    /// The body of [`Self::band`], inlined into each kernel's compiled copy.
    #[inline(always)]
    fn band_body(
        &self,
        rows: &QuantRows,
        row_range: std::ops::Range<usize>,
        range: std::ops::Range<usize>,
        kernel: Kernel,
        out: &mut [f32],
        width: usize,
    ) {
        let col0 = range.start * PANEL;
        let panel_len = PANEL * self.k;
        // Every kernel call writes the sums it returns, so one buffer serves them all.
        let mut acc: Acc = [[0; PANEL * MAX_PANELS]; ROWS];
        let mut p = range.start;
        while p < range.end {
            let np = if range.end - p >= kernel.panels_per_call() {
                kernel.panels_per_call()
            } else {
                1
            };
            let w = &self.packed[p * panel_len..(p + np) * panel_len];
            let first = p * PANEL;
            let cols = (np * PANEL).min(self.n - first);
            let (sum, scale, bias) = (
                &self.sum[first..first + cols],
                &self.scale[first..first + cols],
                &self.bias[first..first + cols],
            );
            let mut r0 = row_range.start;
            while r0 < row_range.end {
                let mr = ROWS.min(row_range.end - r0);
                dot(kernel, rows, r0, mr, w, np, &mut acc);
                for (r, acc) in acc.iter().enumerate().take(mr) {
                    let row = r0 + r;
                    // A row with NaN or infinity gives NaN, as the f32 product would.
                    let sx = if rows.finite[row] {
                        rows.scale[row]
                    } else {
                        f32::NAN
                    };
                    let zp = rows.zero[row];
                    let start = (row - row_range.start) * width + first - col0;
                    let dst = &mut out[start..start + cols];
                    for ((((d, &a), &sm), &s), &b) in dst
                        .iter_mut()
                        .zip(&acc[..cols])
                        .zip(sum)
                        .zip(scale)
                        .zip(bias)
                    {
                        *d = (a - zp * sm) as f32 * (sx * s) + b;
                    }
                }
                r0 += mr;
            }
            p += np;
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
    k: usize,
    q: Vec<u8>,
    scale: Vec<f32>,
    zero: Vec<i32>,
    /// Rows without NaN or infinity.
    finite: Vec<bool>,
}

impl QuantRows {
    /// Quantize `x` (`m` rows of `k`) in code compiled for `kernel`'s CPU features.
    fn new(x: &[f32], m: usize, k: usize, kernel: Kernel) -> Self {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller passes a kernel this CPU runs.
        unsafe {
            match kernel {
                Kernel::Avx512Vnni => return x86::quantize_avx512vnni(x, m, k),
                Kernel::AvxVnni => return x86::quantize_avxvnni(x, m, k),
                Kernel::Avx2 => return x86::quantize_avx2(x, m, k),
                Kernel::Portable => {}
            }
        }
        let _ = kernel;
        Self::build(x, m, k)
    }

    /// Written in lanes of 16 with no early exit, so that it vectorizes: the range, and a
    /// sum of `v · 0` that is NaN exactly when the row holds NaN or infinity, in one pass;
    /// then `q = v / s + zp` rounded and clamped to 0..=127.
    #[inline(always)]
    fn build(x: &[f32], m: usize, k: usize) -> Self {
        const L: usize = 16;
        let mut q = vec![0u8; m * k];
        let mut scale = Vec::with_capacity(m);
        let mut zero = Vec::with_capacity(m);
        let mut finite = Vec::with_capacity(m);
        for (row, out) in x.chunks_exact(k).zip(q.chunks_exact_mut(k)) {
            // The range always holds 0, so zero is exact (padding and ReLU-like zeros stay 0).
            let (mut lo, mut hi, mut bad) = ([0f32; L], [0f32; L], [0f32; L]);
            let (lanes, tail) = row.as_chunks::<L>();
            for c in lanes {
                for i in 0..L {
                    lo[i] = if c[i] < lo[i] { c[i] } else { lo[i] };
                    hi[i] = if c[i] > hi[i] { c[i] } else { hi[i] };
                    bad[i] += c[i] * 0.0;
                }
            }
            for (i, &v) in tail.iter().enumerate() {
                lo[i] = if v < lo[i] { v } else { lo[i] };
                hi[i] = if v > hi[i] { v } else { hi[i] };
                bad[i] += v * 0.0;
            }
            let lo = lo.iter().fold(0f32, |a, &b| a.min(b));
            let hi = hi.iter().fold(0f32, |a, &b| a.max(b));
            finite.push(bad.iter().all(|b| *b == 0.0));
            let s = if hi > lo { (hi - lo) / 127.0 } else { 1.0 };
            let zp = (-lo / s).round().clamp(0.0, 127.0);
            for (o, &v) in out.iter_mut().zip(row) {
                // Adding 2²³ to a number in 0..=127 leaves it rounded (to even) in the low
                // bits of the mantissa: a bit cast, where `as i32` would be a scalar
                // conversion with saturation checks. A NaN row gives 0 (and NaN outputs).
                *o = ((v / s + zp).clamp(0.0, 127.0) + 8_388_608.0).to_bits() as u8;
            }
            scale.push(s);
            zero.push(zp as i32);
        }
        Self {
            k,
            q,
            scale,
            zero,
            finite,
        }
    }
}

/// Integer dot products of rows `r0..r0 + mr` (1 to 4) with `np` consecutive panels (`w`,
/// `np · k · PANEL` bytes; `np` is 1, or the kernel's panels per call).
#[inline(always)]
fn dot(kernel: Kernel, rows: &QuantRows, r0: usize, mr: usize, w: &[i8], np: usize, acc: &mut Acc) {
    let x = &rows.q[r0 * rows.k..(r0 + mr) * rows.k];
    let k = rows.k;
    assert_eq!(w.len(), k * PANEL * np);
    assert!((1..=ROWS).contains(&mr) && (np == 1 || np == kernel.panels_per_call()));
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel is one this CPU runs (`forward_on`); each reads `x` (`mr` rows of
    // `k`) and `w` (`np · k · PANEL` bytes) within the lengths checked above.
    unsafe {
        // The kernels take the row count (and the AVX-512 one its panel count) as constants.
        macro_rules! rows_of {
            ($kernel:ident $(, $np:expr)?) => {
                match mr {
                    1 => x86::$kernel::<1 $(, $np)?>(x, k, w, acc),
                    2 => x86::$kernel::<2 $(, $np)?>(x, k, w, acc),
                    3 => x86::$kernel::<3 $(, $np)?>(x, k, w, acc),
                    _ => x86::$kernel::<4 $(, $np)?>(x, k, w, acc),
                }
            };
        }
        match (kernel, np) {
            (Kernel::Avx512Vnni, MAX_PANELS) => return rows_of!(dot_avx512vnni, MAX_PANELS),
            (Kernel::Avx512Vnni, _) => return rows_of!(dot_avx512vnni, 1),
            (Kernel::AvxVnni, _) => return rows_of!(dot_avxvnni),
            (Kernel::Avx2, _) => return rows_of!(dot_avx2),
            (Kernel::Portable, _) => {}
        }
    }
    for row in acc.iter_mut().take(mr) {
        row[..np * PANEL].fill(0);
    }
    for p in 0..np {
        let w = &w[p * k * PANEL..(p + 1) * k * PANEL];
        for (r, row) in x.chunks_exact(k).enumerate() {
            for (g, four) in row.chunks_exact(GROUP).enumerate() {
                let block = &w[g * PANEL * GROUP..(g + 1) * PANEL * GROUP];
                for (lane, ws) in block.chunks_exact(GROUP).enumerate() {
                    acc[r][p * PANEL + lane] += four
                        .iter()
                        .zip(ws)
                        .map(|(&a, &b)| i32::from(a) * i32::from(b))
                        .sum::<i32>();
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{Acc, Int8Linear, Kernel, QuantRows, GROUP, PANEL, ROWS};
    use std::arch::x86_64::*;
    use std::ops::Range;

    /// A kernel's own copies of the activation quantization and of the band loop, compiled
    /// with its CPU features so the plain Rust in them is vectorized.
    macro_rules! compiled_for {
        ($features:literal, $kernel:expr, $quantize:ident, $band:ident) => {
            #[target_feature(enable = $features)]
            pub(super) fn $quantize(x: &[f32], m: usize, k: usize) -> QuantRows {
                QuantRows::build(x, m, k)
            }

            #[target_feature(enable = $features)]
            pub(super) fn $band(
                lin: &Int8Linear,
                rows: &QuantRows,
                row_range: Range<usize>,
                range: Range<usize>,
                out: &mut [f32],
                width: usize,
            ) {
                lin.band_body(rows, row_range, range, $kernel, out, width)
            }
        };
    }

    compiled_for!(
        "avx512f,avx512vnni",
        Kernel::Avx512Vnni,
        quantize_avx512vnni,
        band_avx512vnni
    );
    compiled_for!(
        "avx2,avxvnni",
        Kernel::AvxVnni,
        quantize_avxvnni,
        band_avxvnni
    );
    compiled_for!("avx2", Kernel::Avx2, quantize_avx2, band_avx2);

    /// `MR` rows (1..=4) of 7-bit activations against `NP` consecutive panels (1 or 4), one
    /// `vpdpbusd` per row and panel for each group of four inputs: 16 accumulators at most.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512 VNNI; `x` holds `MR · k` bytes and `w` holds
    /// `NP · k · PANEL` bytes.
    #[target_feature(enable = "avx512f,avx512vnni")]
    pub(super) unsafe fn dot_avx512vnni<const MR: usize, const NP: usize>(
        x: &[u8],
        k: usize,
        w: &[i8],
        acc: &mut Acc,
    ) {
        debug_assert!(x.len() >= MR * k && w.len() >= NP * k * PANEL && MR <= ROWS);
        let mut c = [[_mm512_setzero_si512(); NP]; MR];
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        let panel_len = k * PANEL;
        for g in 0..k / GROUP {
            let mut b = [_mm512_setzero_si512(); NP];
            for (p, b) in b.iter_mut().enumerate() {
                // SAFETY: p < NP and g < k/4: within the NP·k·PANEL bytes of `w`.
                *b = _mm512_loadu_si512(wp.add(p * panel_len + g * PANEL * GROUP).cast());
            }
            for (r, c) in c.iter_mut().enumerate() {
                // SAFETY: r < MR and g < k/4: within the MR·k bytes of `x`.
                let four = xp.add(r * k + g * GROUP).cast::<i32>().read_unaligned();
                let a = _mm512_set1_epi32(four);
                for (c, b) in c.iter_mut().zip(&b) {
                    *c = _mm512_dpbusd_epi32(*c, a, *b);
                }
            }
        }
        for (out, c) in acc.iter_mut().zip(&c) {
            for (p, c) in c.iter().enumerate() {
                _mm512_storeu_si512(out[p * PANEL..].as_mut_ptr().cast(), *c);
            }
        }
    }

    /// `MR` rows (1..=4) against one panel, `vpdpbusd` on two 256-bit halves.
    ///
    /// # Safety
    /// The CPU has AVX2 and AVX-VNNI; `x` holds `MR · k` bytes and `w` holds `k · PANEL`.
    #[target_feature(enable = "avx2,avxvnni")]
    pub(super) unsafe fn dot_avxvnni<const MR: usize>(x: &[u8], k: usize, w: &[i8], acc: &mut Acc) {
        // SAFETY: the caller's guarantees are `dot_256`'s.
        unsafe { dot_256::<MR>(x, k, w, acc, |c, a, b| _mm256_dpbusd_avx_epi32(c, a, b)) }
    }

    /// `MR` rows (1..=4) against one panel with AVX2's byte and word multiply-adds.
    ///
    /// # Safety
    /// The CPU has AVX2; `x` holds `MR · k` bytes and `w` holds `k · PANEL` bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn dot_avx2<const MR: usize>(x: &[u8], k: usize, w: &[i8], acc: &mut Acc) {
        let ones = _mm256_set1_epi16(1);
        // SAFETY: the caller's guarantees are `dot_256`'s.
        unsafe {
            dot_256::<MR>(x, k, w, acc, |c, a, b| {
                _mm256_add_epi32(c, _mm256_madd_epi16(_mm256_maddubs_epi16(a, b), ones))
            })
        }
    }

    /// The loop both 256-bit kernels share: `MR` rows against one panel's two halves of 8
    /// outputs; `madd(c, a, b)` adds the products of one group of four bytes to `c`.
    /// Inlined into each kernel, so it runs with that kernel's features.
    ///
    /// # Safety
    /// The CPU has AVX2 and what `madd` uses; `x` holds `MR · k` bytes and `w` holds
    /// `k · PANEL` bytes.
    #[inline(always)]
    unsafe fn dot_256<const MR: usize>(
        x: &[u8],
        k: usize,
        w: &[i8],
        acc: &mut Acc,
        madd: impl Fn(__m256i, __m256i, __m256i) -> __m256i,
    ) {
        debug_assert!(x.len() >= MR * k && w.len() >= k * PANEL && MR <= ROWS);
        let mut lo = [_mm256_setzero_si256(); MR];
        let mut hi = [_mm256_setzero_si256(); MR];
        let (xp, wp) = (x.as_ptr(), w.as_ptr());
        for g in 0..k / GROUP {
            // SAFETY (all loads): g < k/4, so the panel offset stays below k·PANEL bytes and
            // the row offset below MR·k bytes.
            unsafe {
                let b0 = _mm256_loadu_si256(wp.add(g * PANEL * GROUP).cast());
                let b1 = _mm256_loadu_si256(wp.add(g * PANEL * GROUP + 32).cast());
                for r in 0..MR {
                    let four = xp.add(r * k + g * GROUP).cast::<i32>().read_unaligned();
                    let a = _mm256_set1_epi32(four);
                    lo[r] = madd(lo[r], a, b0);
                    hi[r] = madd(hi[r], a, b1);
                }
            }
        }
        for r in 0..MR {
            // SAFETY: each row of `acc` holds PANEL · MAX_PANELS ≥ 16 lanes.
            unsafe {
                _mm256_storeu_si256(acc[r].as_mut_ptr().cast(), lo[r]);
                _mm256_storeu_si256(acc[r][8..].as_mut_ptr().cast(), hi[r]);
            }
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
    fn every_kernel_this_cpu_runs_matches_the_portable_loop_exactly() {
        let kernels = Kernel::simd_supported();
        eprintln!(
            "kernels checked: {:?}",
            kernels.iter().map(|k| k.name()).collect::<Vec<_>>()
        );
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        // Outputs that leave single panels after the four-panel calls, partial last panels,
        // and products large enough for threads: split by rows (64 and 70 rows; 70 leaves
        // a short last run) and by outputs (37 rows; one band ends in single panels).
        for (m, n, k) in [
            (7, 48, 96),
            (5, 87, 64),
            (64, 160, 128),
            (70, 48, 512),
            (37, 384, 384),
            (37, 160, 256),
        ] {
            let (x, w, b) = (
                random(&mut rng, m * k),
                random(&mut rng, n * k),
                random(&mut rng, n),
            );
            let lin = Int8Linear::new(&w, &b, n, k).unwrap();
            let want = lin.forward_on(&x, m, Kernel::Portable);
            for &kernel in &kernels {
                let got = lin.forward_on(&x, m, kernel);
                assert!(
                    got.iter()
                        .zip(&want)
                        .all(|(g, e)| g.to_bits() == e.to_bits()),
                    "{} differs from the portable loop at m={m} n={n} k={k}",
                    kernel.name()
                );
            }
        }
    }

    #[test]
    fn kernels_are_named_and_the_best_is_one_the_cpu_runs() {
        for k in Kernel::ALL {
            assert_eq!(Kernel::from_name(k.name()), Some(k));
        }
        assert_eq!(Kernel::from_name("sse9"), None);
        assert!(Kernel::best().supported());
        assert!(Kernel::Portable.supported());
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
