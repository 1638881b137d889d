//! Distance kernels written so LLVM turns them into AVX2/FMA code.
//!
//! The workspace forbids `unsafe`, so there are no intrinsics here. Instead each loop keeps
//! eight independent lanes per accumulator (one ymm register) and two accumulators, which
//! lets the compiler vectorise without reassociating floating-point sums on its own (it may
//! not: that would change results). `mul_add` lowers to `vfmadd` because the workspace builds
//! for x86-64-v3.

/// Inner product of two equal-length slices.
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc0 = [0.0f32; 8];
    let mut acc1 = [0.0f32; 8];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            acc0[i] = x[i].mul_add(y[i], acc0[i]);
            acc1[i] = x[i + 8].mul_add(y[i + 8], acc1[i]);
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut ca8 = ra.chunks_exact(8);
    let mut cb8 = rb.chunks_exact(8);
    for (x, y) in (&mut ca8).zip(&mut cb8) {
        for i in 0..8 {
            acc0[i] = x[i].mul_add(y[i], acc0[i]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca8.remainder().iter().zip(cb8.remainder()) {
        tail = x.mul_add(*y, tail);
    }
    let mut sum = tail;
    for i in 0..8 {
        sum += acc0[i] + acc1[i];
    }
    sum
}

/// Squared Euclidean distance of two equal-length slices.
#[inline]
pub fn l2_squared(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc0 = [0.0f32; 8];
    let mut acc1 = [0.0f32; 8];
    let mut ca = a.chunks_exact(16);
    let mut cb = b.chunks_exact(16);
    for (x, y) in (&mut ca).zip(&mut cb) {
        for i in 0..8 {
            let d0 = x[i] - y[i];
            let d1 = x[i + 8] - y[i + 8];
            acc0[i] = d0.mul_add(d0, acc0[i]);
            acc1[i] = d1.mul_add(d1, acc1[i]);
        }
    }
    let (ra, rb) = (ca.remainder(), cb.remainder());
    let mut ca8 = ra.chunks_exact(8);
    let mut cb8 = rb.chunks_exact(8);
    for (x, y) in (&mut ca8).zip(&mut cb8) {
        for i in 0..8 {
            let d = x[i] - y[i];
            acc0[i] = d.mul_add(d, acc0[i]);
        }
    }
    let mut tail = 0.0f32;
    for (x, y) in ca8.remainder().iter().zip(cb8.remainder()) {
        let d = x - y;
        tail = d.mul_add(d, tail);
    }
    let mut sum = tail;
    for i in 0..8 {
        sum += acc0[i] + acc1[i];
    }
    sum
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
        }
    }
}
