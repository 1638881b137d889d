//! [`IntentModel`]: the hierarchical intent classifier with its surprise score.
//!
//! Features are the sparse char+word TF-IDF vector joined with the sentence embedding (when
//! an encoder is given). Two softmax heads read them:
//! - the **coarse head** picks the group;
//! - the **fine head** sees the same features plus the group distribution (the true group
//!   while training, the coarse head's output at prediction time), and the final fine score
//!   adds the log-probability of the intent's group: `log p(fine) + γ·log p(coarse)`.
//!
//! **Surprise** is how unlike the training data a turn is. The raw score mixes the fine
//! head's energy (low `log Σ exp(logits)` = nothing fired) and the embedding's distance to
//! the nearest intent centroid, and is calibrated against utterances held out from training:
//! `surprise = share of held-out in-domain turns that scored lower`. So 0.95 means "stranger
//! than 95% of normal traffic", whatever the data set.

use crate::dataset::{Dataset, IntentSpec};
use crate::encoder::tune::{TuneConfig, TuneReport, TunedLayers, Tuning};
use crate::encoder::{MiniLm, TurnVector};
use crate::exit::{Judged, SparseExit};
use crate::features::{FeatureConfig, Featurizer, SparseVec};
use crate::linear::{log_sum_exp, softmax_in_place, Input, Softmax, TrainConfig};
use moltbot_core::{EncodeError, Encoder};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

/// Knobs of training. Defaults are tuned on CLINC150/BANKING77 dev splits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    pub features: FeatureConfig,
    pub train: TrainConfig,
    /// Fine-tuning of the encoder's top layers before the heads are fit (off when
    /// `tune.layers` is 0, or without a MiniLM encoder). Not written to model files when off,
    /// so untuned files stay readable by builds that predate tuning.
    #[serde(skip_serializing_if = "TuneConfig::is_off")]
    pub tune: TuneConfig,
    /// Scale of the embedding block beside the unit-length sparse blocks.
    pub dense_weight: f32,
    /// Scale of the group distribution fed to the fine head (0 = flat classifier).
    pub coarse_feature_weight: f32,
    /// γ: weight of `log p(coarse)` in the final fine score.
    pub coarse_score_weight: f32,
    /// Share of examples held out to calibrate surprise (0 = no calibration).
    pub calibration_share: f32,
    /// Weight of the centroid distance in the raw surprise (the energy has weight 1).
    pub surprise_distance_weight: f32,
    /// Calibrated surprise at or above which a turn is treated as out of domain.
    pub surprise_threshold: f32,
    /// Sentence units of a long text the encoder runs on (0 = all): the ones the sparse
    /// exit's heads rank highest ([`IntentModel::predict_units`]). A serving choice, set with
    /// [`IntentModel::set_long_shortlist`], not stored in model files.
    #[serde(skip)]
    pub long_shortlist: usize,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            features: FeatureConfig::default(),
            train: TrainConfig::default(),
            tune: TuneConfig::default(),
            dense_weight: 2.0,
            coarse_feature_weight: 1.0,
            coarse_score_weight: 0.5,
            calibration_share: 0.1,
            surprise_distance_weight: 4.0,
            surprise_threshold: 0.95,
            long_shortlist: 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("training needs at least 2 intents, got {0}")]
    TooFewIntents(usize),
    #[error(transparent)]
    Encode(#[from] EncodeError),
    #[error("the model was trained with the encoder `{expected}`, but {got}")]
    EncoderMismatch { expected: String, got: String },
    #[error("cannot {action} {path}: {cause}")]
    Io {
        action: &'static str,
        path: String,
        cause: String,
    },
    #[error("{path} is not an intent model: {cause}")]
    Format { path: String, cause: String },
}

impl ModelError {
    pub fn kind(&self) -> &'static str {
        match self {
            ModelError::TooFewIntents(_) => "intents_too_few",
            ModelError::Encode(e) => e.kind(),
            ModelError::EncoderMismatch { .. } => "intents_encoder_mismatch",
            ModelError::Io { .. } => "intents_io",
            ModelError::Format { .. } => "intents_format",
        }
    }
}

/// What the classifier says about one text.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    pub coarse: String,
    pub fine: String,
    /// Probability of `fine` (from the combined hierarchical score).
    pub confidence: f32,
    pub coarse_confidence: f32,
    /// Calibrated surprise in [0, 1] (see the module doc).
    pub surprise: f32,
    /// The uncalibrated score behind `surprise`.
    pub raw_surprise: f32,
    /// `surprise >= threshold`: treat as out of domain.
    pub out_of_domain: bool,
    /// Answered by the sparse exit, without the sentence encoder
    /// ([`IntentModel::set_sparse_exit`]).
    pub sparse_exit: bool,
    /// The next best fine intents with their probabilities.
    pub alternatives: Vec<(String, f32)>,
}

/// The features of one text, computed once and shared by both heads.
#[derive(Debug, Clone)]
pub struct Features {
    pub sparse: SparseVec,
    /// The embedding scaled by `dense_weight` (empty without an encoder).
    pub dense: Vec<f32>,
}

/// The trained classifier.
#[derive(Debug, Clone)]
pub struct IntentModel {
    pub(crate) config: ModelConfig,
    pub(crate) featurizer: Featurizer,
    pub(crate) coarse_labels: Vec<String>,
    pub(crate) fine_labels: Vec<String>,
    pub(crate) fine_to_coarse: Vec<u32>,
    pub(crate) coarse_head: Softmax,
    pub(crate) fine_head: Softmax,
    pub(crate) intents: BTreeMap<String, IntentSpec>,
    /// Name and dimension of the encoder the dense block came from.
    pub(crate) encoder: Option<(String, usize)>,
    /// Mean embedding of each fine intent, L2-normalised (`fine × dim`).
    pub(crate) centroids: Vec<f32>,
    /// Raw surprise of held-out in-domain examples, sorted ascending.
    pub(crate) calibration: Vec<f32>,
    /// Fine-tuned top layers of the encoder, if training tuned them.
    pub(crate) tuned: Option<Tuned>,
    /// Sparse-only heads that answer sure turns without the encoder ([`crate::exit`]).
    pub(crate) exit: Option<SparseExit>,
    /// Serve with `exit` (a serving choice, not stored: on after training and loading).
    pub(crate) exit_enabled: bool,
}

