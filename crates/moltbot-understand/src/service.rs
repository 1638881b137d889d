//! [`Understanding`]: the loaded encoder and intent model as the gateway uses them, with
//! retraining that swaps the model in place (no restart).

use crate::dataset::{Dataset, IntentSpec};
use crate::encoder::TurnVector;
use crate::model::{IntentModel, ModelConfig, ModelError, Prediction, TrainReport};
use moltbot_core::{weights_of, Encoder};
use serde::Serialize;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

/// Texts longer than this many words are classified window by window.
pub const LONG_TEXT_WORDS: usize = 64;

/// The answer of `POST /api/v1/understand`.
#[derive(Debug, Clone, Serialize)]
pub struct Understood {
    #[serde(flatten)]
    pub prediction: Prediction,
    pub latency_ms: f64,
}

/// Shared by every request. The model sits behind a std `RwLock` that is only held to clone
/// the `Arc` (never across an `.await` or a forward pass), so retraining never blocks turns.
pub struct Understanding {
    encoder: Option<Arc<dyn Encoder>>,
    model: RwLock<Arc<IntentModel>>,
    /// Where retrained models are saved, if anywhere.
    model_path: Option<PathBuf>,
}

impl std::fmt::Debug for Understanding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Understanding")
            .field(
                "encoder",
                &self.encoder.as_ref().map(|e| e.name().to_string()),
            )
            .field("model_path", &self.model_path)
            .finish_non_exhaustive()
    }
}

impl Understanding {
    pub fn new(
        encoder: Option<Arc<dyn Encoder>>,
        model: IntentModel,
        model_path: Option<PathBuf>,
    ) -> Self {
        if let Err(e) = model.prepare(encoder.as_deref()) {
            tracing::warn!(cause = %e, "the intent model cannot run on the loaded encoder");
        }
        Self {
            encoder,
            model: RwLock::new(Arc::new(model)),
            model_path,
        }
    }

    /// The model serving now.
    pub fn model(&self) -> Arc<IntentModel> {
        self.model
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub fn encoder(&self) -> Option<&Arc<dyn Encoder>> {
        self.encoder.as_ref()
    }

    /// Classify one turn. Blocking (a forward pass): call from `spawn_blocking`.
    pub fn understand(&self, text: &str) -> Result<Understood, ModelError> {
        self.understand_keep_vector(text).map(|(u, _)| u)
    }

    /// [`Understanding::understand`], also giving back what classifying computed of the
    /// encoder's vector of `text` (see [`IntentModel::predict_long_keep_vector`]): resolved
    /// with this encoder, it is the vector a knowledge store sharing the encoder would
    /// compute for the text.
    pub fn understand_keep_vector(
        &self,
        text: &str,
    ) -> Result<(Understood, Option<TurnVector>), ModelError> {
        let start = Instant::now();
        let model = self.model();
        let (prediction, vector) =
            model.predict_long_keep_vector(text, self.encoder.as_deref(), LONG_TEXT_WORDS)?;
        let understood = Understood {
            prediction,
            latency_ms: start.elapsed().as_secs_f64() * 1e3,
        };
        Ok((understood, vector))
    }

    /// Classify many turns in one call (batched through the encoder). Blocking. The
    /// latency of each result is the batch's time divided by its size.
    pub fn understand_batch(&self, texts: &[&str]) -> Result<Vec<Understood>, ModelError> {
        let start = Instant::now();
        let model = self.model();
        let predictions = model.predict_batch(texts, self.encoder.as_deref(), LONG_TEXT_WORDS)?;
        let each = start.elapsed().as_secs_f64() * 1e3 / texts.len().max(1) as f64;
        Ok(predictions
            .into_iter()
            .map(|prediction| Understood {
                prediction,
                latency_ms: each,
            })
            .collect())
    }

    /// Train a new model from `data` and swap it in; the old one keeps serving until then.
    /// Saved to the configured path first, so a restart loads what is serving.
    pub fn retrain(&self, data: &Dataset, config: ModelConfig) -> Result<TrainReport, ModelError> {
        let (model, report) = IntentModel::train(data, self.encoder.as_ref(), config)?;
        self.replace(model)?;
        Ok(report)
    }

    /// Swap in a model trained elsewhere.
    pub fn replace(&self, model: IntentModel) -> Result<(), ModelError> {
        if let Some(expected) = model.encoder_name() {
            let got = self.encoder.as_ref().map(|e| e.name().to_string());
            if got.as_deref().map(weights_of) != Some(weights_of(expected)) {
                return Err(ModelError::EncoderMismatch {
                    expected: expected.to_string(),
                    got: got.map_or("no encoder is loaded".into(), |g| {
                        format!("`{g}` is loaded")
                    }),
                });
            }
        }
        // Tuned layers are built on the serving encoder now, so a model that cannot run is
        // refused here and the first turn does not pay for the build.
        model.prepare(self.encoder.as_deref())?;
        if let Some(path) = &self.model_path {
            model.save(path)?;
        }
        *self.model.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(model);
        Ok(())
    }
}

/// Fill a reply template for `text`: the reply in the text's language when the intent has
/// one (Chinese/Japanese script → `zh`), with `{time}`, `{date}` and `{weekday}` replaced by
/// the local time `now`.
pub fn render_reply(spec: &IntentSpec, text: &str, now: &jiff::Zoned) -> Option<String> {
    let lang_zh = text.chars().any(crate::text::is_unspaced_script);
    let template = lang_zh
        .then(|| spec.replies.get("zh"))
        .flatten()
        .or(spec.reply.as_ref())?;
    let weekday = if lang_zh {
        const DAYS: [&str; 7] = [
            "星期一",
            "星期二",
            "星期三",
            "星期四",
            "星期五",
            "星期六",
            "星期日",
        ];
        DAYS[usize::try_from(now.weekday().to_monday_zero_offset()).unwrap_or(0) % 7].to_string()
    } else {
        now.strftime("%A").to_string()
    };
    Some(
        template
            .replace("{time}", &now.strftime("%H:%M").to_string())
            .replace("{date}", &now.strftime("%Y-%m-%d").to_string())
            .replace("{weekday}", &weekday),
    )
}
