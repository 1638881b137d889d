//! Train on one TSV, evaluate on another, print one JSON line: the quick loop used to tune
//! `ModelConfig` defaults (the CLI's `intents eval` is the user-facing form).
//!
//! `cargo run --release -p moltbot-understand --example intents_sweep -- TRAIN TEST [MAP] [CONFIG_JSON]`

use moltbot_core::Encoder;
use moltbot_understand::model::embed_all;
use moltbot_understand::{Dataset, IntentModel, MiniLm, ModelConfig, Precision};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Embeddings of a data set, cached beside it (`ENCODER=dir` turns the dense block on).
fn embeddings(
    enc: &dyn Encoder,
    data: &Dataset,
    tsv: &Path,
) -> Result<Vec<Vec<f32>>, Box<dyn std::error::Error>> {
    let cache = PathBuf::from(format!(
        "{}.{}.emb",
        tsv.display(),
        enc.name().replace('/', "_")
    ));
    let dim = enc.dim();
    if let Ok(bytes) = std::fs::read(&cache) {
        let floats: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if floats.len() == data.examples.len() * dim {
            return Ok(floats.chunks(dim).map(<[f32]>::to_vec).collect());
        }
    }
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    let t = std::time::Instant::now();
    let out = embed_all(enc, &texts)?;
    eprintln!(
        "embedded {} texts in {:.1}s",
        texts.len(),
        t.elapsed().as_secs_f64()
    );
    let bytes: Vec<u8> = out.iter().flatten().flat_map(|f| f.to_le_bytes()).collect();
    std::fs::write(&cache, bytes)?;
    Ok(out)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [train, test, rest @ ..] = args.as_slice() else {
        return Err("usage: intents_sweep TRAIN TEST [MAP|-] [CONFIG_JSON]".into());
    };
    let map = rest.first().filter(|m| *m != "-").map(PathBuf::from);
    let config: ModelConfig = match rest.get(1) {
        Some(json) => serde_json::from_str(json)?,
        None => ModelConfig::default(),
    };
    let (train_path, test_path) = (PathBuf::from(train), PathBuf::from(test));
    let train = Dataset::load(std::slice::from_ref(&train_path), map.as_deref())?;
    let test = Dataset::load(std::slice::from_ref(&test_path), map.as_deref())?;
    let encoder: Option<Arc<dyn Encoder>> = match std::env::var_os("ENCODER") {
        Some(dir) => Some(Arc::new(MiniLm::load(Path::new(&dir), Precision::F32)?)),
        None => None,
    };
    let t = std::time::Instant::now();
    let mut correct = 0;
    let mut coarse_correct = 0;
    let mut count = |fine: &str, coarse: &str, e: &moltbot_understand::Example| {
        correct += usize::from(fine == e.fine);
        coarse_correct += usize::from(Some(coarse) == e.coarse.as_deref());
    };
    let train_secs;
    if config.tune.layers > 0 {
        // Fine-tuning changes the encoder, so nothing can be cached: train end to end and
        // classify the test split with the tuned layers.
        let (model, report) = IntentModel::train(&train, encoder.as_ref(), config)?;
        train_secs = t.elapsed().as_secs_f64();
        eprintln!("{}", serde_json::to_string(&report.tune)?);
        let texts: Vec<&str> = test.examples.iter().map(|e| e.text.as_str()).collect();
        let preds = model.predict_batch(&texts, encoder.as_deref(), 64)?;
        for (p, e) in preds.iter().zip(&test.examples) {
            count(&p.fine, &p.coarse, e);
        }
    } else {
        let (train_emb, test_emb) = match &encoder {
            Some(enc) => (
                embeddings(enc.as_ref(), &train, &train_path)?,
                embeddings(enc.as_ref(), &test, &test_path)?,
            ),
            None => (Vec::new(), Vec::new()),
        };
        let model =
            IntentModel::train_with_embeddings(&train, encoder.as_ref(), &train_emb, config)?;
        train_secs = t.elapsed().as_secs_f64();
        for (i, e) in test.examples.iter().enumerate() {
            let p = model.score(&model.features(&e.text, test_emb.get(i).map(Vec::as_slice)));
            count(&p.fine, &p.coarse, e);
        }
    }
    let n = test.examples.len() as f64;
    struct R {
        accuracy: f64,
        macro_f1: f64,
        coarse_accuracy: f64,
        predict_secs: f64,
    }
    let eval = R {
        accuracy: correct as f64 / n,
        macro_f1: f64::NAN,
        coarse_accuracy: coarse_correct as f64 / n,
        predict_secs: 0.0,
    };
    struct T {
        train_secs: f64,
        features: usize,
    }
    let report = T {
        train_secs,
        features: 0,
    };
    println!(
        "{}",
        serde_json::json!({
            "train_secs": report.train_secs, "features": report.features,
            "accuracy": eval.accuracy, "macro_f1": eval.macro_f1,
            "coarse_accuracy": eval.coarse_accuracy, "predict_secs": eval.predict_secs,
        })
    );
    Ok(())
}