/// Tuned encoder layers and, once a prediction needed it, the encoder built from them on
/// top of the first base encoder passed in (its name, e.g. `all-MiniLM-L6-v2/f32`, is kept:
/// a later call with another base is refused rather than served with the wrong weights).
#[derive(Debug, Clone)]
pub(crate) struct Tuned {
    pub(crate) layers: TunedLayers,
    built: Arc<OnceLock<(String, Arc<MiniLm>)>>,
}

impl Tuned {
    pub(crate) fn new(layers: TunedLayers) -> Self {
        Self {
            layers,
            built: Arc::default(),
        }
    }
}

/// How a model came to be, for `intents train` to print.
#[derive(Debug, Clone, Serialize)]
pub struct TrainReport {
    pub examples: usize,
    pub coarse: usize,
    pub fine: usize,
    pub features: usize,
    pub embed_secs: f64,
    pub train_secs: f64,
    /// Groups made by clustering for intents that came without one.
    pub learned_groups: usize,
    /// The encoder's fine-tuning, when it ran (its time is part of `embed_secs`).
    pub tune: Option<TuneReport>,
    /// The sparse exit's confidence threshold, when training gave the model one.
    pub sparse_exit_threshold: Option<f32>,
}

impl IntentModel {
    /// Train from a data set. With an encoder, examples are embedded in batches; with
    /// `config.tune.layers > 0` and a MiniLM encoder, its top layers are fine-tuned on the
    /// examples first (not on the part held out for calibration) and the examples are
    /// embedded with the tuned layers.
    pub fn train(
        data: &Dataset,
        encoder: Option<&Arc<dyn Encoder>>,
        config: ModelConfig,
    ) -> Result<(Self, TrainReport), ModelError> {
        let t0 = std::time::Instant::now();
        let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
        let tuning = match encoder {
            Some(enc) => Self::tune_encoder(data, enc.as_ref(), &config)?,
            None => None,
        };
        let (embeddings, tuned) = match (tuning, encoder) {
            (Some(t), _) => (t.embeddings, Some((t.layers, t.encoder, t.report))),
            (None, Some(enc)) => (embed_all(enc.as_ref(), &texts)?, None),
            (None, None) => (Vec::new(), None),
        };
        let embed_secs = t0.elapsed().as_secs_f64();
        let t1 = std::time::Instant::now();
        let mut model = Self::train_with_embeddings(data, encoder, &embeddings, config)?;
        let tune_report = match tuned {
            None => {
                // The stored config says what was done: no tuning (even if it was asked for).
                model.config.tune = TuneConfig::default();
                None
            }
            Some((layers, tuned_enc, report)) => {
                let t = Tuned::new(layers);
                if let Some(base) = encoder {
                    let _ = t.built.set((base.name().to_string(), Arc::new(tuned_enc)));
                }
                model.tuned = Some(t);
                Some(report)
            }
        };
        let report = TrainReport {
            examples: data.examples.len(),
            coarse: model.coarse_labels.len(),
            fine: model.fine_labels.len(),
            features: model.featurizer.dim(),
            embed_secs,
            train_secs: t1.elapsed().as_secs_f64(),
            learned_groups: model
                .coarse_labels
                .iter()
                .filter(|c| c.starts_with(LEARNED_GROUP_PREFIX))
                .count(),
            tune: tune_report,
            sparse_exit_threshold: model.sparse_exit_threshold(),
        };
        Ok((model, report))
    }

    /// Fine-tune the encoder's top layers when the config asks for it and the data are big
    /// enough (and embed every example with them); `None` otherwise.
    fn tune_encoder(
        data: &Dataset,
        encoder: &dyn Encoder,
        config: &ModelConfig,
    ) -> Result<Option<Tuning>, ModelError> {
        if config.tune.layers == 0 {
            return Ok(None);
        }
        let Some(base) = encoder.as_any().and_then(|a| a.downcast_ref::<MiniLm>()) else {
            tracing::warn!(
                encoder = encoder.name(),
                "fine-tuning needs the MiniLM encoder; training on the frozen encoder"
            );
            return Ok(None);
        };
        let fine_labels = data.fine_labels();
        if fine_labels.len() < 2 {
            return Err(ModelError::TooFewIntents(fine_labels.len()));
        }
        let per_intent = data.examples.len() as f32 / fine_labels.len() as f32;
        if per_intent < config.tune.min_examples_per_intent {
            tracing::info!(
                per_intent,
                min = config.tune.min_examples_per_intent,
                "too few examples per intent to fine-tune the encoder; it stays frozen"
            );
            return Ok(None);
        }
        let y = label_ids(data, &fine_labels);
        // The same split `train_with_embeddings` holds out for calibration: the tuned
        // layers must not have seen the examples that calibrate the surprise score.
        let (fit, _) = split_holdout(&y, config.calibration_share, config.train.seed);
        let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
        let tuning = base.fine_tune(
            &texts,
            &y,
            &fit,
            fine_labels.len(),
            &config.tune,
            config.train.seed,
        )?;
        let report = &tuning.report;
        tracing::info!(
            layers = report.layers,
            epochs = report.epochs,
            first_loss = report.first_epoch_loss,
            last_loss = report.last_epoch_loss,
            secs = report.secs,
            "fine-tuned the encoder's top layers"
        );
        Ok(Some(tuning))
    }

