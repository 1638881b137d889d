//! Distance kernels written so LLVM turns them into AVX2/FMA code.
//!
//! The workspace denies `unsafe`, so there are no intrinsics here. Instead each loop keeps
//! eight independent lanes per accumulator (one ymm register) and two accumulators, which
//! lets the compiler vectorise without reassociating floating-point sums on its own (it may
//! not: that would change results). `mul_add` lowers to `vfmadd` because the workspace builds
//! for x86-64-v3.

/// Inner product of two equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a16, a_rest) = a[..n].as_chunks::<16>();
    let (b16, b_rest) = b[..n].as_chunks::<16>();
    let mut acc0 = [0.0f32; 8];
    let mut acc1 = [0.0f32; 8];
    for (x, y) in a16.iter().zip(b16) {
        for i in 0..8 {
            acc0[i] = x[i].mul_add(y[i], acc0[i]);
        }
        for i in 0..8 {
            acc1[i] = x[i + 8].mul_add(y[i + 8], acc1[i]);
        }
    }
    let (a8, a_tail) = a_rest.as_chunks::<8>();
    let (b8, b_tail) = b_rest.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for i in 0..8 {
            acc0[i] = x[i].mul_add(y[i], acc0[i]);
        }
    }
    let mut sum = 0.0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        sum = x.mul_add(*y, sum);
    }
    sum + reduce(acc0, acc1)
}

/// Squared Euclidean distance of two equal-length slices.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a16, a_rest) = a[..n].as_chunks::<16>();
    let (b16, b_rest) = b[..n].as_chunks::<16>();
    let mut acc0 = [0.0f32; 8];
    let mut acc1 = [0.0f32; 8];
    for (x, y) in a16.iter().zip(b16) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc0[i] = d.mul_add(d, acc0[i]);
        }
        for i in 0..8 {
            let d = x[i + 8] - y[i + 8];
            acc1[i] = d.mul_add(d, acc1[i]);
        }
    }
    let (a8, a_tail) = a_rest.as_chunks::<8>();
    let (b8, b_tail) = b_rest.as_chunks::<8>();
    for (x, y) in a8.iter().zip(b8) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc0[i] = d.mul_add(d, acc0[i]);
        }
    }
    let mut sum = 0.0f32;
    for (x, y) in a_tail.iter().zip(b_tail) {
        let d = x - y;
        sum = d.mul_add(d, sum);
    }
    sum + reduce(acc0, acc1)
}

/// Adds up the lanes of both accumulators.
///
/// The `black_box` is deliberate: when LLVM sees the horizontal sum in the same function
/// as the loop, its SLP vectoriser pairs lanes across the two accumulators and emits
/// 128-bit shuffles instead of two independent 256-bit FMA chains (checked with
/// `objdump`: 2x slower). The barrier costs one 64-byte store and reload per call.
#[inline(always)]
fn reduce(acc0: [f32; 8], acc1: [f32; 8]) -> f32 {
    let (acc0, acc1) = std::hint::black_box((acc0, acc1));
    let mut s = 0.0f32;
    for i in 0..8 {
        s += acc0[i] + acc1[i];
    }
    s
}

#[inline(always)]
fn fma8(acc: &mut [f32; 8], x: &[f32; 8], y: &[f32; 8]) {
    for i in 0..8 {
        acc[i] = x[i].mul_add(y[i], acc[i]);
    }
}

#[inline(always)]
fn sq8(acc: &mut [f32; 8], x: &[f32; 8], y: &[f32; 8]) {
    for i in 0..8 {
        let d = x[i] - y[i];
        acc[i] = d.mul_add(d, acc[i]);
    }
}

/// Shared body of the four-at-a-time kernels: `q` and every `v` have the same length, a
/// multiple of 8 (the HNSW pads its vectors so).
#[inline(always)]
fn x4(q: &[f32], v: [&[f32]; 4], step: impl Fn(&mut [f32; 8], &[f32; 8], &[f32; 8])) -> [f32; 4] {
    let (q8, _) = q.as_chunks::<8>();
    let (a8, _) = v[0].as_chunks::<8>();
    let (b8, _) = v[1].as_chunks::<8>();
    let (c8, _) = v[2].as_chunks::<8>();
    let (d8, _) = v[3].as_chunks::<8>();
    let mut acc = [[0.0f32; 8]; 4];
    for ((((qq, a), b), c), d) in q8.iter().zip(a8).zip(b8).zip(c8).zip(d8) {
        step(&mut acc[0], qq, a);
        step(&mut acc[1], qq, b);
        step(&mut acc[2], qq, c);
        step(&mut acc[3], qq, d);
    }
    // See `reduce` for why the barrier is here.
    let acc = std::hint::black_box(acc);
    let mut out = [0.0f32; 4];
    for k in 0..4 {
        let mut s = 0.0f32;
        for x in acc[k] {
            s += x;
        }
        out[k] = s;
    }
    out
}

/// Dot products of `q` with four vectors at once. Interleaving four independent
/// vectors lets the CPU have all their cache misses in flight together, which is what a
/// graph search waits on; faiss does the same with its batch-of-4 kernels. Lengths must be
/// equal multiples of 8.
#[inline]
pub fn dot_x4(q: &[f32], v: [&[f32]; 4]) -> [f32; 4] {
    x4(q, v, fma8)
}

/// Squared L2 distances of `q` to four vectors at once; see [`dot_x4`].
#[inline]
pub fn l2_squared_x4(q: &[f32], v: [&[f32]; 4]) -> [f32; 4] {
    x4(q, v, sq8)
}

/// Scales `v` to unit length in place; a zero vector is left as it is.
pub fn normalize(v: &mut [f32]) {
    let norm = dot(v, v).sqrt();
    if norm > 0.0 && norm.is_finite() {
        for x in v.iter_mut() {
            *x /= norm;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_match_scalar_sums() {
        for n in [0usize, 1, 7, 8, 15, 16, 17, 50, 384, 385] {
            let a: Vec<f32> = (0..n).map(|i| (i as f32 * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| (i as f32 * 0.11).cos()).collect();
            let d: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            let l: f32 = a.iter().zip(&b).map(|(x, y)| (x - y) * (x - y)).sum();
            assert!((dot(&a, &b) - d).abs() < 1e-3, "dot n={n}");
            assert!((l2_squared(&a, &b) - l).abs() < 1e-3, "l2 n={n}");
            if n % 8 == 0 {
                let d4 = dot_x4(&a, [&b, &a, &b, &b]);
                assert!(
                    (d4[0] - d).abs() < 1e-3 && (d4[3] - d).abs() < 1e-3,
                    "x4 n={n}"
                );
                let l4 = l2_squared_x4(&a, [&a, &b, &a, &b]);
                assert!(
                    l4[0].abs() < 1e-6 && (l4[1] - l).abs() < 1e-3,
                    "l2 x4 n={n}"
                );
            }
        }
    }
}
