//! [`MiniLm`]: a BERT-family sentence encoder (all-MiniLM-L6-v2 by default) run in process
//! with candle, in f32 or INT8.
//!
//! Inputs are tokenized without padding, sorted by length and run in packed sub-batches
//! (`packed.rs`: every sequence at its own length, no padding). An input longer
//! than the model's window is cut into overlapping windows whose vectors are averaged
//! (weighted by their token counts) and re-normalised; the intent model adds score-gated
//! pooling on top for classification (see `model::IntentModel::predict_long`).

pub mod bert;
pub mod gelu;
pub mod int8;
pub mod packed;
pub mod softmax;
pub mod tune;

pub use bert::Precision;
use bert::{Bert, BertConfig};
use candle_core::Device;
use moltbot_core::{EncodeError, Encoder};
use std::path::Path;
use tokenizers::Tokenizer;

/// Sub-batch limits: at most this many sequences…
const MAX_BATCH: usize = 32;
/// …and this many tokens, counted as sequences × the longest one's length (sorted
/// ascending, the last member's), which bounds a sub-batch's buffers.
const MAX_BATCH_TOKENS: usize = 4096;
/// The window all-MiniLM-L6-v2 was trained with; position embeddings go to 512.
const DEFAULT_WINDOW: usize = 256;
/// Tokens shared by neighbouring windows of a long input.
const WINDOW_OVERLAP: usize = 32;

/// The encoder. Cheap to share behind an `Arc`; `encode` takes `&self`.
#[derive(Debug)]
pub struct MiniLm {
    bert: Bert,
    tokenizer: Tokenizer,
    name: String,
    precision: Precision,
    window: usize,
    cls: u32,
    sep: u32,
    device: Device,
    /// For a copy made by [`MiniLm::with_tuned`]: the base encoder's name and the first
    /// layer the two do not share.
    tuned_from: Option<(String, usize)>,
}