    /// Train when the embeddings (one per example, in order, or none) are already known.
    pub fn train_with_embeddings(
        data: &Dataset,
        encoder: Option<&Arc<dyn Encoder>>,
        embeddings: &[Vec<f32>],
        config: ModelConfig,
    ) -> Result<Self, ModelError> {
        let fine_labels = data.fine_labels();
        if fine_labels.len() < 2 {
            return Err(ModelError::TooFewIntents(fine_labels.len()));
        }
        let y_fine = label_ids(data, &fine_labels);
        let dim = embeddings.first().map_or(0, Vec::len);
        let centroids = class_centroids(embeddings, &y_fine, fine_labels.len(), dim);
        let groups = assign_groups(data, &fine_labels, &centroids, dim);
        // Groups learned from the same embeddings carry nothing the fine head does not
        // already see, and conditioning on them cost BANKING77 about 0.2 points (93.25 →
        // 93.57 / 93.38 / 93.28 over three seeds without); given groups help (CLINC150's
        // domains: 97.87 → 98.09). So only given groups shape the fine scores.
        let mut config = config;
        if groups.iter().all(|g| g.starts_with(LEARNED_GROUP_PREFIX)) {
            config.coarse_feature_weight = 0.0;
            config.coarse_score_weight = 0.0;
        }
        let mut coarse_labels: Vec<String> = groups.clone();
        coarse_labels.sort();
        coarse_labels.dedup();
        let fine_to_coarse: Vec<u32> = groups
            .iter()
            .map(|g| coarse_labels.binary_search(g).unwrap_or(0) as u32)
            .collect();

        let texts: Vec<&str> = data.examples.iter().map(|e| e.text.as_str()).collect();
        let featurizer = Featurizer::fit(config.features.clone(), &texts);
        let feats: Vec<Features> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| Features {
                sparse: featurizer.transform(t),
                dense: embeddings
                    .get(i)
                    .map(|e| e.iter().map(|v| v * config.dense_weight).collect())
                    .unwrap_or_default(),
            })
            .collect();

