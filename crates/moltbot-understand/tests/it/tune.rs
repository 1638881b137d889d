//! Fine-tuning the encoder's top layers: what it changes, what it must not change, and that
//! a saved model brings its tuned layers back.

use super::f32_encoder;
use moltbot_core::{EncodeError, Encoder};
use moltbot_understand::{Dataset, IntentModel, ModelConfig, ModelError, TuneConfig, TurnVector};
use std::sync::Arc;

/// Four banking intents that share most of their words, 12 examples each (also used by
/// the CLI's tuning test).
fn confusable() -> (tempfile::TempDir, Dataset) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/confusable-banking.tsv");
    let data = Dataset::load(&[path], None).unwrap();
    (tempfile::tempdir().unwrap(), data)
}

fn tuned_config(layers: usize) -> ModelConfig {
    ModelConfig {
        tune: TuneConfig {
            layers,
            epochs: 4,
            learning_rate: 5e-4,
            batch: 8,
            ..TuneConfig::default()
        },
        ..ModelConfig::default()
    }
}

#[test]
fn tuned_layers_learn_keep_the_base_encoder_and_come_back_from_the_file() {
    let Some(mini) = f32_encoder() else {
        return;
    };
    let enc: Arc<dyn Encoder> = mini.clone();
    let (dir, data) = confusable();
    let probe = ["top up my card with a transfer", "the card never arrived"];
    let base_before = enc.encode(&probe).unwrap();

    let (model, report) = IntentModel::train(&data, Some(&enc), tuned_config(2)).unwrap();
    let tune = report.tune.clone().expect("the encoder was fine-tuned");
    assert_eq!(tune.layers, 2, "{tune:?}");
    assert_eq!(tune.epochs, 4, "{tune:?}");
    assert!(
        tune.last_epoch_loss < tune.first_epoch_loss * 0.8,
        "training lowered the loss: {tune:?}"
    );
    // The shared base encoder (which knowledge search uses) is untouched.
    assert_eq!(enc.encode(&probe).unwrap(), base_before);

    // The model predicts through the tuned layers, and so does a copy loaded from disk,
    // built on top of the same base encoder.
    let path = dir.path().join("tuned.safetensors");
    model.save(&path).unwrap();
    let loaded = IntentModel::load(&path).unwrap();
    let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
    let a = model.predict_batch(&texts, Some(enc.as_ref()), 64).unwrap();
    let b = loaded
        .predict_batch(&texts, Some(enc.as_ref()), 64)
        .unwrap();
    let mut right = 0;
    for ((pa, pb), e) in a.iter().zip(&b).zip(&data.examples) {
        assert_eq!(pa.fine, pb.fine, "{}", e.text);
        assert!(
            (pa.confidence - pb.confidence).abs() < 1e-4,
            "{}: {} vs {}",
            e.text,
            pa.confidence,
            pb.confidence
        );
        right += usize::from(pa.fine == e.fine);
    }
    assert!(
        right >= texts.len() - 2,
        "{right} of {} training examples",
        texts.len()
    );
    assert_eq!(model.tuned_layer_count(), 2);
    assert_eq!(loaded.tuned_layer_count(), 2);

    // Predictions go through the tuned layers: the same heads fed the base encoder's
    // vectors score differently.
    let base_vecs = enc.encode(&texts).unwrap();
    let differ = texts
        .iter()
        .zip(&a)
        .zip(&base_vecs)
        .filter(|((t, p), v)| {
            let untuned = model.score(&model.features(t, Some(v)));
            (untuned.confidence - p.confidence).abs() > 1e-3
        })
        .count();
    assert!(
        differ > texts.len() / 2,
        "{differ} of {} differ",
        texts.len()
    );
    // One turn of the router: the model classifies through its tuned layers and hands on
    // the hidden states below them, from which the base encoder finishes its own vector
    // (what the knowledge search needs) without running the shared layers again.
    for (text, p) in texts.iter().zip(&a).take(6) {
        let (q, kept) = loaded
            .predict_long_keep_vector(text, Some(enc.as_ref()), 64)
            .unwrap();
        assert_eq!(q.fine, p.fine, "{text}");
        assert!((q.confidence - p.confidence).abs() < 1e-4, "{text}");
        let kept = kept.expect("a one-window turn keeps the shared states");
        assert!(matches!(kept, TurnVector::Shared(_)), "{text}");
        let finished = kept.clone().resolve(enc.as_ref()).unwrap();
        let direct = enc.encode(&[text]).unwrap().pop().unwrap();
        let gap = finished
            .iter()
            .zip(&direct)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(gap < 1e-5, "{text}: the finished vector is {gap} off");
        // Only the encoder the layers were built on can finish them.
        let other = Other("all-MiniLM-L6-v2/f32".into());
        let err = kept.resolve(&other).unwrap_err().to_string();
        assert!(err.contains("cannot finish"), "{err}");
    }
    // `intents eval` goes through them too.
    let (report, eval_preds) =
        moltbot_understand::evaluate(&loaded, &data, Some(enc.as_ref())).unwrap();
    for (p, q) in eval_preds.iter().zip(&b) {
        assert_eq!(p.fine, q.fine);
    }
    assert!(report.accuracy >= (texts.len() - 2) as f64 / texts.len() as f64);

    // An untuned model of the same data leaves no tuned layers in its file.
    let (plain, report) = IntentModel::train(&data, Some(&enc), ModelConfig::default()).unwrap();
    assert!(report.tune.is_none());
    let plain_path = dir.path().join("plain.safetensors");
    plain.save(&plain_path).unwrap();
    let tuned_size = std::fs::metadata(&path).unwrap().len();
    let plain_size = std::fs::metadata(&plain_path).unwrap().len();
    // One MiniLM layer is ~1.77M f32 values (7.1 MB); two are ~14 MB.
    assert!(
        tuned_size > plain_size + 13_500_000,
        "{tuned_size} vs {plain_size}"
    );
    // The untuned file says nothing about tuning, so builds from before tuning read it.
    let plain_bytes = std::fs::read(&plain_path).unwrap();
    let head = String::from_utf8_lossy(&plain_bytes[..plain_bytes.len().min(1 << 16)]);
    assert!(
        !head.contains("\"tune\""),
        "untuned model metadata mentions tune"
    );
}