impl MiniLm {
    /// Load from a folder in Hugging Face layout: `config.json`, `model.safetensors`,
    /// `tokenizer.json`.
    pub fn load(dir: &Path, precision: Precision) -> Result<Self, EncodeError> {
        let read = |file: &str| {
            let path = dir.join(file);
            std::fs::read(&path)
                .map_err(|e| EncodeError::Load(format!("cannot read {}: {e}", path.display())))
        };
        let config: BertConfig = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| EncodeError::Load(format!("{}/config.json: {e}", dir.display())))?;
        if let Some(act) = config.hidden_act.as_deref().filter(|a| *a != "gelu") {
            return Err(EncodeError::Load(format!(
                "hidden_act `{act}` is not supported, only `gelu`"
            )));
        }
        let device = bert::cpu();
        let tensors = candle_core::safetensors::load_buffer(&read("model.safetensors")?, &device)
            .map_err(|e| {
            EncodeError::Load(format!("{}/model.safetensors: {e}", dir.display()))
        })?;
        let window = config.max_position_embeddings.min(DEFAULT_WINDOW);
        let bert = Bert::new(tensors, config, precision)
            .map_err(|e| EncodeError::Load(format!("{}: {e}", dir.display())))?;
        let mut tokenizer = Tokenizer::from_file(dir.join("tokenizer.json"))
            .map_err(|e| EncodeError::Load(format!("{}/tokenizer.json: {e}", dir.display())))?;
        // The shipped tokenizer pads to 128 and truncates; we batch and window ourselves.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(None)
            .map_err(|e| EncodeError::Load(format!("tokenizer: {e}")))?;
        let special = |t: &str| {
            tokenizer
                .token_to_id(t)
                .ok_or_else(|| EncodeError::Load(format!("the tokenizer has no `{t}` token")))
        };
        let (cls, sep) = (special("[CLS]")?, special("[SEP]")?);
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "encoder".into());
        Ok(Self {
            bert,
            tokenizer,
            name: format!("{base}/{}", precision.as_str()),
            precision,
            window,
            cls,
            sep,
            device,
            tuned_from: None,
        })
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Token ids of `text` without special tokens.
    pub fn token_ids(&self, texts: &[&str]) -> Result<Vec<Vec<u32>>, EncodeError> {
        let encodings = self
            .tokenizer
            .encode_batch(texts.to_vec(), false)
            .map_err(|e| EncodeError::Tokenize(e.to_string()))?;
        Ok(encodings.iter().map(|e| e.get_ids().to_vec()).collect())
    }

    /// Vectors of already-framed sequences (`[CLS] … [SEP]`), in input order.
    fn run_sequences(&self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EncodeError> {
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by_key(|&i| seqs[i].len());
        let mut out = vec![Vec::new(); seqs.len()];
        let mut start = 0;
        while start < order.len() {
            // Sorted ascending, so the last member of a sub-batch is its longest.
            let mut end = start + 1;
            while end < order.len()
                && end - start < MAX_BATCH
                && (end - start + 1) * seqs[order[end]].len() <= MAX_BATCH_TOKENS
            {
                end += 1;
            }
            let members = &order[start..end];
            let vectors = self.forward(members.iter().map(|&i| seqs[i].as_slice()))?;
            for (&i, v) in members.iter().zip(vectors) {
                out[i] = v;
            }
            start = end;
        }
        Ok(out)
    }

    fn forward<'a>(
        &self,
        seqs: impl ExactSizeIterator<Item = &'a [u32]> + Clone,
    ) -> Result<Vec<Vec<f32>>, EncodeError> {
        let seqs: Vec<&[u32]> = seqs.collect();
        self.bert
            .encode_packed(&seqs)
            .map_err(|e| EncodeError::Forward(e.to_string()))
    }

    /// Padded token ids and their 0/1 mask, both `(batch, len)`: the padded reference
    /// path the packed one is tested against.
    #[cfg(test)]
    fn input_tensors<'a>(
        &self,
        seqs: impl ExactSizeIterator<Item = &'a [u32]> + Clone,
    ) -> candle_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
        let batch = seqs.len();
        let (ids, mask, len) = pad(seqs);
        Ok((
            candle_core::Tensor::from_vec(ids, (batch, len), &self.device)?,
            candle_core::Tensor::from_vec(mask, (batch, len), &self.device)?,
        ))
    }

    /// Encode one text with this encoder, a [`MiniLm::with_tuned`] copy of a base encoder,
    /// and keep the hidden states entering its first tuned layer: they are the same for the
    /// base, which can finish its own vector of the text from them
    /// ([`TurnVector::resolve`]) without running the shared layers again. `None` when the
    /// text needs more than one window.
    pub fn encode_keep_shared(
        &self,
        text: &str,
    ) -> Result<Option<(Vec<f32>, SharedStates)>, EncodeError> {
        let Some((base, first)) = self.tuned_from.clone() else {
            return Err(EncodeError::Forward(format!(
                "`{}` has no tuned layers to part from its base at",
                self.name
            )));
        };
        let ids = self.token_ids(&[text])?;
        let mut seqs = self.windows(&ids[0]);
        if seqs.len() != 1 {
            return Ok(None);
        }
        let seq = seqs.pop().unwrap_or_default();
        let run = || -> candle_core::Result<Vec<f32>> {
            let x = self.bert.embed_packed(&[seq.as_slice()])?;
            self.bert.layers_packed(x, &[seq.len()], 0..first)
        };
        let hidden = run().map_err(|e| EncodeError::Forward(e.to_string()))?;
        let states = SharedStates {
            hidden,
            first,
            tokens: seq.len(),
            base,
        };
        Ok(Some((self.top_vector(&states)?, states)))
    }

    /// The vector of one text from `states`: this encoder's layers from `states.first` on,
    /// then the same pooling and normalisation as [`Encoder::encode`].
    fn top_vector(&self, states: &SharedStates) -> Result<Vec<f32>, EncodeError> {
        let run = || -> candle_core::Result<Vec<f32>> {
            let top = self.bert.layers_packed(
                states.hidden.clone(),
                &[states.tokens],
                states.first..self.layer_count(),
            )?;
            Ok(packed::mean_pool(&top, &[states.tokens], self.dim())
                .pop()
                .unwrap_or_default())
        };
        let v = run().map_err(|e| EncodeError::Forward(e.to_string()))?;
        Ok(
            combine_windows(vec![v], &[0], &[states.tokens], 1, self.dim())
                .pop()
                .unwrap_or_default(),
        )
    }

    /// This encoder's vector of a text from the hidden states [`MiniLm::encode_keep_shared`]
    /// kept: the layers from where the tuned copy parted on, then the same pooling as
    /// [`Encoder::encode`].
    fn finish(&self, states: SharedStates) -> Result<Vec<f32>, EncodeError> {
        if states.base != self.name || states.first > self.layer_count() {
            return Err(EncodeError::Forward(format!(
                "hidden states from `{}` at layer {} cannot be finished by `{}`",
                states.base, states.first, self.name
            )));
        }
        self.top_vector(&states)
    }

    /// A copy of this encoder whose top layers are `tuned` (see [`tune`]); the embeddings
    /// and the lower layers are shared, so it costs only the tuned layers' memory.
    pub fn with_tuned(&self, tuned: &tune::TunedLayers) -> Result<Self, EncodeError> {
        let bert = self
            .bert
            .with_layers(tuned.first, &tuned.layers, self.precision)
            .map_err(|e| EncodeError::Load(format!("tuned layers: {e}")))?;
        Ok(Self {
            bert,
            tokenizer: self.tokenizer.clone(),
            name: format!("{}+tuned{}", self.name, tuned.layers.len()),
            precision: self.precision,
            window: self.window,
            cls: self.cls,
            sep: self.sep,
            device: self.device.clone(),
            tuned_from: Some((self.name.clone(), tuned.first)),
        })
    }

    /// Number of Transformer layers.
    pub fn layer_count(&self) -> usize {
        self.bert.layer_count()
    }

    /// Split content tokens into framed windows of at most `self.window` tokens.
    fn windows(&self, ids: &[u32]) -> Vec<Vec<u32>> {
        let room = self.window - 2;
        let frame = |part: &[u32]| {
            let mut v = Vec::with_capacity(part.len() + 2);
            v.push(self.cls);
            v.extend_from_slice(part);
            v.push(self.sep);
            v
        };
        if ids.len() <= room {
            return vec![frame(ids)];
        }
        let stride = room - WINDOW_OVERLAP;
        let mut out = Vec::new();
        let mut start = 0;
        loop {
            let end = (start + room).min(ids.len());
            out.push(frame(&ids[start..end]));
            if end == ids.len() {
                return out;
            }
            start += stride;
        }
    }
}

