//! Dialogue understanding (DUE): what a turn is about, and how sure we are.
//!
//! # Layout
//! - [`text`]: normalisation, word runs (with unspaced scripts split per character) and
//!   character n-grams.
//! - [`features`]: [`Featurizer`], the sparse char + word TF-IDF features.
//! - [`linear`]: [`Softmax`], a logistic-regression head over sparse + dense inputs.
//! - [`dataset`]: [`Dataset`], intents files (YAML/JSON) and `text<TAB>label` TSV.
//! - [`model`]: [`IntentModel`], the hierarchical (coarse → fine) classifier with its
//!   calibrated surprise score.
//! - [`store`]: saving and loading a model as one safetensors file.
//! - [`service`]: [`Understanding`], the encoder + model the gateway serves, retrainable in
//!   place.
//! - [`encoder`]: [`MiniLm`], the candle BERT sentence encoder (f32 and INT8), and
//!   fine-tuning of its top layers for intents ([`encoder::tune`]).
//! - [`eval`]: accuracy, macro-F1, per-class errors, out-of-scope AUROC.

pub mod dataset;
pub mod encoder;
pub mod eval;
pub mod exit;
pub mod features;
pub mod linear;
pub mod model;
pub mod service;
pub mod store;
pub mod text;

pub use dataset::{Dataset, DatasetError, Example, IntentSpec};
pub use encoder::tune::{TuneConfig, TuneReport};
pub use encoder::{MiniLm, Precision, SharedStates, TurnVector};
pub use eval::{evaluate, EvalReport};
pub use features::{FeatureConfig, Featurizer, SparseVec};
pub use linear::{Softmax, TrainConfig};
pub use model::{IntentModel, ModelConfig, ModelError, Prediction, TrainReport};
pub use service::{render_reply, Understanding, Understood};
