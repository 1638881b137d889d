//! Sentences per second of the encoder at batch 1 and 32, f32 against INT8, and how far the
//! INT8 vectors are from the f32 ones; then what a turn costs the router with a model whose
//! top two layers are tuned: the tuned vector and the base vector (for knowledge search)
//! from two full passes, against one pass that shares the lower layers.
//!
//! `cargo run --release -p moltbot-understand --example encoder_speed -- MODEL_DIR [TSV]`

use moltbot_core::Encoder;
use moltbot_understand::{MiniLm, Precision, TuneConfig, TurnVector};
use std::path::PathBuf;
use std::time::Instant;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().ok_or("usage: encoder_speed MODEL_DIR [TSV]")?);
    let sentences: Vec<String> = match args.next() {
        Some(tsv) => std::fs::read_to_string(tsv)?
            .lines()
            .skip(1)
            .filter_map(|l| l.split('\t').next().map(str::to_string))
            .take(512)
            .collect(),
        None => (0..512)
            .map(|i| format!("how do i transfer {i} dollars to my savings account today"))
            .collect(),
    };
    let texts: Vec<&str> = sentences.iter().map(String::as_str).collect();
    let f32_enc = MiniLm::load(&dir, Precision::F32)?;
    let int8_enc = MiniLm::load(&dir, Precision::Int8)?;
    let a = f32_enc.encode(&[
        "how do I cancel my card",
        "I want to cancel my credit card",
        "what is the weather in Paris",
    ])?;
    let dot = |x: &[f32], y: &[f32]| x.iter().zip(y).map(|(a, b)| a * b).sum::<f32>();
    println!(
        "cos(similar)={:.3} cos(unrelated)={:.3}",
        dot(&a[0], &a[1]),
        dot(&a[0], &a[2])
    );
    // Three rounds, the two precisions alternating within each, every sentence at both
    // batch sizes; the median round is printed (this machine's speed drifts).
    let mut rates = vec![Vec::new(); 4];
    for enc in [&f32_enc, &int8_enc] {
        enc.encode(&texts[..32])?; // warm-up
    }
    for _ in 0..3 {
        for (e, enc) in [&f32_enc, &int8_enc].into_iter().enumerate() {
            for (b, batch) in [1usize, 32].into_iter().enumerate() {
                let t = Instant::now();
                for chunk in texts.chunks(batch) {
                    enc.encode(chunk)?;
                }
                rates[e * 2 + b].push(texts.len() as f64 / t.elapsed().as_secs_f64());
            }
        }
    }
    let results: Vec<f64> = rates
        .iter_mut()
        .map(|r| {
            r.sort_by(f64::total_cmp);
            r[r.len() / 2]
        })
        .collect();
    for (i, name) in ["f32", "int8"].into_iter().enumerate() {
        for (b, batch) in [1, 32].into_iter().enumerate() {
            println!(
                "{name} batch {batch}: {:.1} sentences/s (median of 3)",
                results[i * 2 + b]
            );
        }
    }
    println!(
        "int8/f32 speed-up: batch 1 {:.2}x, batch 32 {:.2}x",
        results[2] / results[0],
        results[3] / results[1]
    );
    let fa = f32_enc.encode(&texts[..64])?;
    let ia = int8_enc.encode(&texts[..64])?;
    let mean_cos = fa.iter().zip(&ia).map(|(x, y)| dot(x, y)).sum::<f32>() / 64.0;
    println!("mean cos(f32, int8) = {mean_cos:.4}");

    // A tuned top (one short epoch on 32 texts: the cost does not depend on the weights).
    let labels: Vec<u32> = (0..32).map(|i| i % 2).collect();
    let rows: Vec<usize> = (0..32).collect();
    let config = TuneConfig {
        layers: 2,
        epochs: 1,
        ..TuneConfig::default()
    };
    let tuning = f32_enc.fine_tune(&texts[..32], &labels, &rows, 2, &config, 7)?;
    let tuned = &tuning.encoder;
    let turns = &texts[..128];
    let time = |f: &dyn Fn(&str) -> Res<()>| {
        let t = Instant::now();
        for text in turns {
            f(text)?;
        }
        Ok::<f64, Box<dyn std::error::Error>>(t.elapsed().as_secs_f64() * 1e3 / turns.len() as f64)
    };
    let tuned_only = time(&|t| {
        tuned.encode(&[t])?;
        Ok(())
    })?;
    let two_passes = time(&|t| {
        tuned.encode(&[t])?;
        f32_enc.encode(&[t])?;
        Ok(())
    })?;
    let shared = time(&|t| {
        let (_, states) = tuned.encode_keep_shared(t)?.ok_or("one window")?;
        TurnVector::Shared(states).resolve(&f32_enc)?;
        Ok(())
    })?;
    println!(
        "tuned turn + knowledge vector: two passes {two_passes:.2} ms, shared lower layers \
         {shared:.2} ms ({:.2}x); tuned vector alone {tuned_only:.2} ms",
        two_passes / shared
    );
    Ok(())
}