/// Token ids and mask of sequences padded to the longest: `(ids, mask, len)`.
fn pad<'a>(seqs: impl ExactSizeIterator<Item = &'a [u32]> + Clone) -> (Vec<u32>, Vec<u8>, usize) {
    let batch = seqs.len();
    let len = seqs.clone().map(<[u32]>::len).max().unwrap_or(0);
    let mut ids = vec![0u32; batch * len];
    let mut mask = vec![0u8; batch * len];
    for (row, seq) in seqs.enumerate() {
        ids[row * len..][..seq.len()].copy_from_slice(seq);
        mask[row * len..][..seq.len()].fill(1);
    }
    (ids, mask, len)
}

impl Encoder for MiniLm {
    fn name(&self) -> &str {
        &self.name
    }

    fn dim(&self) -> usize {
        self.bert.config.hidden_size
    }

    fn max_tokens(&self) -> usize {
        self.window
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }

    fn encode(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EncodeError> {
        let ids = self.token_ids(texts)?;
        // Every window of every text in one list, remembering whose it is.
        let mut seqs = Vec::with_capacity(ids.len());
        let mut owner = Vec::with_capacity(ids.len());
        for (i, text_ids) in ids.iter().enumerate() {
            for w in self.windows(text_ids) {
                seqs.push(w);
                owner.push(i);
            }
        }
        let vectors = self.run_sequences(&seqs)?;
        let tokens: Vec<usize> = seqs.iter().map(Vec::len).collect();
        Ok(combine_windows(
            vectors,
            &owner,
            &tokens,
            texts.len(),
            self.dim(),
        ))
    }
}

/// One vector per text from its windows' vectors: their sum weighted by token counts,
/// L2-normalised. `owner[w]` is the text window `w` belongs to.
fn combine_windows(
    vectors: Vec<Vec<f32>>,
    owner: &[usize],
    tokens: &[usize],
    texts: usize,
    dim: usize,
) -> Vec<Vec<f32>> {
    let mut out = vec![vec![0f32; dim]; texts];
    for ((v, &i), &n) in vectors.iter().zip(owner).zip(tokens) {
        let weight = n as f32;
        out[i].iter_mut().zip(v).for_each(|(o, x)| *o += weight * x);
    }
    for v in &mut out {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            v.iter_mut().for_each(|x| *x /= norm);
        }
    }
    out
}