        let all: Vec<usize> = (0..feats.len()).collect();
        let (fit_part, held_out) =
            split_holdout(&y_fine, config.calibration_share, config.train.seed);
        let heads = |rows: &[usize]| {
            fit_heads(
                &config,
                coarse_labels.len(),
                &fine_to_coarse,
                &featurizer,
                &feats,
                &y_fine,
                rows,
            )
        };
        // Calibration needs scores of examples the heads did not see: fit without the
        // held-out part first, score it, then fit on everything.
        let (coarse_head, fine_head) = heads(if held_out.is_empty() { &all } else { &fit_part });
        let mut model = Self {
            config: config.clone(),
            featurizer: featurizer.clone(),
            coarse_labels: coarse_labels.clone(),
            fine_labels,
            fine_to_coarse: fine_to_coarse.clone(),
            coarse_head,
            fine_head,
            intents: data.intents.clone(),
            encoder: encoder.map(|e| (e.name().to_string(), e.dim())),
            centroids,
            calibration: Vec::new(),
            tuned: None,
            exit: None,
            exit_enabled: true,
        };
        if !held_out.is_empty() {
            let mut scores: Vec<f32> = held_out
                .iter()
                .map(|&i| model.score(&feats[i]).raw_surprise)
                .collect();
            scores.sort_by(f32::total_cmp);
            model.calibration = scores;
        }
        if dim > 0 {
            // While the model's heads are still the ones fit without the held-out turns.
            model.exit = Some(model.fit_exit(&feats, &y_fine, &fit_part, &held_out));
        }
        if !held_out.is_empty() {
            (model.coarse_head, model.fine_head) = heads(&all);
        }
        Ok(model)
    }

    /// Features of `text` given its embedding (if the model uses one).
    pub fn features(&self, text: &str, embedding: Option<&[f32]>) -> Features {
        self.features_of(self.featurizer.transform(text), embedding)
    }

    /// [`IntentModel::features`] from sparse features already computed.
    fn features_of(&self, sparse: SparseVec, embedding: Option<&[f32]>) -> Features {
        Features {
            sparse,
            dense: embedding
                .map(|e| e.iter().map(|v| v * self.config.dense_weight).collect())
                .unwrap_or_default(),
        }
    }

    /// Classify one text, embedding it with `encoder` when the model uses one and its
    /// sparse exit is not sure of the answer.
    pub fn predict(
        &self,
        text: &str,
        encoder: Option<&dyn Encoder>,
    ) -> Result<Prediction, ModelError> {
        self.classify_whole(&[text], encoder)
            .map(|mut p| p.remove(0))
    }

    /// [`IntentModel::predict_long`], also giving back what classifying computed of
    /// `encoder`'s vector of the whole text, so a knowledge search for the same turn need
    /// not encode it again: the vector itself for a model without tuned layers, the hidden
    /// states below the tuned layers for one with them (the base encoder finishes its
    /// vector from there, [`TurnVector::resolve`]). `None` for texts of several windows.
    pub fn predict_long_keep_vector(
        &self,
        text: &str,
        encoder: Option<&dyn Encoder>,
        window_words: usize,
    ) -> Result<(Prediction, Option<TurnVector>), ModelError> {
        if sentence_windows(text, window_words.max(1)).len() > 1 {
            return Ok((self.predict_windows(text, encoder, window_words)?, None));
        }
        let sparse = self.featurizer.transform(text);
        let encoder = self.usable_encoder(encoder)?;
        if encoder.is_some() {
            if let Some(j) = self.judge_exit(&sparse) {
                return Ok((self.finish(&j), None));
            }
        }
        let (embedding, kept) = match (encoder, &self.tuned) {
            (None, _) => (None, None),
            (Some(enc), None) => {
                let v = enc.encode(&[text])?.pop();
                (v.clone(), v.map(TurnVector::Ready))
            }
            (Some(enc), Some(_)) => {
                let split = enc
                    .as_any()
                    .and_then(|a| a.downcast_ref::<MiniLm>())
                    .map(|m| m.encode_keep_shared(text))
                    .transpose()?
                    .flatten();
                match split {
                    Some((v, states)) => (Some(v), Some(TurnVector::Shared(states))),
                    None => (enc.encode(&[text])?.pop(), None),
                }
            }
        };
        let prediction = self.score(&self.features_of(sparse, embedding.as_deref()));
        Ok((prediction, kept))
    }

    /// Classify a text of any length. Texts of one window (`window_words` words) go through
    /// [`IntentModel::predict`]. A longer one is cut into sentence units
    /// ([`sentence_units`]), and each is classified:
    /// - when the sparse exit answers for any unit, every unit is judged by the exit's
    ///   heads alone (no encoder);
    /// - otherwise each unit is encoded, or with a `long_shortlist` set only that many,
    ///   the ones the exit's heads rank most request-like (the others are dropped).
    ///
    /// The units' distributions are pooled with attention weights from each unit's own
    /// confidence and surprise (`softmax((confidence − 2·surprise) / 0.1)`), so the
    /// sentence that carries the request dominates and filler around it fades out.
    pub fn predict_long(
        &self,
        text: &str,
        encoder: Option<&dyn Encoder>,
        window_words: usize,
    ) -> Result<Prediction, ModelError> {
        self.predict_long_keep_vector(text, encoder, window_words)
            .map(|(p, _)| p)
    }

    /// The part of [`IntentModel::predict_long`] for a text of several windows.
    fn predict_windows(
        &self,
        text: &str,
        encoder: Option<&dyn Encoder>,
        window_words: usize,
    ) -> Result<Prediction, ModelError> {
        self.predict_units(text, encoder, window_words, self.config.long_shortlist)
    }

    /// [`IntentModel::predict_long`] for a text of several windows, with the encoder run
    /// on at most `shortlist` of its sentence units (0 = all) when the sparse exit answers
    /// for none of them: those the exit's heads find most request-like (lowest raw
    /// surprise, i.e. the most evidence for some intent). The gate then weighs the
    /// shortlisted units only. A model without exit heads (trained before they existed)
    /// encodes every unit. Public for `examples/long_text.rs`, which compares shortlist
    /// sizes.
    pub fn predict_units(
        &self,
        text: &str,
        encoder: Option<&dyn Encoder>,
        window_words: usize,
        shortlist: usize,
    ) -> Result<Prediction, ModelError> {
        let windows = sentence_units(text, window_words.max(1));
        let encoder = self.usable_encoder(encoder)?;
        // Each unit's sparse features, computed once: the exit, the shortlist and the heads
        // all read them.
        let mut sparse: Vec<SparseVec> = windows
            .iter()
            .map(|w| self.featurizer.transform(w))
            .collect();
        // The exit heads' judgement of every unit, computed once: it decides whether the
        // exit answers and, when it does not, ranks the units for the shortlist.
        let ranks = shortlist > 0 && windows.len() > shortlist;
        let by_exit: Option<Vec<Judged>> = self
            .exit
            .as_ref()
            .filter(|_| encoder.is_some() && (self.serving_exit().is_some() || ranks))
            .map(|exit| {
                sparse
                    .iter()
                    .map(|s| self.judge_with_exit(exit, s))
                    .collect()
            });
        // Once the exit answers for one unit, the text holds a request the sparse heads are
        // sure of, and the other units are judged by the exit's heads too, without the
        // encoder: the surprise in the gate fades the filler either way. On turns buried
        // in filler this kept gated accuracy (CLINC150 81.8%, BANKING77 90.9%) and took
        // 2.3–2.6x less time than encoding the rest (`examples/long_text.rs`).
        let (mut judged, rest): (Vec<Option<Judged>>, Vec<usize>) = match by_exit {
            Some(units) if units.iter().any(|j| self.exit_may_answer(j)) => {
                (units.into_iter().map(Some).collect(), Vec::new())
            }
            Some(units) if ranks => {
                // The units left for the encoder, cut to the shortlist: those with the
                // lowest raw surprise under the exit's heads (the energy, −log Σ exp of the
                // fine logits: the most evidence for some intent). Not the gate's own
                // measure: the calibrated surprise is 1.0 for every filler unit and for most
                // requests the exit is unsure of, so that ranking falls back to confidence,
                // which favours intent-like filler. In `examples/long_text.rs` the energy
                // kept every-unit accuracy with 3 units (CLINC150 81.8%, BANKING77 91.7%),
                // where confidence − 2·surprise needed 6–8.
                let mut rest: Vec<usize> = (0..units.len()).collect();
                rest.sort_by(|&a, &b| units[a].surprise.0.total_cmp(&units[b].surprise.0));
                rest.truncate(shortlist);
                rest.sort_unstable();
                (vec![None; units.len()], rest)
            }
            _ => (vec![None; windows.len()], (0..windows.len()).collect()),
        };
        let embeddings = match encoder {
            Some(enc) => {
                let refs: Vec<&str> = rest.iter().map(|&i| windows[i].as_str()).collect();
                embed_all(enc, &refs)?
            }
            None => Vec::new(),
        };
        for (k, &i) in rest.iter().enumerate() {
            let f = self.features_of(
                std::mem::take(&mut sparse[i]),
                embeddings.get(k).map(Vec::as_slice),
            );
            judged[i] = Some(self.judge_full(&f));
        }
        // Units the shortlist dropped stay `None` and are left out.
        let units: Vec<Judged> = judged.into_iter().flatten().collect();
        let mut gate: Vec<f32> = units
            .iter()
            .map(|u| (u.confidence() - GATE_SURPRISE_WEIGHT * u.surprise.1) / GATE_TEMPERATURE)
            .collect();
        softmax_in_place(&mut gate);
        let classes = self.fine_labels.len();
        let mut pooled = Scored {
            coarse: vec![0.0; self.coarse_labels.len()],
            combined: vec![0.0; classes],
            fine_lse: 0.0,
        };
        let mut pooled_probs = vec![0f32; classes];
        for (u, a) in units.iter().zip(&gate) {
            pooled
                .coarse
                .iter_mut()
                .zip(&u.scored.coarse)
                .for_each(|(o, v)| *o += a * v);
            pooled_probs
                .iter_mut()
                .zip(&u.probs)
                .for_each(|(o, v)| *o += a * v);
            pooled.fine_lse += a * u.scored.fine_lse;
        }
        pooled.combined = pooled_probs.iter().map(|p| p.max(1e-12).ln()).collect();
        // Surprise is the one of the unit the gate trusts most.
        let lead = argmax(&gate);
        let surprise = units.get(lead).map_or((0.0, 0.0), |u| u.surprise);
        let encoded = units.iter().any(|u| !u.sparse_exit);
        Ok(self.prediction(&pooled, &pooled_probs, surprise, !encoded))
    }

    /// Classify many texts at once: the short ones the sparse exit is not sure of share
    /// one batched encoder call (the encoder sorts them by length into sub-batches), long
    /// ones go through [`IntentModel::predict_long`]. Results are in input order.
    pub fn predict_batch(
        &self,
        texts: &[&str],
        encoder: Option<&dyn Encoder>,
        window_words: usize,
    ) -> Result<Vec<Prediction>, ModelError> {
        let window_words = window_words.max(1);
        let long: Vec<bool> = texts
            .iter()
            .map(|t| sentence_windows(t, window_words).len() > 1)
            .collect();
        let short: Vec<&str> = texts
            .iter()
            .zip(&long)
            .filter(|(_, is_long)| !**is_long)
            .map(|(t, _)| *t)
            .collect();
        let mut short = self.classify_whole(&short, encoder)?.into_iter();
        texts
            .iter()
            .zip(&long)
            .map(|(t, is_long)| match is_long {
                true => self.predict_long(t, encoder, window_words),
                false => Ok(short.next().expect("one prediction per short text")),
            })
            .collect()
    }

    /// Classify each text whole (no windows), in order: the sparse exit answers those it is
    /// sure of, one batched encoder call embeds the others.
    pub(crate) fn classify_whole(
        &self,
        texts: &[&str],
        encoder: Option<&dyn Encoder>,
    ) -> Result<Vec<Prediction>, ModelError> {
        let encoder = self.usable_encoder(encoder)?;
        let mut sparse: Vec<SparseVec> =
            texts.iter().map(|t| self.featurizer.transform(t)).collect();
        let mut done: Vec<Option<Prediction>> = sparse
            .iter()
            .map(|s| {
                encoder
                    .and_then(|_| self.judge_exit(s))
                    .map(|j| self.finish(&j))
            })
            .collect();
        let rest: Vec<usize> = (0..texts.len()).filter(|&i| done[i].is_none()).collect();
        let embeddings = match encoder {
            Some(enc) if !rest.is_empty() => {
                let refs: Vec<&str> = rest.iter().map(|&i| texts[i]).collect();
                embed_all(enc, &refs)?
            }
            _ => Vec::new(),
        };
        for (k, &i) in rest.iter().enumerate() {
            let f = self.features_of(
                std::mem::take(&mut sparse[i]),
                embeddings.get(k).map(Vec::as_slice),
            );
            done[i] = Some(self.score(&f));
        }
        Ok(done.into_iter().flatten().collect())
    }

    /// The encoder to embed with: `None` when the model uses none, an error when it needs
    /// one and `encoder` is missing or of another dimension. A model with tuned layers
    /// embeds with them, built once on top of `encoder`.
    pub(crate) fn usable_encoder<'e>(
        &'e self,
        encoder: Option<&'e dyn Encoder>,
    ) -> Result<Option<&'e dyn Encoder>, ModelError> {
        match (&self.encoder, encoder) {
            (None, _) => Ok(None),
            (Some((name, dim)), Some(enc)) => {
                if enc.dim() != *dim {
                    return Err(ModelError::EncoderMismatch {
                        expected: name.clone(),
                        got: format!("`{}` gives {} dimensions, not {dim}", enc.name(), enc.dim()),
                    });
                }
                match &self.tuned {
                    None => Ok(Some(enc)),
                    Some(tuned) => Ok(Some(self.tuned_encoder(tuned, enc)?)),
                }
            }
            (Some((name, _)), None) => Err(ModelError::EncoderMismatch {
                expected: name.clone(),
                got: "no encoder is loaded".into(),
            }),
        }
    }

    fn tuned_encoder<'e>(
        &self,
        tuned: &'e Tuned,
        base: &dyn Encoder,
    ) -> Result<&'e dyn Encoder, ModelError> {
        let expected = self.encoder.as_ref().map_or("", |e| e.0.as_str());
        let mismatch = |got: String| ModelError::EncoderMismatch {
            expected: expected.to_string(),
            got,
        };
        let mini = base
            .as_any()
            .and_then(|a| a.downcast_ref::<MiniLm>())
            .ok_or_else(|| {
                mismatch(format!(
                    "`{}` cannot run the model's tuned layers",
                    base.name()
                ))
            })?;
        let (from, built) = match tuned.built.get() {
            Some(built) => built,
            None => {
                let end = tuned.layers.first + tuned.layers.layers.len();
                if mini.layer_count() != end {
                    return Err(mismatch(format!(
                        "`{}` has {} layers; the tuned ones end at layer {end}",
                        base.name(),
                        mini.layer_count()
                    )));
                }
                let built = Arc::new(mini.with_tuned(&tuned.layers)?);
                tuned.built.get_or_init(|| (mini.name().to_string(), built))
            }
        };
        if from != mini.name() {
            return Err(mismatch(format!(
                "the model's tuned layers run on `{from}`, not on `{}`",
                mini.name()
            )));
        }
        Ok(built.as_ref())
    }

    /// Check that the model can run with `encoder` (building its tuned layers on it, if it
    /// has any), so a model that cannot serve is refused when it is installed rather than
    /// at its first turn.
    pub fn prepare(&self, encoder: Option<&dyn Encoder>) -> Result<(), ModelError> {
        self.usable_encoder(encoder).map(|_| ())
    }

    /// Number of encoder layers the model fine-tuned (0 for a frozen encoder).
    pub fn tuned_layer_count(&self) -> usize {
        self.tuned.as_ref().map_or(0, |t| t.layers.layers.len())
    }

    /// The name of the encoder the model needs, if any.
    pub fn encoder_name(&self) -> Option<&str> {
        self.encoder.as_ref().map(|(n, _)| n.as_str())
    }

    /// Classify precomputed features.
    pub fn score(&self, f: &Features) -> Prediction {
        let scored = self.score_vectors(f);
        self.describe(&scored, f)
    }

    /// The heads' outputs for one input: coarse probabilities, fine log-scores (combined) and
    /// the fine head's raw logits.
    pub(crate) fn score_vectors(&self, f: &Features) -> Scored {
        self.score_heads(&self.coarse_head, &self.fine_head, &f.sparse, &f.dense)
    }

    /// [`IntentModel::score_vectors`] with a given pair of heads (the model's own, or the
    /// sparse exit's, which read no dense block).
    pub(crate) fn score_heads(
        &self,
        coarse_head: &Softmax,
        fine_head: &Softmax,
        sparse: &SparseVec,
        dense: &[f32],
    ) -> Scored {
        let mut coarse = coarse_head.logits(Input { sparse, dense });
        softmax_in_place(&mut coarse);
        let mut dense = dense.to_vec();
        dense.extend(coarse.iter().map(|p| p * self.config.coarse_feature_weight));
        let fine_logits = fine_head.logits(Input {
            sparse,
            dense: &dense,
        });
        let lse = log_sum_exp(&fine_logits);
        let gamma = self.config.coarse_score_weight;
        let combined: Vec<f32> = fine_logits
            .iter()
            .enumerate()
            .map(|(i, z)| {
                let pc = coarse[self.fine_to_coarse[i] as usize].max(1e-12);
                (z - lse) + gamma * pc.ln()
            })
            .collect();
        Scored {
            coarse,
            combined,
            fine_lse: lse,
        }
    }

    fn describe(&self, s: &Scored, f: &Features) -> Prediction {
        let probs = s.probabilities();
        let best = argmax(&probs);
        let raw = self.raw_surprise(s, &f.dense, best);
        let surprise = calibrate(&self.calibration, raw);
        self.prediction(s, &probs, (raw, surprise), false)
    }

    /// The prediction for scores `s` (with their probabilities `probs`) and a surprise
    /// already worked out as `(raw, calibrated)`.
    pub(crate) fn prediction(
        &self,
        s: &Scored,
        probs: &[f32],
        (raw, surprise): (f32, f32),
        sparse_exit: bool,
    ) -> Prediction {
        let mut order: Vec<usize> = (0..probs.len()).collect();
        order.sort_by(|a, b| probs[*b].total_cmp(&probs[*a]));
        let best = order[0];
        let group = self.fine_to_coarse[best] as usize;
        Prediction {
            coarse: self.coarse_labels[group].clone(),
            fine: self.fine_labels[best].clone(),
            confidence: probs[best],
            coarse_confidence: s.coarse[group],
            surprise,
            raw_surprise: raw,
            out_of_domain: surprise >= self.config.surprise_threshold,
            sparse_exit,
            alternatives: order[1..order.len().min(4)]
                .iter()
                .map(|&i| (self.fine_labels[i].clone(), probs[i]))
                .collect(),
        }
    }

    /// Negative energy of the fine head, plus the embedding's distance to the best class's
    /// centroid when there is an embedding (`dense`, scaled as in [`Features`]). Larger =
    /// stranger.
    pub(crate) fn raw_surprise(&self, s: &Scored, dense: &[f32], best: usize) -> f32 {
        let energy = -s.fine_lse;
        let dim = self.encoder.as_ref().map_or(0, |e| e.1);
        if dim == 0 || dense.len() != dim {
            return energy;
        }
        let centroid = &self.centroids[best * dim..][..dim];
        let norm = dense.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
        let cos: f32 = centroid.iter().zip(dense).map(|(c, v)| c * v).sum::<f32>() / norm;
        energy + self.config.surprise_distance_weight * (1.0 - cos)
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn fine_labels(&self) -> &[String] {
        &self.fine_labels
    }

    pub fn coarse_labels(&self) -> &[String] {
        &self.coarse_labels
    }

    /// The group of each fine intent, by index.
    pub fn coarse_of(&self, fine: &str) -> Option<&str> {
        let i = self.fine_labels.iter().position(|f| f == fine)?;
        Some(self.coarse_labels[self.fine_to_coarse[i] as usize].as_str())
    }

    /// Routing details of an intent (reply template, skill, tool, knowledge flag).
    pub fn intent(&self, fine: &str) -> Option<&IntentSpec> {
        self.intents.get(fine)
    }

    /// Set the calibrated surprise threshold (e.g. after evaluating on held-out data).
    pub fn set_surprise_threshold(&mut self, threshold: f32) {
        self.config.surprise_threshold = threshold;
    }

    /// Encode only `units` sentence units of a long text (0 = all of them).
    pub fn set_long_shortlist(&mut self, units: usize) {
        self.config.long_shortlist = units;
    }
}

