//! Build [`Understanding`] from the `[understanding]` config: fetch the encoder if needed,
//! load the trained model, or train one from the intents files on first start.

use anyhow::Context;
use moltbot_core::config::{EncoderChoice, EncoderPrecision, KnowledgeConfig, UnderstandingConfig};
use moltbot_core::{weights_of, Encoder};
use moltbot_knowledge::{HashingEncoder, Knowledge};
use moltbot_models::fetch::{ensure_wheel_model, DEFAULT_ENCODER, ENCODER_WHEEL_ENV};
use moltbot_understand::{
    Dataset, IntentModel, MiniLm, ModelConfig, Precision, TuneConfig, Understanding,
};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where the trained model lives by default.
pub fn model_path(cfg: &UnderstandingConfig, data_dir: &Path) -> PathBuf {
    cfg.model_path
        .clone()
        .unwrap_or_else(|| data_dir.join("intents").join("model.safetensors"))
}

/// The configured encoder, fetching its files into the model cache when missing.
pub fn load_encoder(
    choice: EncoderChoice,
    precision: EncoderPrecision,
    encoder_path: Option<&Path>,
    data_dir: &Path,
    show_progress: bool,
) -> anyhow::Result<Option<Arc<dyn Encoder>>> {
    if choice == EncoderChoice::None {
        return Ok(None);
    }
    let dir = match encoder_path {
        Some(dir) => dir.to_path_buf(),
        None => ensure_wheel_model(
            &data_dir.join("models"),
            &DEFAULT_ENCODER,
            ENCODER_WHEEL_ENV,
            show_progress,
        )
        .context("fetching the sentence encoder")?,
    };
    let precision = match precision {
        EncoderPrecision::Auto => Precision::auto(),
        EncoderPrecision::F32 => Precision::F32,
        EncoderPrecision::Int8 => Precision::Int8,
    };
    let encoder = MiniLm::load(&dir, precision).context("loading the sentence encoder")?;
    Ok(Some(Arc::new(encoder)))
}

/// The training data the config names: the built-in pack and/or the extra files.
pub fn configured_dataset(cfg: &UnderstandingConfig) -> anyhow::Result<Dataset> {
    let mut data = if cfg.builtin_intents {
        Dataset::builtin()?
    } else {
        Dataset::default()
    };
    if !cfg.intents.is_empty() {
        let extra = Dataset::load(&cfg.intents, None)?;
        data.examples.extend(extra.examples);
        for (k, v) in extra.intents {
            data.intents.entry(k).or_insert(v);
        }
    }
    Ok(data)
}

/// How the configured intent model is trained: the surprise threshold and the encoder
/// fine-tuning of `[understanding]`.
pub fn model_config(cfg: &UnderstandingConfig) -> ModelConfig {
    ModelConfig {
        surprise_threshold: cfg.surprise_threshold,
        tune: TuneConfig {
            layers: cfg.tune_layers,
            epochs: cfg.tune_epochs,
            ..TuneConfig::default()
        },
        ..ModelConfig::default()
    }
}

/// The encoder the config asks for (also used by the knowledge store). Blocking.
pub fn configured_encoder(
    cfg: &UnderstandingConfig,
    data_dir: &Path,
    show_progress: bool,
) -> anyhow::Result<Option<Arc<dyn Encoder>>> {
    load_encoder(
        cfg.encoder,
        cfg.precision,
        cfg.encoder_path.as_deref(),
        data_dir,
        show_progress,
    )
}

/// The intent model for `encoder`: loaded from its file, or trained from the configured
/// intents on first start (or when the encoder changed). `None` when understanding is off.
/// Blocking.
pub fn load(
    cfg: &UnderstandingConfig,
    encoder: Option<Arc<dyn Encoder>>,
    data_dir: &Path,
) -> anyhow::Result<Option<Arc<Understanding>>> {
    if !cfg.enabled {
        return Ok(None);
    }
    let path = model_path(cfg, data_dir);
    let wanted_encoder = encoder.as_ref().map(|e| e.name().to_string());
    // A model trained on the same weights at another precision serves as it is: retraining
    // would lose intents it learned from files outside the config (`moltbot intents train`).
    let existing = path
        .is_file()
        .then(|| IntentModel::load(&path))
        .transpose()
        .with_context(|| format!("loading the intent model {}", path.display()))?
        .filter(|m| m.encoder_name().map(weights_of) == wanted_encoder.as_deref().map(weights_of));
    if let (Some(m), Some(serving)) = (&existing, &wanted_encoder) {
        if let Some(trained) = m.encoder_name().filter(|t| t != serving) {
            tracing::info!(
                trained,
                serving = serving.as_str(),
                "the intent model was trained at another precision of the same encoder; \
                 serving it as it is (`moltbot intents train --reload` retrains it)"
            );
        }
    }
    let mut model = match existing {
        Some(m) => m,
        None => {
            tracing::info!(path = %path.display(), "training the intent model (first start or encoder changed)");
            let data = configured_dataset(cfg)?;
            let (model, report) = IntentModel::train(&data, encoder.as_ref(), model_config(cfg))?;
            tracing::info!(
                intents = report.fine,
                examples = report.examples,
                secs = report.embed_secs + report.train_secs,
                tuned_layers = model.tuned_layer_count(),
                "intent model trained"
            );
            model.save(&path)?;
            model
        }
    };
    if cfg.tune_layers > 0 && encoder.is_some() && model.tuned_layer_count() == 0 {
        tracing::info!(
            path = %path.display(),
            "the intent model has no tuned layers although understanding.tune_layers = {}: \
             it was trained before the setting, or its data have too few examples per intent \
             to tune; `moltbot intents train --reload` retrains it",
            cfg.tune_layers
        );
    }
    if cfg.sparse_exit
        && encoder.is_some()
        && model.sparse_exit_threshold().is_none()
        && model.held_out_turns() >= moltbot_understand::exit::MIN_EXIT_HOLDOUT
    {
        tracing::info!(
            path = %path.display(),
            "the intent model has no sparse exit, so every turn runs the encoder: it was \
             likely trained before the exit existed (`moltbot intents train --reload` \
             retrains it)"
        );
    }
    model.serve_with(cfg);
    Ok(Some(Arc::new(Understanding::new(
        encoder,
        model,
        Some(path),
    ))))
}

/// Where the knowledge store lives.
pub fn knowledge_dir(cfg: &KnowledgeConfig, data_dir: &Path) -> PathBuf {
    cfg.dir
        .clone()
        .unwrap_or_else(|| data_dir.join("knowledge"))
}

/// Open the knowledge store with the sentence encoder, or with the lexical
/// [`HashingEncoder`] when understanding runs without one. Blocking.
pub fn open_knowledge(
    cfg: &KnowledgeConfig,
    encoder: Option<Arc<dyn Encoder>>,
    data_dir: &Path,
) -> anyhow::Result<Knowledge> {
    let encoder: Arc<dyn Encoder> = match encoder {
        Some(e) => e,
        None => Arc::new(HashingEncoder::default()),
    };
    let dir = knowledge_dir(cfg, data_dir);
    Knowledge::open(&dir, encoder)
        .with_context(|| format!("opening the knowledge store {}", dir.display()))
}