/// The hidden states of one text where a tuned encoder parts from its base (see
/// [`MiniLm::encode_keep_shared`]).
#[derive(Debug, Clone)]
pub struct SharedStates {
    /// Packed hidden states `(tokens, hidden)` of the one sequence.
    hidden: Vec<f32>,
    /// The first layer the two encoders do not share.
    first: usize,
    tokens: usize,
    /// Name of the base encoder that can finish them.
    base: String,
}

/// A turn's vector from the base encoder, as understanding hands it on to a knowledge
/// search sharing that encoder.
#[derive(Debug, Clone)]
pub enum TurnVector {
    /// The base encoder's vector (the model classified with it).
    Ready(Vec<f32>),
    /// The model classified through tuned top layers; the base encoder's vector is one
    /// run of its own top layers away. Finishing it only when a search needs it keeps
    /// turns answered without a search at the tuned model's cost.
    Shared(SharedStates),
}

impl TurnVector {
    /// The base encoder's vector: `encoder` must be the encoder the model's tuned layers
    /// were built on.
    pub fn resolve(self, encoder: &dyn Encoder) -> Result<Vec<f32>, EncodeError> {
        match self {
            Self::Ready(v) => Ok(v),
            Self::Shared(states) => encoder
                .as_any()
                .and_then(|a| a.downcast_ref::<MiniLm>())
                .ok_or_else(|| {
                    EncodeError::Forward(format!(
                        "`{}` cannot finish hidden states of `{}`",
                        encoder.name(),
                        states.base
                    ))
                })?
                .finish(states),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::bert::mean_pool;
    use super::*;

    /// The packed path against the padded one (candle's batched attention over a padded
    /// batch, then masked mean pooling), at both precisions, on the real model
    /// (`MOLTBOT_TEST_ENCODER`; skipped without it, as the integration tests do).
    #[test]
    fn packed_batches_give_the_padded_batches_vectors() {
        let Some(dir) = std::env::var_os("MOLTBOT_TEST_ENCODER").filter(|v| !v.is_empty()) else {
            eprintln!("MOLTBOT_TEST_ENCODER is not set; skipping");
            return;
        };
        let texts = [
            "hi",
            "what's my balance",
            "please book me a table for four at an italian place near the station tonight",
            "I lost my card yesterday on the train and somebody may have used it twice since",
        ];
        for precision in [Precision::F32, Precision::Int8] {
            let enc = MiniLm::load(Path::new(&dir), precision).expect("load");
            let ids = enc.token_ids(&texts).expect("tokenize");
            let seqs: Vec<Vec<u32>> = ids.iter().map(|t| enc.windows(t).remove(0)).collect();
            let refs: Vec<&[u32]> = seqs.iter().map(Vec::as_slice).collect();
            let packed = enc.bert.encode_packed(&refs).expect("packed");
            let (ids, mask) = enc.input_tensors(refs.iter().copied()).expect("inputs");
            let hidden = enc.bert.forward(&ids, &mask).expect("padded");
            let padded = mean_pool(&hidden, &mask)
                .and_then(|t| t.to_vec2::<f32>())
                .expect("pool");
            // f32 differs by summation order only. INT8 quantizes every projection's input
            // row, and a last-bit difference upstream can move a value across a rounding
            // step, so two INT8 paths agree only about as well as INT8 and f32 do (mean
            // cos 0.997). The f32 bound is the sharp check of the packed code.
            let (min_cos, max_diff) = match precision {
                Precision::F32 => (0.99999, 1e-3),
                Precision::Int8 => (0.995, 2e-2),
            };
            for (t, (a, b)) in texts.iter().zip(packed.iter().zip(&padded)) {
                let cos: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let worst = a
                    .iter()
                    .zip(b)
                    .map(|(x, y)| (x - y).abs())
                    .fold(0f32, f32::max);
                assert!(
                    cos > min_cos && worst < max_diff,
                    "{precision:?} `{t}`: cos {cos}, largest difference {worst}"
                );
            }
        }
    }
}