/// What [`IntentModel::score_vectors`] returns.
#[derive(Debug, Clone)]
pub(crate) struct Scored {
    pub coarse: Vec<f32>,
    pub combined: Vec<f32>,
    pub fine_lse: f32,
}

impl Scored {
    /// The fine intents' probabilities (softmax of the combined scores).
    pub(crate) fn probabilities(&self) -> Vec<f32> {
        let mut p = self.combined.clone();
        softmax_in_place(&mut p);
        p
    }
}

/// Index of the largest value (the first of equals).
pub(crate) fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .fold(
            (0, f32::NEG_INFINITY),
            |a, (i, &x)| if x > a.1 { (i, x) } else { a },
        )
        .0
}

/// Share of the held-out in-domain raw surprises in `table` (sorted) below `raw`; without
/// calibration data, a logistic squash of the raw score.
pub(crate) fn calibrate(table: &[f32], raw: f32) -> f32 {
    if table.is_empty() {
        return 1.0 / (1.0 + (-raw).exp());
    }
    let below = table.partition_point(|s| *s < raw);
    below as f32 / table.len() as f32
}

/// Fit the coarse head and the fine head (which also sees the one-hot true group) on `rows`.
pub(crate) fn fit_heads(
    config: &ModelConfig,
    groups: usize,
    fine_to_coarse: &[u32],
    featurizer: &Featurizer,
    feats: &[Features],
    y_fine: &[u32],
    rows: &[usize],
) -> (Softmax, Softmax) {
    let sparse_dim = featurizer.dim();
    let dense_dim = feats.first().map_or(0, |f| f.dense.len());
    let y_coarse: Vec<u32> = rows
        .iter()
        .map(|&i| fine_to_coarse[y_fine[i] as usize])
        .collect();
    let inputs: Vec<Input<'_>> = rows
        .iter()
        .map(|&i| Input {
            sparse: &feats[i].sparse,
            dense: &feats[i].dense,
        })
        .collect();
    let coarse_head = Softmax::train(
        &inputs,
        &y_coarse,
        groups,
        sparse_dim,
        dense_dim,
        &config.train,
    );
    let fine_dense: Vec<Vec<f32>> = rows
        .iter()
        .zip(&y_coarse)
        .map(|(&i, &g)| {
            let mut v = feats[i].dense.clone();
            let start = v.len();
            v.resize(start + groups, 0.0);
            v[start + g as usize] = config.coarse_feature_weight;
            v
        })
        .collect();
    let fine_inputs: Vec<Input<'_>> = rows
        .iter()
        .zip(&fine_dense)
        .map(|(&i, d)| Input {
            sparse: &feats[i].sparse,
            dense: d,
        })
        .collect();
    let labels: Vec<u32> = rows.iter().map(|&i| y_fine[i]).collect();
    let fine_head = Softmax::train(
        &fine_inputs,
        &labels,
        fine_to_coarse.len(),
        sparse_dim,
        dense_dim + groups,
        &config.train,
    );
    (coarse_head, fine_head)
}

