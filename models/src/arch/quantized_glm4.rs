//! GLM-4 (the 0414 family) from GGUF (`general.architecture = glm4`): q/k/v biases,
//! interleaved rotary embeddings on part of each head (`glm4.rope.dimension_count`,
//! half in the released models), fused gate/up MLP, and a second RMS norm after both
//! attention and MLP ("sandwich" norms).
//!
//! Reference implementation: llama.cpp (`src/models/glm4.cpp`) and transformers'
//! `modeling_glm4.py`. Our own forward pass on zoo's layers, one body for a single
//! sequence and for the engine's batched steps ([`Positions`]), instead of
//! candle-transformers 0.11.1's `quantized_glm4`, which expands the token embedding to
//! f32, fixes the rotated part at half of each head and has no cache reset or batched
//! forward. A file whose value width differs from its key width is refused (the cache
//! stores one width).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Module, Tensor};
use zoo_core::{Error, GgufSource, ModelInfo, Result};
use zoo_macros::register_model;

use crate::gguf_head;

use crate::layers::{
    merge_heads, silu_mul_halves, split_heads, AttnParams, LayerKv, Positions, QLinear, RmsNorm,
    RopeLayout, RopeTable,
};

/// GLM-4-0414 (GGUF, quantized weights).
#[register_model(
    name = "quantized-glm4",
    format = gguf,
    gguf_architectures = ["glm4"],
    load = QuantizedGlm4::load,
    batching = true,
)]
pub struct QuantizedGlm4 {
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QLinear,
    rope: RopeTable,
    rotary: usize,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    info: ModelInfo,
}

struct Layer {
    attn_norm: RmsNorm,
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    /// gate and up fused, gate first.
    gate_up: QLinear,
    down: QLinear,
    post_ffw_norm: RmsNorm,
    kv: LayerKv,
}

/// transformers' Glm4Config default.
const DEFAULT_ROPE_BASE: f64 = 10_000.0;

impl QuantizedGlm4 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(g: &GgufSource, device: &Device) -> Result<Self> {
        let info = ModelInfo::from_gguf(g, device)?;
        let heads = g.u64("glm4.attention.head_count")? as usize;
        let kv_heads = g.u64("glm4.attention.head_count_kv")? as usize;
        let key = g.u64("glm4.attention.key_length")? as usize;
        let value = g
            .u64_opt("glm4.attention.value_length")?
            .map_or(key, |v| v as usize);
        let rotary = g
            .u64_opt("glm4.rope.dimension_count")?
            .map_or(key / 2, |r| r as usize);
        if value != key || rotary > key || rotary % 2 != 0 {
            return Err(Error::InvalidGguf {
                path: g.path.clone(),
                detail: format!(
                    "glm4 with key width {key}, value width {value} and rotary width {rotary}: \
                     expected equal key and value widths and an even rotary width up to the key width"
                ),
            });
        }
        let eps = g.f64("glm4.attention.layer_norm_rms_epsilon")?;
        let base = g
            .f64_opt("glm4.rope.freq_base")?
            .unwrap_or(DEFAULT_ROPE_BASE);
        let dense = |name: &str| gguf_head::dense(g, name, device);
        let qm = |stem: &str| gguf_head::linear(g, stem, device);
        let norm = |name: &str| -> Result<RmsNorm> { Ok(RmsNorm::new(dense(name)?, eps)) };
        let (embed, output) = gguf_head::embedding_and_head(g, device, || qm("output"))?;
        let layers = gguf_head::blocks(g, "glm4", |p| {
            Ok(Layer {
                attn_norm: norm(&p("attn_norm.weight"))?,
                q: qm(&p("attn_q"))?,
                k: qm(&p("attn_k"))?,
                v: qm(&p("attn_v"))?,
                o: qm(&p("attn_output"))?,
                post_attn_norm: norm(&p("post_attention_norm.weight"))?,
                ffn_norm: norm(&p("ffn_norm.weight"))?,
                gate_up: qm(&p("ffn_up"))?,
                down: qm(&p("ffn_down"))?,
                post_ffw_norm: norm(&p("post_ffw_norm.weight"))?,
                kv: LayerKv::default(),
            })
        })?;
        Ok(Self {
            embed,
            layers,
            norm: norm("output_norm.weight")?,
            output,
            rope: RopeTable::new(rotary, base as f32, 1.0, device)?,
            rotary,
            heads,
            kv_heads,
            head_dim: key,
            info,
        })
    }

    /// The hidden states of `ids` (`[batch, tokens]`) after the last layer, for either
    /// kind of step.
    fn hidden(&mut self, ids: &Tensor, at: Positions) -> Result<Tensor> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let mut x = self.embed.embedding(ids)?;
        for i in 0..self.layers.len() {
            let layer = &self.layers[i];
            let n = layer.attn_norm.forward(&x)?;
            let q = split_heads(&at.linear(&layer.q, &n)?, h, hd)?;
            let k = split_heads(&at.linear(&layer.k, &n)?, kvh, hd)?;
            let v = split_heads(&at.linear(&layer.v, &n)?, kvh, hd)?;
            // The first `rotary` features of each head, in interleaved pairs.
            let (rot, pairs) = (self.rotary, RopeLayout::Interleaved);
            let q = at.rope_partial(&mut self.rope, &q, rot, pairs)?;
            let k = at.rope_partial(&mut self.rope, &k, rot, pairs)?;
            let layer = &mut self.layers[i];
            let a = layer
                .kv
                .attend(&at, &q, &k, &v, &AttnParams::for_head_dim(hd))?;
            let a = layer
                .post_attn_norm
                .forward(&at.linear(&layer.o, &merge_heads(&a)?)?)?;
            x = (x + a)?;
            let gu = at.linear(&layer.gate_up, &layer.ffn_norm.forward(&x)?)?;
            let f = silu_mul_halves(&gu)?;
            x = (x + layer.post_ffw_norm.forward(&at.linear(&layer.down, &f)?)?)?;
        }
        Ok(x)
    }
}

crate::layers::positions_lm!(QuantizedGlm4);
