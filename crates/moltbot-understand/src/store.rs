//! Saving and loading an [`IntentModel`] as one safetensors file.
//!
//! Weights and vocabulary are tensors; labels, routing details and the training config are
//! one JSON document in the file's metadata under `moltbot.intent_model`. Writes go to a
//! temporary file in the same folder that is renamed into place, so a gateway reloading the
//! model never reads half a file.

use crate::dataset::IntentSpec;
use crate::encoder::tune::TunedLayers;
use crate::exit::SparseExit;
use crate::features::Featurizer;
use crate::linear::Softmax;
use crate::model::{IntentModel, ModelConfig, ModelError, Tuned};
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::Path;

const META_KEY: &str = "moltbot.intent_model";
/// Bumped when the layout changes; older files are refused with a clear message. Version 2
/// adds fine-tuned encoder layers (`tuned.*` tensors); a model without them is still
/// written as version 1, which builds that predate tuning read.
const FORMAT_VERSION: u32 = 2;
const FORMAT_VERSION_UNTUNED: u32 = 1;
/// Tuned layers are looked for at indices below this.
const MAX_LAYERS: usize = 64;

#[derive(Serialize, Deserialize)]
struct Meta {
    format_version: u32,
    config: ModelConfig,
    coarse_labels: Vec<String>,
    fine_labels: Vec<String>,
    fine_to_coarse: Vec<u32>,
    intents: BTreeMap<String, IntentSpec>,
    encoder: Option<(String, usize)>,
    n_char: u32,
    dense_dim: usize,
    /// The sparse exit's confidence threshold, if it answers at all; its heads are the
    /// `exit.*` tensors. Builds that predate the exit ignore both and serve every turn
    /// through the encoder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit_threshold: Option<f32>,
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

impl IntentModel {
    /// Write the model to `path` atomically.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        let io = |action: &'static str, e: &dyn std::fmt::Display| ModelError::Io {
            action,
            path: path.display().to_string(),
            cause: e.to_string(),
        };
        let (cs, cd, cb) = self.coarse_head.parts();
        let (fs, fd, fb) = self.fine_head.parts();
        let groups = self.coarse_labels.len();
        let fine = self.fine_labels.len();
        let vocab = self.featurizer.dim();
        let dense_dim = self.coarse_head.dims().1;
        let buffers: Vec<(&str, Dtype, Vec<usize>, Vec<u8>)> = vec![
            (
                "features.hashes",
                Dtype::U64,
                vec![vocab],
                self.featurizer
                    .hashes()
                    .iter()
                    .flat_map(|h| h.to_le_bytes())
                    .collect(),
            ),
            (
                "features.idf",
                Dtype::F32,
                vec![vocab],
                f32_bytes(self.featurizer.idf()),
            ),
            (
                "coarse.sparse",
                Dtype::F32,
                vec![vocab, groups],
                f32_bytes(cs),
            ),
            (
                "coarse.dense",
                Dtype::F32,
                vec![dense_dim, groups],
                f32_bytes(cd),
            ),
            ("coarse.bias", Dtype::F32, vec![groups], f32_bytes(cb)),
            ("fine.sparse", Dtype::F32, vec![vocab, fine], f32_bytes(fs)),
            (
                "fine.dense",
                Dtype::F32,
                vec![dense_dim + groups, fine],
                f32_bytes(fd),
            ),
            ("fine.bias", Dtype::F32, vec![fine], f32_bytes(fb)),
            (
                "centroids",
                Dtype::F32,
                vec![self.centroids.len()],
                f32_bytes(&self.centroids),
            ),
            (
                "calibration",
                Dtype::F32,
                vec![self.calibration.len()],
                f32_bytes(&self.calibration),
            ),
        ];
        let mut buffers = buffers;
        if let Some(exit) = &self.exit {
            let (cs, cd, cb) = exit.coarse_head.parts();
            let (fs, fd, fb) = exit.fine_head.parts();
            buffers.extend([
                (
                    "exit.coarse.sparse",
                    Dtype::F32,
                    vec![vocab, groups],
                    f32_bytes(cs),
                ),
                (
                    "exit.coarse.dense",
                    Dtype::F32,
                    vec![0, groups],
                    f32_bytes(cd),
                ),
                ("exit.coarse.bias", Dtype::F32, vec![groups], f32_bytes(cb)),
                (
                    "exit.fine.sparse",
                    Dtype::F32,
                    vec![vocab, fine],
                    f32_bytes(fs),
                ),
                (
                    "exit.fine.dense",
                    Dtype::F32,
                    vec![groups, fine],
                    f32_bytes(fd),
                ),
                ("exit.fine.bias", Dtype::F32, vec![fine], f32_bytes(fb)),
                (
                    "exit.calibration",
                    Dtype::F32,
                    vec![exit.calibration.len()],
                    f32_bytes(&exit.calibration),
                ),
            ]);
        }
        // Fine-tuned encoder layers, f32, under `tuned.{layer}.{field}`.
        let mut tuned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        if let Some(t) = &self.tuned {
            for (name, tensor) in t.layers.named() {
                let floats = tensor
                    .flatten_all()
                    .and_then(|f| f.to_vec1::<f32>())
                    .map_err(|e| io("read the tuned layers of", &e))?;
                tuned.push((name, tensor.dims().to_vec(), f32_bytes(&floats)));
            }
        }
        let mut views = Vec::with_capacity(buffers.len() + tuned.len());
        for (name, dtype, shape, bytes) in &buffers {
            let view = TensorView::new(*dtype, shape.clone(), bytes)
                .map_err(|e| io("lay out tensors for", &e))?;
            views.push((*name, view));
        }
        for (name, shape, bytes) in &tuned {
            let view = TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map_err(|e| io("lay out tensors for", &e))?;
            views.push((name.as_str(), view));
        }
        let meta = Meta {
            format_version: if self.tuned.is_some() {
                FORMAT_VERSION
            } else {
                FORMAT_VERSION_UNTUNED
            },
            config: self.config.clone(),
            coarse_labels: self.coarse_labels.clone(),
            fine_labels: self.fine_labels.clone(),
            fine_to_coarse: self.fine_to_coarse.clone(),
            intents: self.intents.clone(),
            encoder: self.encoder.clone(),
            n_char: self.featurizer.n_char(),
            dense_dim,
            exit_threshold: self.exit.as_ref().and_then(|e| e.threshold),
        };
        let meta_json = serde_json::to_string(&meta).map_err(|e| io("encode metadata for", &e))?;
        let info = HashMap::from([(META_KEY.to_string(), meta_json)]);
        let bytes = safetensors::serialize(views, Some(info)).map_err(|e| io("serialise", &e))?;

        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io("create the folder of", &e))?;
        let mut tmp =
            tempfile::NamedTempFile::new_in(dir).map_err(|e| io("create a file beside", &e))?;
        tmp.write_all(&bytes).map_err(|e| io("write", &e))?;
        tmp.as_file().sync_all().map_err(|e| io("sync", &e))?;
        tmp.persist(path).map_err(|e| io("rename into", &e.error))?;
        Ok(())
    }

    /// Read a model written by [`IntentModel::save`].
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::Io {
            action: "read",
            path: path.display().to_string(),
            cause: e.to_string(),
        })?;
        Self::from_bytes(&bytes).map_err(|cause| ModelError::Format {
            path: path.display().to_string(),
            cause,
        })
    }

    fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| e.to_string())?;
        let meta_json = header
            .metadata()
            .as_ref()
            .and_then(|m| m.get(META_KEY))
            .ok_or_else(|| format!("no `{META_KEY}` metadata"))?;
        let meta: Meta = serde_json::from_str(meta_json).map_err(|e| e.to_string())?;
        if !(FORMAT_VERSION_UNTUNED..=FORMAT_VERSION).contains(&meta.format_version) {
            return Err(format!(
                "format version {} is not {FORMAT_VERSION_UNTUNED} or {FORMAT_VERSION}; retrain \
                 with `moltbot intents train`",
                meta.format_version
            ));
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
        let raw = |name: &str, dtype: Dtype| -> Result<&[u8], String> {
            let t = st
                .tensor(name)
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            if t.dtype() != dtype {
                return Err(format!(
                    "tensor `{name}` is {:?}, expected {dtype:?}",
                    t.dtype()
                ));
            }
            Ok(t.data())
        };
        let floats = |name: &str| -> Result<Vec<f32>, String> {
            Ok(raw(name, Dtype::F32)?
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect())
        };
        let hashes: Vec<u64> = raw("features.hashes", Dtype::U64)?
            .chunks_exact(8)
            .map(|c| u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect();
        let idf = floats("features.idf")?;
        if idf.len() != hashes.len() || meta.n_char as usize > hashes.len() {
            return Err("vocabulary tensors disagree in length".into());
        }
        let vocab = hashes.len();
        let groups = meta.coarse_labels.len();
        let fine = meta.fine_labels.len();
        if meta.fine_to_coarse.len() != fine
            || meta.fine_to_coarse.iter().any(|g| *g as usize >= groups)
        {
            return Err("the fine-to-coarse table does not match the labels".into());
        }
        let featurizer =
            Featurizer::from_parts(meta.config.features.clone(), hashes, idf, meta.n_char);
        let head = |prefix: &str, classes: usize, dense: usize| -> Result<Softmax, String> {
            Softmax::from_parts(
                classes,
                vocab,
                dense,
                floats(&format!("{prefix}.sparse"))?,
                floats(&format!("{prefix}.dense"))?,
                floats(&format!("{prefix}.bias"))?,
            )
            .ok_or_else(|| format!("the `{prefix}` head's tensors have the wrong sizes"))
        };
        let coarse_head = head("coarse", groups, meta.dense_dim)?;
        let fine_head = head("fine", fine, meta.dense_dim + groups)?;
        let exit = match st.names().contains(&"exit.fine.bias") {
            false => None,
            true => Some(SparseExit {
                coarse_head: head("exit.coarse", groups, 0)?,
                fine_head: head("exit.fine", fine, groups)?,
                threshold: meta.exit_threshold,
                calibration: floats("exit.calibration")?,
            }),
        };
        let centroids = floats("centroids")?;
        let dim = meta.encoder.as_ref().map_or(0, |e| e.1);
        // Tuned layers: every `tuned.*` tensor must read, or the file is refused (a model
        // whose heads were fit on tuned vectors must not quietly serve untuned ones).
        let mut tuned_tensors = HashMap::new();
        for name in st.names().into_iter().filter(|n| n.starts_with("tuned.")) {
            let shape = st
                .tensor(name)
                .map_err(|e| format!("tensor `{name}`: {e}"))?
                .shape()
                .to_vec();
            let t = candle_core::Tensor::from_vec(floats(name)?, shape, &candle_core::Device::Cpu)
                .map_err(|e| format!("tensor `{name}`: {e}"))?;
            tuned_tensors.insert(name.to_string(), t);
        }
        let found = tuned_tensors.len();
        let tuned = TunedLayers::from_named(|n| tuned_tensors.remove(n), MAX_LAYERS)?;
        let used = tuned.as_ref().map_or(0, |t| t.layers.len() * 12);
        if used != found {
            return Err(format!(
                "{found} `tuned.*` tensors, but {used} make whole layers below {MAX_LAYERS}"
            ));
        }
        if tuned.is_some() != (meta.format_version == FORMAT_VERSION) {
            return Err(format!(
                "format version {} does not match the tuned layers in the file",
                meta.format_version
            ));
        }
        let tuned = tuned.map(Tuned::new);
        if centroids.len() != fine * dim {
            return Err("centroids do not match the encoder dimension".into());
        }
        Ok(IntentModel {
            config: meta.config,
            featurizer,
            coarse_labels: meta.coarse_labels,
            fine_labels: meta.fine_labels,
            fine_to_coarse: meta.fine_to_coarse,
            coarse_head,
            fine_head,
            intents: meta.intents,
            encoder: meta.encoder,
            centroids,
            calibration: floats("calibration")?,
            tuned,
            exit,
            exit_enabled: true,
        })
    }
}
