//! A BERT encoder forward pass in candle, enough for MiniLM-style sentence encoders.
//!
//! Our own module rather than `candle-transformers`' `BertModel` because we need to swap
//! every projection for a quantized matmul (the INT8 path) and to fuse the query/key/value
//! projections into one matmul; both need access to the layers' weights.

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use serde::Deserialize;
use std::collections::HashMap;

/// The fields of a Hugging Face `config.json` we use.
#[derive(Debug, Clone, Deserialize)]
pub struct BertConfig {
    pub hidden_size: usize,
    pub num_attention_heads: usize,
    pub num_hidden_layers: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub hidden_act: Option<String>,
}

fn default_eps() -> f64 {
    1e-12
}

/// Numeric precision of the projections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 weights, f32 matmuls.
    F32,
    /// Weights quantized to 8 bits in blocks of 32 (one scale per block); activations are
    /// quantized on the fly and the dot products run on integers.
    Int8,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// `x·Wᵀ + b`, in f32 or as a quantized matmul.
#[derive(Debug)]
struct Projection {
    weight: QMatMul,
    bias: Tensor,
}

impl Projection {
    fn new(weight: Tensor, bias: Tensor, precision: Precision) -> Result<Self> {
        let weight = match precision {
            Precision::F32 => QMatMul::Tensor(weight),
            // Every projection of these models has an input size divisible by 32.
            Precision::Int8 => QMatMul::from_qtensor(QTensor::quantize(&weight, GgmlDType::Q8_0)?)?,
        };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.weight.forward(x)?.broadcast_add(&self.bias)
    }
}

#[derive(Debug)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl LayerNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

#[derive(Debug)]
struct Layer {
    qkv: Projection,
    attn_out: Projection,
    attn_norm: LayerNorm,
    up: Projection,
    down: Projection,
    out_norm: LayerNorm,
}

/// The network: embeddings and the Transformer layers.
#[derive(Debug)]
pub struct Bert {
    word: Tensor,
    position: Tensor,
    token_type: Tensor,
    embed_norm: LayerNorm,
    layers: Vec<Layer>,
    heads: usize,
    head_dim: usize,
    pub config: BertConfig,
}

impl Bert {
    /// Build from the tensors of a `model.safetensors` (with or without a `bert.` prefix).
    pub fn new(
        mut tensors: HashMap<String, Tensor>,
        config: BertConfig,
        precision: Precision,
    ) -> Result<Self> {
        if tensors.keys().any(|k| k.starts_with("bert.")) {
            tensors = tensors
                .into_iter()
                .map(|(k, v)| (k.strip_prefix("bert.").map(str::to_string).unwrap_or(k), v))
                .collect();
        }
        let mut take = |name: &str| {
            tensors
                .remove(name)
                .ok_or_else(|| candle_core::Error::Msg(format!("tensor `{name}` is missing")))
        };
        let eps = config.layer_norm_eps as f32;
        let embed_norm = LayerNorm {
            weight: take("embeddings.LayerNorm.weight")?,
            bias: take("embeddings.LayerNorm.bias")?,
            eps,
        };
        let word = take("embeddings.word_embeddings.weight")?;
        let position = take("embeddings.position_embeddings.weight")?;
        let token_type = take("embeddings.token_type_embeddings.weight")?.narrow(0, 0, 1)?;
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for i in 0..config.num_hidden_layers {
            let p = format!("encoder.layer.{i}");
            let mut w = |s: &str| take(&format!("{p}.{s}"));
            let qkv_w = Tensor::cat(
                &[
                    w("attention.self.query.weight")?,
                    w("attention.self.key.weight")?,
                    w("attention.self.value.weight")?,
                ],
                0,
            )?;
            let qkv_b = Tensor::cat(
                &[
                    w("attention.self.query.bias")?,
                    w("attention.self.key.bias")?,
                    w("attention.self.value.bias")?,
                ],
                0,
            )?;
            layers.push(Layer {
                qkv: Projection::new(qkv_w, qkv_b, precision)?,
                attn_out: Projection::new(
                    w("attention.output.dense.weight")?,
                    w("attention.output.dense.bias")?,
                    precision,
                )?,
                attn_norm: LayerNorm {
                    weight: w("attention.output.LayerNorm.weight")?,
                    bias: w("attention.output.LayerNorm.bias")?,
                    eps,
                },
                up: Projection::new(
                    w("intermediate.dense.weight")?,
                    w("intermediate.dense.bias")?,
                    precision,
                )?,
                down: Projection::new(
                    w("output.dense.weight")?,
                    w("output.dense.bias")?,
                    precision,
                )?,
                out_norm: LayerNorm {
                    weight: w("output.LayerNorm.weight")?,
                    bias: w("output.LayerNorm.bias")?,
                    eps,
                },
            });
        }
        let heads = config.num_attention_heads;
        Ok(Self {
            word,
            position,
            token_type,
            embed_norm,
            layers,
            heads,
            head_dim: config.hidden_size / heads,
            config,
        })
    }

    /// Hidden states `(batch, len, hidden)` for token ids `(batch, len)` with a 0/1 mask.
    pub fn forward(&self, ids: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let (batch, len) = ids.dims2()?;
        let hidden = self.config.hidden_size;
        let words = self
            .word
            .index_select(&ids.flatten_all()?, 0)?
            .reshape((batch, len, hidden))?;
        let positions = self.position.narrow(0, 0, len)?;
        let x = words
            .broadcast_add(&positions)?
            .broadcast_add(&self.token_type)?;
        let mut x = self.embed_norm.forward(&x)?;
        // Padded keys get a large negative score so softmax gives them no weight.
        let key_bias = ((mask.to_dtype(DType::F32)? - 1.0)? * 1e4)?.reshape((batch, 1, 1, len))?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        for layer in &self.layers {
            let qkv = layer.qkv.forward(&x)?;
            let split = |i: usize| -> Result<Tensor> {
                qkv.narrow(D::Minus1, i * hidden, hidden)?
                    .reshape((batch, len, self.heads, self.head_dim))?
                    .transpose(1, 2)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = (q.matmul(&k.t()?)? * scale)?.broadcast_add(&key_bias)?;
            let probs = candle_nn::ops::softmax_last_dim(&scores)?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, len, hidden))?;
            let attended = layer
                .attn_norm
                .forward(&(layer.attn_out.forward(&context)? + &x)?)?;
            let up = layer.up.forward(&attended)?.gelu_erf()?;
            x = layer
                .out_norm
                .forward(&(layer.down.forward(&up)? + &attended)?)?;
        }
        Ok(x)
    }
}

/// Mean of the unmasked token states, L2-normalised: `(batch, hidden)`.
pub fn mean_pool(hidden: &Tensor, mask: &Tensor) -> Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?;
    let counts = mask.sum(1)?.clamp(1e-9, f64::MAX)?;
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::MAX)?;
    mean.broadcast_div(&norm)
}

/// The CPU device (no GPU is assumed anywhere in understanding).
pub fn cpu() -> Device {
    Device::Cpu
}
