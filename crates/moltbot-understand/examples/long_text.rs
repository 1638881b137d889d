//! Long inputs: does gating over windows beat truncation? Each test utterance is buried at
//! a random position after the first window inside neutral filler (about 150–250 words),
//! and three readings are compared:
//! - truncation: only the first `WINDOW` words, as an encoder with a fixed window sees it;
//! - whole: the whole text at once (sparse features see everything, the encoder averages
//!   its windows);
//! - gated: `predict_long`, sentence units weighted by their own confidence and surprise,
//!   with every unit encoded and with shortlists of the units the sparse features rank
//!   highest (one line per shortlist size; 0 = every unit, the "gated" figure), with the
//!   model's sparse exit as it was saved, and a last line with the exit off.
//!
//! `cargo run --release -p moltbot-understand --example long_text -- MODEL ENCODER_DIR TEST_TSV [MAP]`

use moltbot_understand::{Dataset, IntentModel, MiniLm, Precision};
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};

const WINDOW: usize = 64;
/// Neutral sentences, one per line; shared with `moltbot-bench workload --kind long`.
const FILLER_TEXT: &str = include_str!("../../../bench/intents/filler.txt");

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [model, encoder, test, rest @ ..] = args.as_slice() else {
        return Err("usage: long_text MODEL ENCODER_DIR TEST_TSV [MAP]".into());
    };
    let model = IntentModel::load(Path::new(model))?;
    let precision = if model.encoder_name().is_some_and(|n| n.ends_with("/int8")) {
        Precision::Int8
    } else {
        Precision::F32
    };
    let enc = MiniLm::load(Path::new(encoder), precision)?;
    let map = rest.first().map(PathBuf::from);
    let data = Dataset::load(&[PathBuf::from(test)], map.as_deref())?;
    let filler: Vec<&str> = FILLER_TEXT
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let (mut trunc, mut whole, mut n) = (0, 0, 0);
    // Gated accuracy and time with the encoder on every unit (0, what `predict_long` does
    // by default) and on shortlists.
    let shortlists = [0usize, 2, 3, 4, 6, 8, 10];
    let mut listed = vec![(0usize, std::time::Duration::ZERO); shortlists.len()];
    // Every unit through the encoder: the sparse exit off.
    let mut no_exit_model = model.clone();
    no_exit_model.set_sparse_exit(false);
    let mut no_exit = (0usize, std::time::Duration::ZERO);
    for e in data.examples.iter().step_by(5) {
        let mut sentences: Vec<String> = (0..rng.random_range(12..18))
            .map(|_| filler[rng.random_range(0..filler.len())].to_string())
            .collect();
        // After the first window (filler sentences are ~10 words).
        let at = rng.random_range(8..sentences.len());
        let mut request = e.text.trim().to_string();
        if !request.ends_with(['.', '?', '!']) {
            request.push('.');
        }
        sentences.insert(at, request);
        let text = sentences.join(" ");
        let first: String = text
            .split_whitespace()
            .take(WINDOW)
            .collect::<Vec<_>>()
            .join(" ");
        n += 1;
        trunc += usize::from(model.predict(&first, Some(&enc))?.fine == e.fine);
        whole += usize::from(model.predict(&text, Some(&enc))?.fine == e.fine);
        let t = std::time::Instant::now();
        let p = no_exit_model.predict_units(&text, Some(&enc), WINDOW, 0)?;
        no_exit.1 += t.elapsed();
        no_exit.0 += usize::from(p.fine == e.fine);
        for (k, (hits, time)) in shortlists.iter().zip(listed.iter_mut()) {
            let t = std::time::Instant::now();
            let p = model.predict_units(&text, Some(&enc), WINDOW, *k)?;
            *time += t.elapsed();
            *hits += usize::from(p.fine == e.fine);
        }
    }
    let pct = |k: usize| 100.0 * k as f64 / n as f64;
    println!(
        "{{\"inputs\":{n},\"window_words\":{WINDOW},\"truncation\":{:.2},\"whole\":{:.2},\"gated\":{:.2}}}",
        pct(trunc),
        pct(whole),
        pct(listed[0].0)
    );
    for (k, (hits, time)) in shortlists.iter().zip(&listed) {
        println!(
            "{{\"shortlist\":{k},\"gated\":{:.2},\"ms_per_input\":{:.2}}}",
            pct(*hits),
            time.as_secs_f64() * 1e3 / n as f64
        );
    }
    println!(
        "{{\"shortlist\":0,\"sparse_exit\":false,\"gated\":{:.2},\"ms_per_input\":{:.2}}}",
        pct(no_exit.0),
        no_exit.1.as_secs_f64() * 1e3 / n as f64
    );
    Ok(())
}
