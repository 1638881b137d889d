//! The INT8 kernels against candle's f32 matmul on the encoder's projection shapes (MiniLM:
//! 384 → 1152 fused QKV, 384 → 384, 384 → 1536, 1536 → 384), at the row counts of a short
//! sentence alone (16) and of a padded batch of 32 (512). Prints one line per shape with the
//! f32 time and, for every kernel this CPU runs, its time and its speed-up over f32, so all
//! are compared within one run.
//!
//! `cargo run --release -p moltbot-understand --example int8_gemm`

use candle_core::{Device, Tensor};
use moltbot_understand::encoder::int8::{Int8Linear, Kernel};
use std::time::Instant;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let kernels = Kernel::simd_supported();
    println!(
        "kernels: {} (best: {})",
        kernels
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join(", "),
        Kernel::best().name()
    );
    let dev = Device::Cpu;
    let mut total_f32 = 0.0;
    let mut total = vec![0.0; kernels.len()];
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
            let reps = (4e8 / (m * n * k) as f64).ceil() as usize;
            let time = |f: &dyn Fn()| {
                f();
                let t = Instant::now();
                for _ in 0..reps {
                    f();
                }
                t.elapsed().as_secs_f64() * 1e3 / reps as f64
            };
            let f32_ms = time(&|| {
                std::hint::black_box(x.matmul(&wt).and_then(|y| y.broadcast_add(&b)).ok());
            });
            total_f32 += f32_ms;
            let gmacs = (m * n * k) as f64 / 1e6;
            let mut line = format!(
                "m={m:4} k={k:4} n={n:4}: f32 {f32_ms:.3} ms ({:.1} GMAC/s)",
                gmacs / f32_ms
            );
            for (i, &kernel) in kernels.iter().enumerate() {
                let ms = time(&|| {
                    std::hint::black_box(lin.forward_on(&xs, m, kernel));
                });
                total[i] += ms;
                line += &format!(
                    "; {} {ms:.3} ms ({:.1} GMAC/s) {:.2}x",
                    kernel.name(),
                    gmacs / ms,
                    f32_ms / ms
                );
            }
            println!("{line}");
        }
    }
    for (kernel, ms) in kernels.iter().zip(&total) {
        println!(
            "all shapes: {} {:.2}x f32 ({ms:.2} ms against {total_f32:.2} ms)",
            kernel.name(),
            total_f32 / ms
        );
    }
    Ok(())
}
