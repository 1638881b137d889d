//! A BERT encoder forward pass in candle, enough for MiniLM-style sentence encoders.
//!
//! Our own module rather than `candle-transformers`' `BertModel` because we need to swap
//! every projection for a quantized matmul (the INT8 path) and to fuse the query/key/value
//! projections into one matmul; both need access to the layers' weights.

use super::gelu;
use super::int8::{self, Int8Linear};
use super::packed;
use super::softmax;
use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Result, Tensor, D};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

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
    /// Weights quantized to 8 bits (one scale per output row); activations are quantized on
    /// the fly (7 bits per row) and the products summed on integers (`int8.rs`: AVX-512 VNNI,
    /// AVX-VNNI or AVX2). On a CPU without AVX2, candle's Q8_0 blocks (32 weights per scale) instead.
    Int8,
}

impl Precision {
    /// INT8 where our integer kernel runs (AVX2 or better), f32 elsewhere: candle's Q8_0
    /// fallback is slower than f32.
    pub fn auto() -> Self {
        if int8::accelerated() {
            Precision::Int8
        } else {
            Precision::F32
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Int8 => "int8",
        }
    }
}

/// `x·Wᵀ + b`, in f32 or in INT8.
#[derive(Debug, Clone)]
struct Projection {
    weight: Weight,
    bias: Tensor,
}

#[derive(Debug, Clone)]
enum Weight {
    F32(Tensor),
    /// Our integer GEMM (`int8.rs`), where the CPU has AVX2 or better; it adds the bias
    /// itself.
    Int8(Arc<Int8Linear>),
    /// candle's Q8_0 matmul elsewhere (one dot product per output: slower than f32).
    Q8(QMatMul),
}

impl Projection {
    fn new(weight: Tensor, bias: Tensor, precision: Precision) -> Result<Self> {
        let weight = match precision {
            Precision::F32 => Weight::F32(weight),
            Precision::Int8 if int8::accelerated() => {
                let (n, k) = weight.dims2()?;
                let linear = Int8Linear::new(
                    &weight.flatten_all()?.to_vec1::<f32>()?,
                    &bias.to_vec1::<f32>()?,
                    n,
                    k,
                )
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "an INT8 projection needs inputs in fours, got {k}"
                    ))
                })?;
                Weight::Int8(Arc::new(linear))
            }
            // Every projection of these models has an input size divisible by 32.
            Precision::Int8 => Weight::Q8(QMatMul::from_qtensor(QTensor::quantize(
                &weight,
                GgmlDType::Q8_0,
            )?)?),
        };
        Ok(Self { weight, bias })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, false)
    }

    /// [`Self::forward`] followed by GELU, applied to the output buffer in place
    /// (`gelu.rs`: vectorized and threaded, where candle's `gelu_erf` is neither).
    fn forward_gelu(&self, x: &Tensor) -> Result<Tensor> {
        self.forward_then(x, true)
    }

    /// [`Self::apply`] on a tensor of any rank: its leading dimensions are the rows.
    fn forward_then(&self, x: &Tensor, gelu: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (_, lead) = dims.split_last().unwrap_or((&0, &[]));
        let m = lead.iter().product::<usize>();
        let out = self.apply(&x.flatten_all()?.to_vec1::<f32>()?, m, gelu)?;
        let mut out_dims = lead.to_vec();
        out_dims.push(self.bias.dim(0)?);
        Tensor::from_vec(out, out_dims, x.device())
    }

    /// `x·Wᵀ + b` for `m` rows of `x`, then GELU when `gelu` is set. One 2-D GEMM over all
    /// rows of the batch: `QMatMul`'s f32 path would broadcast the weight over the batch
    /// and run one small GEMM per sequence, which at batch 32 was slower per sentence than
    /// batch 1.
    fn apply(&self, x: &[f32], m: usize, gelu: bool) -> Result<Vec<f32>> {
        // candle's products take the rows as a tensor and leave the bias to us.
        let via_candle = |product: &dyn Fn(&Tensor) -> Result<Tensor>| -> Result<Vec<f32>> {
            let rows = Tensor::from_slice(x, (m, x.len() / m.max(1)), &Device::Cpu)?;
            product(&rows)?
                .broadcast_add(&self.bias)?
                .flatten_all()?
                .to_vec1()
        };
        let mut out = match &self.weight {
            Weight::Int8(lin) => lin.forward(x, m),
            Weight::F32(w) => via_candle(&|rows| rows.matmul(&w.t()?))?,
            Weight::Q8(q) => via_candle(&|rows| q.forward(rows))?,
        };
        if gelu {
            gelu::gelu_in_place(&mut out);
        }
        Ok(out)
    }

    /// The weight in f32 (dequantized when the projection is INT8) and the bias.
    fn f32_parts(&self) -> Result<(Tensor, Tensor)> {
        let weight = match &self.weight {
            Weight::F32(t) => t.clone(),
            Weight::Int8(lin) => {
                let (w, _) = lin.dequantized();
                Tensor::from_vec(w, (lin.outputs(), lin.inputs()), &Device::Cpu)?
            }
            Weight::Q8(q) => match q {
                QMatMul::QTensor(q) => q.dequantize(&Device::Cpu)?,
                QMatMul::Tensor(t) | QMatMul::TensorF16(t) => t.to_dtype(DType::F32)?,
            },
        };
        Ok((weight, self.bias.clone()))
    }
}

