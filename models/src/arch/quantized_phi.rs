//! Phi-2 (and Phi-1.5) from GGUF (`general.architecture = phi2`).
//!
//! Paper: "Textbooks Are All You Need II: phi-1.5 technical report" (Li et al., 2023).
//! Reference implementation: llama.cpp (`src/models/phi2.cpp`) and transformers'
//! `modeling_phi.py`: layer norm with bias, attention and MLP in parallel from the same
//! normed input, partial rotary embeddings, GELU (tanh approximation).
//!
//! Our own forward pass on candle's quantized matmul, not candle-transformers 0.11.1's
//! `quantized_phi`, which has no `clear_kv_cache` (its cache can only be replaced by
//! reloading the model) and a fixed RoPE base.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Module, Tensor};
use zoo_core::{GgufSource, ModelInfo, Result};
use zoo_macros::register_model;

use crate::gguf_head;

use crate::layers::{
    gelu, merge_heads, split_heads, split_qkv, AttnParams, Gelu, LayerKv, Positions, QLinear,
    RopeLayout, RopeTable,
};

/// Phi-2 / Phi-1.5 (GGUF, quantized weights).
#[register_model(
    name = "quantized-phi",
    format = gguf,
    gguf_architectures = ["phi2"],
    load = QuantizedPhi::load,
    batching = true,
)]
pub struct QuantizedPhi {
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: LayerNorm,
    output: QLinear,
    rope: RopeTable,
    rope_dim: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    info: ModelInfo,
}

struct LayerNorm {
    weight: Tensor,
    bias: Tensor,
    eps: f32,
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::layer_norm(&x.contiguous()?, &self.weight, &self.bias, self.eps)
    }
}

/// llama.cpp writes Phi-2's attention input projections fused (older converters) or
/// separate (current `convert_hf_to_gguf.py`); both load.
enum Qkv {
    /// q, k and v in that order.
    Fused(QLinear),
    Separate(QLinear, QLinear, QLinear),
}

struct Layer {
    norm: LayerNorm,
    qkv: Qkv,
    o: QLinear,
    up: QLinear,
    down: QLinear,
    kv: LayerKv,
}

/// transformers' PhiConfig default.
const DEFAULT_ROPE_BASE: f64 = 10_000.0;

impl QuantizedPhi {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(g: &GgufSource, device: &Device) -> Result<Self> {
        let info = ModelInfo::from_gguf(g, device)?;
        let heads = g.u64("phi2.attention.head_count")? as usize;
        let kv_heads = g
            .u64_opt("phi2.attention.head_count_kv")?
            .map_or(heads, |h| h as usize);
        let hidden = g.u64("phi2.embedding_length")? as usize;
        let head_dim = hidden / heads;
        let eps = g.f64("phi2.attention.layer_norm_epsilon")? as f32;
        let base = g
            .f64_opt("phi2.rope.freq_base")?
            .unwrap_or(DEFAULT_ROPE_BASE);
        let rope_dim = g.u64("phi2.rope.dimension_count")? as usize;
        let dense = |name: &str| gguf_head::dense(g, name, device);
        let linear = |stem: &str| gguf_head::linear(g, stem, device);
        let norm = |name: &str| -> Result<LayerNorm> {
            Ok(LayerNorm {
                weight: dense(&format!("{name}.weight"))?,
                bias: dense(&format!("{name}.bias"))?,
                eps,
            })
        };
        let (embed, output) = gguf_head::embedding_and_head(g, device, || linear("output"))?;
        let layers = gguf_head::blocks(g, "phi2", |p| {
            Ok(Layer {
                norm: norm(&p("attn_norm"))?,
                qkv: if g.has_tensor(&p("attn_qkv.weight")) {
                    Qkv::Fused(linear(&p("attn_qkv"))?)
                } else {
                    Qkv::Separate(
                        linear(&p("attn_q"))?,
                        linear(&p("attn_k"))?,
                        linear(&p("attn_v"))?,
                    )
                },
                o: linear(&p("attn_output"))?,
                up: linear(&p("ffn_up"))?,
                down: linear(&p("ffn_down"))?,
                kv: LayerKv::default(),
            })
        })?;
        Ok(Self {
            embed,
            layers,
            norm: norm("output_norm")?,
            output,
            rope: RopeTable::new(rope_dim, base as f32, 1.0, device)?,
            rope_dim,
            heads,
            kv_heads,
            head_dim,
            info,
        })
    }
}

impl QuantizedPhi {
    /// The hidden states of `ids` (`[batch, tokens]`) after the last layer, for either
    /// kind of step.
    fn hidden(&mut self, ids: &Tensor, at: Positions) -> Result<Tensor> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let mut x = self.embed.embedding(ids)?;
        for i in 0..self.layers.len() {
            let n = self.layers[i].norm.forward(&x)?;
            let (q, k, v) = match &self.layers[i].qkv {
                Qkv::Fused(qkv) => split_qkv(&at.linear(qkv, &n)?, h, kvh, hd)?,
                Qkv::Separate(q, k, v) => (
                    split_heads(&at.linear(q, &n)?, h, hd)?,
                    split_heads(&at.linear(k, &n)?, kvh, hd)?,
                    split_heads(&at.linear(v, &n)?, kvh, hd)?,
                ),
            };
            // The first `rope_dim` features of each head, NeoX halves.
            let (rot, pairs) = (self.rope_dim, RopeLayout::Halves);
            let q = at.rope_partial(&mut self.rope, &q, rot, pairs)?;
            let k = at.rope_partial(&mut self.rope, &k, rot, pairs)?;
            let layer = &mut self.layers[i];
            let a = layer
                .kv
                .attend(&at, &q, &k, &v, &AttnParams::for_head_dim(hd))?;
            let a = at.linear(&layer.o, &merge_heads(&a)?)?;
            // GELU as llama.cpp's CPU backend computes it (its f16 table): the reference
            // of a GGUF file.
            let up = at.linear(&layer.up, &n)?;
            let f = at.linear(&layer.down, &gelu(&up, Gelu::GgmlF16Table)?)?;
            x = ((x + a)? + f)?;
        }
        Ok(x)
    }
}

crate::layers::positions_lm!(QuantizedPhi);
