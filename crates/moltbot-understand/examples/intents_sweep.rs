//! Train on one TSV, evaluate on another, print one JSON line: the quick loop used to tune
//! `ModelConfig` defaults (the CLI's `intents eval` is the user-facing form).
//!
//! `cargo run --release -p moltbot-understand --example intents_sweep -- TRAIN TEST [MAP] [CONFIG_JSON]`

use moltbot_understand::{evaluate, Dataset, IntentModel, ModelConfig};
use std::path::PathBuf;

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
    let train = Dataset::load(&[PathBuf::from(train)], map.as_deref())?;
    let test = Dataset::load(&[PathBuf::from(test)], map.as_deref())?;
    let (model, report) = IntentModel::train(&train, None, config)?;
    let (eval, _) = evaluate(&model, &test, None)?;
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