/// Temperature of the confidence gate over windows of a long text.
const GATE_TEMPERATURE: f32 = 0.1;
/// How much a unit's calibrated surprise lowers its gate. Filler that happens to resemble
/// an intent ("the weather has been rainy") is confident but atypical of real requests;
/// on CLINC150 turns buried in filler this took gated accuracy from 52% to 79% (sentence
/// units; `examples/long_text.rs`).
const GATE_SURPRISE_WEIGHT: f32 = 2.0;

/// Sentences, each with its closing mark; the last may have none.
fn split_sentences(text: &str) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        current.push(c);
        if matches!(c, '.' | '!' | '?' | '\n' | '。' | '！' | '？' | '；') {
            sentences.push(std::mem::take(&mut current));
        }
    }
    sentences.push(current);
    sentences
}

/// The units a long text is classified in: one sentence each (a request is usually one
/// sentence, and windows of several sentences blur it with its neighbours: 38% against 79%
/// in the measurement above). Fragments of fewer than three words join the next sentence;
/// sentences longer than `max_words` are cut by words.
pub fn sentence_units(text: &str, max_words: usize) -> Vec<String> {
    let mut units = Vec::new();
    let mut carry = String::new();
    for sentence in split_sentences(text) {
        carry.push_str(&sentence);
        if carry.split_whitespace().count() >= 3 || carry.chars().count() >= 6 {
            units.push(std::mem::take(&mut carry));
        }
    }
    if !carry.trim().is_empty() {
        match units.last_mut() {
            Some(last) => last.push_str(&carry),
            None => units.push(carry),
        }
    }
    units
        .into_iter()
        .flat_map(|u| sentence_windows(&u, max_words))
        .collect()
}

