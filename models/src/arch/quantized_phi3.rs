//! Phi-3 from GGUF (`general.architecture = phi3`): Phi-3 and Phi-3.5 mini.
//!
//! Paper: "Phi-3 Technical Report" (Abdin et al., 2024). Reference implementation:
//! llama.cpp (`src/models/phi3.cpp`) and transformers' `modeling_phi3.py`.
//!
//! Our own forward pass on candle's quantized matmul, not candle-transformers 0.11.1's
//! `quantized_phi3`, which ignores the GGUF's RoPE base (always 10000), requires an
//! `output.weight` tensor (models with tied embeddings fail to load) and has no
//! `clear_kv_cache`. The conformance fixture uses a RoPE base of 500000 and tied
//! embeddings so that all three would show.
//!
//! As in llama.cpp, the sliding window some Phi-3 GGUFs declare is not applied
//! (llama.cpp disables it for phi3: the converted value is not the trained one), and
//! LongRoPE models (`rope_factors_long`/`_short` tensors, the 128k variants) are refused
//! with an error rather than run with the wrong positions.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{Device, Module, Tensor};
use zoo_core::{Error, GgufSource, ModelInfo, Result};
use zoo_macros::register_model;

use crate::gguf_head;
use crate::layers::{
    merge_heads, silu_mul_halves, split_qkv, AttnParams, LayerKv, Positions, QLinear, RmsNorm,
    RopeTable,
};

/// Phi-3 / Phi-3.5 mini (GGUF, quantized weights).
#[register_model(
    name = "quantized-phi3",
    format = gguf,
    gguf_architectures = ["phi3"],
    load = QuantizedPhi3::load,
    batching = true,
)]
pub struct QuantizedPhi3 {
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QLinear,
    rope: RopeTable,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    info: ModelInfo,
}

struct Layer {
    attn_norm: RmsNorm,
    /// q, k and v fused, in that order.
    qkv: QLinear,
    o: QLinear,
    ffn_norm: RmsNorm,
    /// gate and up fused, gate first.
    gate_up: QLinear,
    down: QLinear,
    kv: LayerKv,
}

/// transformers' Phi3Config default.
const DEFAULT_ROPE_BASE: f64 = 10_000.0;

impl QuantizedPhi3 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(g: &GgufSource, device: &Device) -> Result<Self> {
        let info = ModelInfo::from_gguf(g, device)?;
        if g.has_tensor("rope_factors_long.weight")
            || g.has_tensor("blk.0.rope_factors_long.weight")
        {
            return Err(Error::InvalidGguf {
                path: g.path.clone(),
                detail:
                    "this Phi-3 uses LongRoPE (rope_factors_long), which zoo does not implement yet"
                        .into(),
            });
        }
        let heads = g.u64("phi3.attention.head_count")? as usize;
        let kv_heads = g.u64("phi3.attention.head_count_kv")? as usize;
        let hidden = g.u64("phi3.embedding_length")? as usize;
        let head_dim = hidden / heads;
        let eps = g.f64("phi3.attention.layer_norm_rms_epsilon")?;
        let base = g
            .f64_opt("phi3.rope.freq_base")?
            .unwrap_or(DEFAULT_ROPE_BASE);
        let rope_dim = g
            .u64_opt("phi3.rope.dimension_count")?
            .map_or(head_dim, |d| d as usize);
        if rope_dim != head_dim {
            return Err(Error::InvalidGguf {
                path: g.path.clone(),
                detail: format!("phi3.rope.dimension_count {rope_dim} differs from the head size {head_dim} (partial rotary is not Phi-3)"),
            });
        }
        let qm = |name: &str| -> Result<QLinear> {
            Ok(QLinear::new(Arc::new(g.tensor(name, device)?))?)
        };
        let norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm::new(
                g.tensor(name, device)?.dequantize(device)?,
                eps,
            ))
        };
        let (embed, output) = gguf_head::embedding_and_head(g, device, || qm("output.weight"))?;
        let layers = gguf_head::blocks(g, "phi3", |p| {
            Ok(Layer {
                attn_norm: norm(&p("attn_norm.weight"))?,
                qkv: qm(&p("attn_qkv.weight"))?,
                o: qm(&p("attn_output.weight"))?,
                ffn_norm: norm(&p("ffn_norm.weight"))?,
                gate_up: qm(&p("ffn_up.weight"))?,
                down: qm(&p("ffn_down.weight"))?,
                kv: LayerKv::default(),
            })
        })?;
        Ok(Self {
            embed,
            layers,
            norm: norm("output_norm.weight")?,
            output,
            rope: RopeTable::new(head_dim, base as f32, 1.0, device)?,
            heads,
            kv_heads,
            head_dim,
            info,
        })
    }
}

impl QuantizedPhi3 {
    /// The hidden states of `ids` (`[batch, tokens]`) after the last layer, for either
    /// kind of step.
    fn hidden(&mut self, ids: &Tensor, at: Positions) -> Result<Tensor> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let mut x = self.embed.embedding(ids)?;
        for layer in &mut self.layers {
            let n = layer.attn_norm.forward(&x)?;
            let qkv = at.linear(&layer.qkv, &n)?;
            let (q, k, v) = split_qkv(&qkv, h, kvh, hd)?;
            let q = at.rope(&mut self.rope, &q)?;
            let k = at.rope(&mut self.rope, &k)?;
            let a = layer
                .kv
                .attend(&at, &q, &k, &v, &AttnParams::for_head_dim(hd))?;
            x = (x + at.linear(&layer.o, &merge_heads(&a)?)?)?;
            let n = layer.ffn_norm.forward(&x)?;
            let gu = at.linear(&layer.gate_up, &n)?;
            let f = silu_mul_halves(&gu)?;
            x = (x + at.linear(&layer.down, &f)?)?;
        }
        Ok(x)
    }
}

crate::layers::positions_lm!(QuantizedPhi3);