#[derive(Debug, Clone)]
struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    /// The same two as plain vectors, for the packed path (`packed.rs`).
    weight_v: Vec<f32>,
    bias_v: Vec<f32>,
    eps: f32,
}

impl LayerNorm {
    fn new(weight: Tensor, bias: Tensor, eps: f32) -> Result<Self> {
        Ok(Self {
            weight_v: weight.to_vec1()?,
            bias_v: bias.to_vec1()?,
            weight,
            bias,
            eps,
        })
    }

    /// `x ← layer_norm(x + residual)` on packed rows.
    fn apply(&self, x: &mut [f32], residual: Option<&[f32]>) {
        packed::add_layer_norm(x, residual, &self.weight_v, &self.bias_v, self.eps);
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::layer_norm(x, &self.weight, &self.bias, self.eps)
    }
}

#[derive(Debug, Clone)]
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
        let embed_norm = LayerNorm::new(
            take("embeddings.LayerNorm.weight")?,
            take("embeddings.LayerNorm.bias")?,
            eps,
        )?;
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
                attn_norm: LayerNorm::new(
                    w("attention.output.LayerNorm.weight")?,
                    w("attention.output.LayerNorm.bias")?,
                    eps,
                )?,
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
                out_norm: LayerNorm::new(
                    w("output.LayerNorm.weight")?,
                    w("output.LayerNorm.bias")?,
                    eps,
                )?,
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
        self.forward_layers(ids, mask, self.layers.len())
    }

    /// Hidden states after the embeddings and the first `layers` Transformer layers.
    pub fn forward_layers(&self, ids: &Tensor, mask: &Tensor, layers: usize) -> Result<Tensor> {
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
        let x = self.embed_norm.forward(&x)?;
        self.run_layers(x, mask, 0..layers.min(self.layers.len()))
    }

    /// Pooled, L2-normalised vectors of framed token sequences run as one packed batch
    /// (`packed.rs`): each sequence costs its own length, with no padding, and everything
    /// between the projections works on plain buffers. The same numbers as
    /// [`Bert::forward`] followed by [`mean_pool`], up to rounding.
    pub fn encode_packed(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>> {
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let x = self.embed_packed(seqs)?;
        let x = self.layers_packed(x, &lens, 0..self.layers.len())?;
        Ok(packed::mean_pool(&x, &lens, self.config.hidden_size))
    }

    /// The packed hidden states after the embeddings (`(tokens, hidden)`, sequences one
    /// after another).
    pub fn embed_packed(&self, seqs: &[&[u32]]) -> Result<Vec<f32>> {
        let lens: Vec<usize> = seqs.iter().map(|s| s.len()).collect();
        let total: usize = lens.iter().sum();
        if let Some(&len) = lens
            .iter()
            .find(|&&l| l > self.config.max_position_embeddings)
        {
            return Err(candle_core::Error::Msg(format!(
                "a sequence of {len} tokens is past the {} positions",
                self.config.max_position_embeddings
            )));
        }
        if total == 0 {
            return Ok(Vec::new());
        }
        let device = self.word.device();
        let ids: Vec<u32> = seqs.concat();
        let positions: Vec<u32> = lens.iter().flat_map(|&l| 0..l as u32).collect();
        let words = self
            .word
            .index_select(&Tensor::from_vec(ids, total, device)?, 0)?;
        let places = self
            .position
            .index_select(&Tensor::from_vec(positions, total, device)?, 0)?;
        let mut x: Vec<f32> = (words + places)?
            .broadcast_add(&self.token_type)?
            .flatten_all()?
            .to_vec1()?;
        self.embed_norm.apply(&mut x, None);
        Ok(x)
    }

    /// Run the layers in `range` on packed hidden states `x` of sequences `lens` long.
    pub fn layers_packed(
        &self,
        mut x: Vec<f32>,
        lens: &[usize],
        range: std::ops::Range<usize>,
    ) -> Result<Vec<f32>> {
        let total: usize = lens.iter().sum();
        if x.len() != total * self.config.hidden_size {
            return Err(candle_core::Error::Msg(format!(
                "{} hidden values for {total} tokens of {}",
                x.len(),
                self.config.hidden_size
            )));
        }
        if total == 0 {
            return Ok(x);
        }
        for layer in &self.layers[range] {
            let qkv = layer.qkv.apply(&x, total, false)?;
            let context = packed::attention(&qkv, lens, self.heads, self.head_dim);
            let mut attended = layer.attn_out.apply(&context, total, false)?;
            layer.attn_norm.apply(&mut attended, Some(&x));
            let up = layer.up.apply(&attended, total, true)?;
            x = layer.down.apply(&up, total, false)?;
            layer.out_norm.apply(&mut x, Some(&attended));
        }
        Ok(x)
    }

    /// Run the layers in `range` on hidden states `x` `(batch, len, hidden)`.
    pub fn run_layers(
        &self,
        mut x: Tensor,
        mask: &Tensor,
        range: std::ops::Range<usize>,
    ) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        // The key bias per sequence, as `key_bias` makes it, for `softmax.rs`.
        let key_bias: Vec<f32> = key_bias(mask)?.flatten_all()?.to_vec1()?;
        let scale = 1.0 / (self.head_dim as f32).sqrt();
        for layer in &self.layers[range] {
            let qkv = layer.qkv.forward(&x)?;
            let (q, k, v) = self.split_heads(&qkv)?;
            // Scale, mask and softmax in one pass over the scores (vectorized and threaded,
            // where candle's softmax calls a scalar `exp`).
            let mut scores = q.matmul(&k.t()?)?.flatten_all()?.to_vec1::<f32>()?;
            softmax::attention_in_place(&mut scores, len, self.heads * len, scale, &key_bias);
            let probs = Tensor::from_vec(scores, (batch, self.heads, len, len), x.device())?;
            let context = probs
                .matmul(&v)?
                .transpose(1, 2)?
                .reshape((batch, len, hidden))?;
            let attended = layer
                .attn_norm
                .forward(&(layer.attn_out.forward(&context)? + &x)?)?;
            let up = layer.up.forward_gelu(&attended)?;
            x = layer
                .out_norm
                .forward(&(layer.down.forward(&up)? + &attended)?)?;
        }
        Ok(x)
    }

    /// Query, key and value `(batch, heads, len, head_dim)` from the fused projection's
    /// output `(batch, len, 3·hidden)`.
    fn split_heads(&self, qkv: &Tensor) -> Result<(Tensor, Tensor, Tensor)> {
        let (batch, len, three_hidden) = qkv.dims3()?;
        let hidden = three_hidden / 3;
        let split = |i: usize| -> Result<Tensor> {
            qkv.narrow(D::Minus1, i * hidden, hidden)?
                .reshape((batch, len, self.heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        Ok((split(0)?, split(1)?, split(2)?))
    }

    /// Number of Transformer layers.
    pub fn layer_count(&self) -> usize {
        self.layers.len()
    }

    /// The f32 weights of layer `i` (dequantized from INT8 if need be).
    pub fn layer_weights(&self, i: usize) -> Result<LayerWeights> {
        let layer = self
            .layers
            .get(i)
            .ok_or_else(|| candle_core::Error::Msg(format!("the encoder has no layer {i}")))?;
        let (qkv_w, qkv_b) = layer.qkv.f32_parts()?;
        let (out_w, out_b) = layer.attn_out.f32_parts()?;
        let (up_w, up_b) = layer.up.f32_parts()?;
        let (down_w, down_b) = layer.down.f32_parts()?;
        Ok(LayerWeights {
            qkv_w,
            qkv_b,
            out_w,
            out_b,
            attn_norm_w: layer.attn_norm.weight.clone(),
            attn_norm_b: layer.attn_norm.bias.clone(),
            up_w,
            up_b,
            down_w,
            down_b,
            out_norm_w: layer.out_norm.weight.clone(),
            out_norm_b: layer.out_norm.bias.clone(),
        })
    }

    /// A copy whose layers from `first` on are `tuned`, at `precision`. The embeddings and
    /// the layers below `first` are shared with `self` (tensors are reference counted).
    pub fn with_layers(
        &self,
        first: usize,
        tuned: &[LayerWeights],
        precision: Precision,
    ) -> Result<Self> {
        if first + tuned.len() != self.layers.len() {
            return Err(candle_core::Error::Msg(format!(
                "tuned layers {first}..{} do not end at the encoder's last layer ({})",
                first + tuned.len(),
                self.layers.len()
            )));
        }
        let eps = self.embed_norm.eps;
        let mut layers = self.layers[..first].to_vec();
        for w in tuned {
            let norm =
                |weight: &Tensor, bias: &Tensor| LayerNorm::new(weight.clone(), bias.clone(), eps);
            layers.push(Layer {
                qkv: Projection::new(w.qkv_w.clone(), w.qkv_b.clone(), precision)?,
                attn_out: Projection::new(w.out_w.clone(), w.out_b.clone(), precision)?,
                attn_norm: norm(&w.attn_norm_w, &w.attn_norm_b)?,
                up: Projection::new(w.up_w.clone(), w.up_b.clone(), precision)?,
                down: Projection::new(w.down_w.clone(), w.down_b.clone(), precision)?,
                out_norm: norm(&w.out_norm_w, &w.out_norm_b)?,
            });
        }
        Ok(Self {
            word: self.word.clone(),
            position: self.position.clone(),
            token_type: self.token_type.clone(),
            embed_norm: self.embed_norm.clone(),
            layers,
            heads: self.heads,
            head_dim: self.head_dim,
            config: self.config.clone(),
        })
    }

    /// One layer with plain, differentiable candle ops (composed softmax and layer norm,
    /// unfused projections): the training path. `x` is `(batch, len, hidden)`, `key_bias`
    /// comes from [`key_bias`]. Gives the same output as the f32 inference path up to
    /// rounding; an INT8 encoder serves quantized copies of these f32 weights.
    pub fn train_layer(&self, w: &LayerWeights, x: &Tensor, key_bias: &Tensor) -> Result<Tensor> {
        let (batch, len, hidden) = x.dims3()?;
        let eps = self.embed_norm.eps;
        let linear = |x: &Tensor, weight: &Tensor, bias: &Tensor| -> Result<Tensor> {
            let rows = x.reshape((batch * len, x.dim(2)?))?;
            rows.matmul(&weight.t()?)?
                .broadcast_add(bias)?
                .reshape((batch, len, weight.dim(0)?))
        };
        let qkv = linear(x, &w.qkv_w, &w.qkv_b)?;
        let (q, k, v) = self.split_heads(&qkv)?;
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(key_bias)?;
        let probs = candle_nn::ops::softmax(&scores, D::Minus1)?;
        let context = probs
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((batch, len, hidden))?;
        let attended = candle_nn::ops::layer_norm_slow(
            &(linear(&context, &w.out_w, &w.out_b)? + x)?,
            &w.attn_norm_w,
            &w.attn_norm_b,
            eps,
        )?;
        let up = linear(&attended, &w.up_w, &w.up_b)?.gelu_erf()?;
        candle_nn::ops::layer_norm_slow(
            &(linear(&up, &w.down_w, &w.down_b)? + &attended)?,
            &w.out_norm_w,
            &w.out_norm_b,
            eps,
        )
    }
}

/// The f32 weights of one Transformer layer as plain tensors, with the query/key/value
/// projections fused (`qkv_w` is `3·hidden × hidden`). What fine-tuning trains and what a
/// model file stores for tuned layers.
#[derive(Debug, Clone)]
pub struct LayerWeights {
    pub qkv_w: Tensor,
    pub qkv_b: Tensor,
    pub out_w: Tensor,
    pub out_b: Tensor,
    pub attn_norm_w: Tensor,
    pub attn_norm_b: Tensor,
    pub up_w: Tensor,
    pub up_b: Tensor,
    pub down_w: Tensor,
    pub down_b: Tensor,
    pub out_norm_w: Tensor,
    pub out_norm_b: Tensor,
}

impl LayerWeights {
    /// Field names, in the order of [`LayerWeights::tensors`].
    pub const NAMES: [&'static str; 12] = [
        "qkv.weight",
        "qkv.bias",
        "attn_out.weight",
        "attn_out.bias",
        "attn_norm.weight",
        "attn_norm.bias",
        "up.weight",
        "up.bias",
        "down.weight",
        "down.bias",
        "out_norm.weight",
        "out_norm.bias",
    ];

    pub fn tensors(&self) -> [&Tensor; 12] {
        [
            &self.qkv_w,
            &self.qkv_b,
            &self.out_w,
            &self.out_b,
            &self.attn_norm_w,
            &self.attn_norm_b,
            &self.up_w,
            &self.up_b,
            &self.down_w,
            &self.down_b,
            &self.out_norm_w,
            &self.out_norm_b,
        ]
    }

    /// Build from tensors in the order of [`LayerWeights::NAMES`].
    pub fn from_tensors(t: [Tensor; 12]) -> Self {
        let [qkv_w, qkv_b, out_w, out_b, attn_norm_w, attn_norm_b, up_w, up_b, down_w, down_b, out_norm_w, out_norm_b] =
            t;
        Self {
            qkv_w,
            qkv_b,
            out_w,
            out_b,
            attn_norm_w,
            attn_norm_b,
            up_w,
            up_b,
            down_w,
            down_b,
            out_norm_w,
            out_norm_b,
        }
    }
}

/// Padded keys get a large negative score so softmax gives them no weight:
/// `(batch, 1, 1, len)` from a `(batch, len)` 0/1 mask.
pub fn key_bias(mask: &Tensor) -> Result<Tensor> {
    let (batch, len) = mask.dims2()?;
    ((mask.to_dtype(DType::F32)? - 1.0)? * 1e4)?.reshape((batch, 1, 1, len))
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