/// Pack whole sentences into windows of at most `max_words` words (a longer sentence is cut).
pub fn sentence_windows(text: &str, max_words: usize) -> Vec<String> {
    let sentences = split_sentences(text);
    // Unspaced scripts count one word per character.
    let words_in = |s: &str| {
        let runs = crate::text::runs(&crate::text::normalize(s));
        crate::text::words(&runs).len()
    };
    let mut windows: Vec<String> = Vec::new();
    let mut window = String::new();
    let mut count = 0;
    for sentence in sentences.iter().filter(|s| !s.trim().is_empty()) {
        let n = words_in(sentence);
        if count > 0 && count + n > max_words {
            windows.push(std::mem::take(&mut window));
            count = 0;
        }
        if n > max_words {
            // One very long sentence: cut it by words.
            let words: Vec<&str> = sentence.split_whitespace().collect();
            for part in words.chunks(max_words) {
                windows.push(part.join(" "));
            }
            continue;
        }
        window.push_str(sentence);
        count += n;
    }
    if !window.trim().is_empty() {
        windows.push(window);
    }
    windows
}

/// Name prefix of groups made by clustering.
pub const LEARNED_GROUP_PREFIX: &str = "group-";

/// Embed texts in batches of 64 (the encoder sorts by length inside a batch).
pub fn embed_all(encoder: &dyn Encoder, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
    let mut out = Vec::with_capacity(texts.len());
    for chunk in texts.chunks(64) {
        out.extend(encoder.encode(chunk)?);
    }
    Ok(out)
}

