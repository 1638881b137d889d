//! The INT8 kernel against candle's f32 matmul on the encoder's projection shapes (MiniLM:
//! 384 → 1152 fused QKV, 384 → 384, 384 → 1536, 1536 → 384), at the row counts of a short
//! sentence alone (16) and of a padded batch of 32 (512). Prints one line per shape with
//! both times and their ratio, so the two are compared within one run.
//!
//! `cargo run --release -p moltbot-understand --example int8_gemm`

use candle_core::{Device, Tensor};
use moltbot_understand::encoder::int8::{self, Int8Linear};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("AVX2 kernel: {}", int8::accelerated());
    let dev = Device::Cpu;
    for m in [16usize, 512] {
        for (k, n) in [(384usize, 1152usize), (384, 384), (384, 1536), (1536, 384)] {
            let w = Tensor::randn(0f32, 0.05, (n, k), &dev)?;
            let b = Tensor::zeros(n, candle_core::DType::F32, &dev)?;
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev)?;
            let lin = Int8Linear::new(
                &w.flatten_all()?.to_vec1::<f32>()?,
                &b.to_vec1::<f32>()?,
                n,
                k,
            )
            .ok_or("shape")?;
            let xs = x.flatten_all()?.to_vec1::<f32>()?;
            let wt = w.t()?;
            // Enough repetitions for ~0.2 s per side.
            let reps = (2e8 / (m * n * k) as f64).ceil() as usize;
            x.matmul(&wt)?.broadcast_add(&b)?;
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(x.matmul(&wt)?.broadcast_add(&b)?);
            }
            let f32_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            lin.forward(&xs, m);
            let t = Instant::now();
            for _ in 0..reps {
                std::hint::black_box(lin.forward(&xs, m));
            }
            let i8_ms = t.elapsed().as_secs_f64() * 1e3 / reps as f64;
            let gmacs = (m * n * k) as f64 / 1e6;
            println!(
                "m={m:4} k={k:4} n={n:4}: f32 {f32_ms:.3} ms ({:.1} GMAC/s), int8 {i8_ms:.3} ms ({:.1} GMAC/s), {:.2}x",
                gmacs / f32_ms,
                gmacs / i8_ms,
                f32_ms / i8_ms
            );
        }
    }
    Ok(())
}