/// A 384-d encoder that is not the MiniLM (whatever it calls itself): it cannot run tuned
/// layers.
struct Other(String);

impl Encoder for Other {
    fn name(&self) -> &str {
        &self.0
    }
    fn dim(&self) -> usize {
        384
    }
    fn max_tokens(&self) -> usize {
        256
    }
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        Ok(texts
            .iter()
            .map(|_| vec![1.0 / 384f32.sqrt(); 384])
            .collect())
    }
}

#[test]
fn a_tuned_model_refuses_an_encoder_that_cannot_run_its_layers_and_small_data_stay_frozen() {
    let Some(mini) = f32_encoder() else {
        return;
    };
    let enc: Arc<dyn Encoder> = mini;
    let (dir, data) = confusable();
    let (model, _) = IntentModel::train(&data, Some(&enc), tuned_config(1)).unwrap();
    let path = dir.path().join("m.safetensors");
    model.save(&path).unwrap();
    let loaded = IntentModel::load(&path).unwrap();
    // Both the trained model (whose tuned encoder is already built) and the loaded one.
    for m in [&model, &loaded] {
        let err = m
            .predict("my card is not working", Some(&Other("other".into())))
            .unwrap_err();
        assert!(matches!(err, ModelError::EncoderMismatch { .. }), "{err}");
        assert!(err.to_string().contains("tuned layers"), "{err}");
        assert!(m.prepare(Some(&Other("other".into()))).is_err());
    }
    // The gateway installs it on the MiniLM, and refuses it on an encoder that has the
    // MiniLM's name but cannot run the layers (the check happens at install, not at the
    // first turn).
    let u = moltbot_understand::Understanding::new(Some(enc.clone()), model.clone(), None);
    u.replace(loaded.clone()).unwrap();
    let impostor: Arc<dyn Encoder> = Arc::new(Other(enc.name().to_string()));
    let u = moltbot_understand::Understanding::new(Some(impostor), model.clone(), None);
    let err = u.replace(loaded.clone()).unwrap_err();
    assert!(err.to_string().contains("cannot run"), "{err}");

    // Fewer examples per intent than `min_examples_per_intent`: no tuning.
    let few = data.filter(|_| true);
    let mut config = tuned_config(1);
    config.tune.min_examples_per_intent = 20.0;
    let (_, report) = IntentModel::train(&few, Some(&enc), config).unwrap();
    assert!(report.tune.is_none());
}