fn class_centroids(embeddings: &[Vec<f32>], y: &[u32], classes: usize, dim: usize) -> Vec<f32> {
    let mut c = vec![0f32; classes * dim];
    if dim == 0 {
        return c;
    }
    for (e, &label) in embeddings.iter().zip(y) {
        for (acc, v) in c[label as usize * dim..][..dim].iter_mut().zip(e) {
            *acc += v;
        }
    }
    for row in c.chunks_mut(dim) {
        let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
        if norm > 0.0 {
            row.iter_mut().for_each(|v| *v /= norm);
        }
    }
    c
}

/// The group of each fine label: the one the data gives, else a cluster of intents whose
/// centroids are close (k-means, k ≈ √n, at most 32); without embeddings all ungrouped
/// intents share one group.
fn assign_groups(
    data: &Dataset,
    fine_labels: &[String],
    centroids: &[f32],
    dim: usize,
) -> Vec<String> {
    let mut given: HashMap<&str, &str> = HashMap::new();
    for e in &data.examples {
        if let Some(c) = &e.coarse {
            given.insert(e.fine.as_str(), c.as_str());
        }
    }
    let ungrouped: Vec<usize> = (0..fine_labels.len())
        .filter(|&i| !given.contains_key(fine_labels[i].as_str()))
        .collect();
    let mut learned: HashMap<usize, usize> = HashMap::new();
    if !ungrouped.is_empty() {
        let k = ((ungrouped.len() as f32).sqrt().round() as usize).clamp(1, 32);
        let assignment = if dim > 0 {
            let points: Vec<&[f32]> = ungrouped
                .iter()
                .map(|&i| &centroids[i * dim..][..dim])
                .collect();
            kmeans(&points, k, 25)
        } else {
            vec![0; ungrouped.len()]
        };
        for (i, g) in ungrouped.iter().zip(assignment) {
            learned.insert(*i, g);
        }
    }
    (0..fine_labels.len())
        .map(|i| match given.get(fine_labels[i].as_str()) {
            Some(c) => (*c).to_string(),
            None => format!(
                "{LEARNED_GROUP_PREFIX}{}",
                learned.get(&i).copied().unwrap_or(0)
            ),
        })
        .collect()
}

/// Spherical k-means with farthest-point seeding (deterministic).
fn kmeans(points: &[&[f32]], k: usize, iterations: usize) -> Vec<usize> {
    let dim = points.first().map_or(0, |p| p.len());
    let k = k.min(points.len()).max(1);
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>();
    let mut centers: Vec<Vec<f32>> = vec![points[0].to_vec()];
    while centers.len() < k {
        let far = (0..points.len())
            .min_by(|&a, &b| {
                let best = |p: &[f32]| {
                    centers
                        .iter()
                        .map(|c| dot(p, c))
                        .fold(f32::NEG_INFINITY, f32::max)
                };
                best(points[a]).total_cmp(&best(points[b]))
            })
            .unwrap_or(0);
        centers.push(points[far].to_vec());
    }
    let mut assignment = vec![0usize; points.len()];
    for _ in 0..iterations {
        for (a, p) in assignment.iter_mut().zip(points) {
            *a = (0..k)
                .max_by(|&x, &y| dot(p, &centers[x]).total_cmp(&dot(p, &centers[y])))
                .unwrap_or(0);
        }
        for (c, center) in centers.iter_mut().enumerate() {
            let mut sum = vec![0f32; dim];
            for (p, _) in points.iter().zip(&assignment).filter(|(_, a)| **a == c) {
                sum.iter_mut().zip(p.iter()).for_each(|(s, v)| *s += v);
            }
            let norm = sum.iter().map(|v| v * v).sum::<f32>().sqrt();
            if norm > 0.0 {
                *center = sum.into_iter().map(|v| v / norm).collect();
            }
        }
    }
    assignment
}

/// Each example's index in `fine_labels` (which holds every fine label of `data`).
fn label_ids(data: &Dataset, fine_labels: &[String]) -> Vec<u32> {
    let fine_id: HashMap<&str, u32> = fine_labels
        .iter()
        .enumerate()
        .map(|(i, f)| (f.as_str(), i as u32))
        .collect();
    data.examples
        .iter()
        .map(|e| fine_id[e.fine.as_str()])
        .collect()
}

/// Stratified split: about `share` of each class's examples (at least one when a class has
/// three or more) go to the held-out part. Deterministic for a seed.
fn split_holdout(y: &[u32], share: f32, seed: u64) -> (Vec<usize>, Vec<usize>) {
    if share <= 0.0 {
        return ((0..y.len()).collect(), Vec::new());
    }
    let mut by_class: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for (i, &c) in y.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut fit = Vec::new();
    let mut held = Vec::new();
    for (c, mut rows) in by_class {
        // A cheap deterministic shuffle: order by a hash of (seed, class, row).
        rows.sort_by_key(|&r| crate::text::fnv1a(seed ^ u64::from(c), &(r as u64).to_le_bytes()));
        let n_held = if rows.len() >= 3 {
            ((rows.len() as f32 * share).round() as usize).max(1)
        } else {
            0
        };
        held.extend_from_slice(&rows[..n_held]);
        fit.extend_from_slice(&rows[n_held..]);
    }
    (fit, held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sentence_units_keep_sentences_apart_and_join_fragments() {
        let units = sentence_units(
            "Hi. Ok so. The weather was grey all week. Can you book a table for two? 明天会下雨吗？",
            64,
        );
        assert_eq!(
            units,
            [
                "Hi. Ok so.",
                " The weather was grey all week.",
                " Can you book a table for two?",
                " 明天会下雨吗？"
            ]
        );
        let long = "word ".repeat(150);
        assert_eq!(sentence_units(&long, 64).len(), 3);
    }
}
