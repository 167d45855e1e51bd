//! Gemma 3 from GGUF (`general.architecture = gemma3`), text part.
//!
//! Paper: "Gemma 3 Technical Report" (Gemma Team, 2025). Reference implementation:
//! llama.cpp (`src/models/gemma3.cpp`) and transformers' `modeling_gemma3.py`.
//!
//! This file has its own forward pass on candle's quantized matmul instead of
//! candle-transformers 0.11.1's `quantized_gemma3`, which is wrong in ways the
//! conformance suite shows:
//! - its feed-forward uses SiLU where Gemma uses GELU (tanh approximation): the first
//!   logit of the real 270M model comes out 31.95 instead of llama.cpp's 22.9
//!   (candle issue 3745, fix 3747 unmerged);
//! - it has no `clear_kv_cache`;
//! - its sliding-window mask is skipped during decode, allows `window + 1` keys, and
//!   masks the whole past when a multi-token step starts after position 0;
//! - it builds rotary tables for 131,072 positions in each layer (~2.3 GiB for the
//!   270M model) and expands the embedding table to f32. Here two tables (local and
//!   global base) are shared by all layers and grow with the positions used, and the
//!   embedding stays quantized (rows are dequantized on lookup; tied output reuses it).

use std::sync::Arc;

use candle_core::quantized::{QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use zoo_core::registry::Registered;
use zoo_core::{last_position_logits, CausalLM, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::layers::{
    attention, causal_mask, last_position, merge_heads, split_heads, KvCache, RmsNorm, RopeTable,
};

/// Gemma 3 (GGUF, quantized weights), text only.
#[register_model(
    name = "quantized-gemma3",
    format = gguf,
    gguf_architectures = ["gemma3"],
    load = QuantizedGemma3::load,
)]
pub struct QuantizedGemma3 {
    decoder: Gemma3Decoder,
    info: ModelInfo,
}

/// The Gemma 3 text decoder, whatever the weights' format: the GGUF file here and the
/// safetensors form (`gemma3.rs`) both build it, so both get the fixes listed above.
pub(crate) struct Gemma3Decoder {
    embed: Arc<QTensor>,
    embed_scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    rope_local: RopeTable,
    rope_global: RopeTable,
    hp: Hparams,
}

struct Layer {
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    q_norm: RmsNorm,
    k_norm: RmsNorm,
    attn_norm: RmsNorm,
    post_attn_norm: RmsNorm,
    ffn_norm: RmsNorm,
    post_ffn_norm: RmsNorm,
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
    /// `Some(window)` for local (sliding-window) layers, `None` for global ones.
    window: Option<usize>,
    cache: KvCache,
}

/// llama.cpp's Gemma 3: five local layers, then one global (`n_swa_pattern = 6`).
const SLIDING_WINDOW_PATTERN: usize = 6;
/// transformers' Gemma3TextConfig defaults, used when the GGUF omits a key.
const DEFAULT_ROPE_BASE: f64 = 1_000_000.0;
const DEFAULT_ROPE_BASE_LOCAL: f64 = 10_000.0;

/// What the decoder needs to know, from GGUF metadata or config.json.
pub(crate) struct Hparams {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub blocks: usize,
    pub hidden: usize,
    pub window: usize,
    /// Which layers are local (sliding-window).
    pub local: Vec<bool>,
    pub rope_base: f64,
    pub rope_base_local: f64,
    /// Linear RoPE scaling factor of the global layers.
    pub rope_scale: f64,
    /// `1/sqrt(query_pre_attn_scalar)`.
    pub attn_scale: f64,
}

/// A weight by its llama.cpp name (`blk.0.attn_q.weight`), still quantized or as f32.
pub(crate) type Weights<'a> = dyn Fn(&str) -> Result<QTensor> + 'a;

impl QuantizedGemma3 {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let key = |s: &str| format!("gemma3.{s}");
        let blocks = g.u64(&key("block_count"))? as usize;
        let head_dim = g.u64(&key("attention.key_length"))? as usize;
        let hp = Hparams {
            heads: g.u64(&key("attention.head_count"))? as usize,
            kv_heads: g.u64(&key("attention.head_count_kv"))? as usize,
            head_dim,
            eps: g.f64(&key("attention.layer_norm_rms_epsilon"))?,
            blocks,
            hidden: g.u64(&key("embedding_length"))? as usize,
            window: g.u64(&key("attention.sliding_window"))? as usize,
            local: (0..blocks)
                .map(|i| (i + 1) % SLIDING_WINDOW_PATTERN != 0)
                .collect(),
            rope_base: g
                .f64_opt(&key("rope.freq_base"))?
                .unwrap_or(DEFAULT_ROPE_BASE),
            rope_base_local: g
                .f64_opt(&key("rope.local_freq_base"))?
                .unwrap_or(DEFAULT_ROPE_BASE_LOCAL),
            rope_scale: g.f64_opt(&key("rope.scaling.factor"))?.unwrap_or(1.0),
            // llama.cpp writes no query_pre_attn_scalar: it uses the head size for every
            // released text model but the 27B (hidden / heads), as here.
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
        };
        let weights = |name: &str| g.tensor(name, device);
        let has = |name: &str| g.has_tensor(name);
        let decoder = Gemma3Decoder::new(hp, &weights, &has, device)?;
        Ok(Self { decoder, info })
    }
}

impl Gemma3Decoder {
    /// Builds the decoder from weights named as llama.cpp names them. Norm weights are
    /// llama.cpp's (`1 + w` already added).
    pub(crate) fn new(
        hp: Hparams,
        weights: &Weights,
        has: &dyn Fn(&str) -> bool,
        device: &Device,
    ) -> Result<Self> {
        let qmatmul =
            |name: &str| -> Result<QMatMul> { Ok(QMatMul::from_arc(Arc::new(weights(name)?))?) };
        let norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm::new(weights(name)?.dequantize(device)?, hp.eps))
        };
        let embed = Arc::new(weights("token_embd.weight")?);
        let output = if has("output.weight") {
            qmatmul("output.weight")?
        } else {
            QMatMul::from_arc(embed.clone())?
        };
        let mut layers = Vec::with_capacity(hp.blocks);
        for i in 0..hp.blocks {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                q: qmatmul(&p("attn_q"))?,
                k: qmatmul(&p("attn_k"))?,
                v: qmatmul(&p("attn_v"))?,
                o: qmatmul(&p("attn_output"))?,
                q_norm: norm(&p("attn_q_norm"))?,
                k_norm: norm(&p("attn_k_norm"))?,
                attn_norm: norm(&p("attn_norm"))?,
                post_attn_norm: norm(&p("post_attention_norm"))?,
                ffn_norm: norm(&p("ffn_norm"))?,
                post_ffn_norm: norm(&p("post_ffw_norm"))?,
                gate: qmatmul(&p("ffn_gate"))?,
                up: qmatmul(&p("ffn_up"))?,
                down: qmatmul(&p("ffn_down"))?,
                window: hp.local[i].then_some(hp.window),
                cache: KvCache::default(),
            });
        }
        // Linear RoPE scaling applies to the global layers only (llama.cpp and
        // transformers keep the local layers' frequency scale at 1).
        let position_scale = if hp.rope_scale > 0.0 {
            1.0 / hp.rope_scale
        } else {
            1.0
        };
        Ok(Self {
            embed,
            embed_scale: (hp.hidden as f64).sqrt(),
            norm: norm("output_norm.weight")?,
            output,
            rope_local: RopeTable::new(hp.head_dim, hp.rope_base_local as f32, 1.0, device)?,
            rope_global: RopeTable::new(
                hp.head_dim,
                hp.rope_base as f32,
                position_scale as f32,
                device,
            )?,
            layers,
            hp,
        })
    }

    pub(crate) fn forward(&mut self, input_ids: &Tensor, offset: usize) -> Result<Tensor> {
        let mut x = (self.embed.embedding(input_ids)? * self.embed_scale)?;
        for layer in &mut self.layers {
            let rope = if layer.window.is_some() {
                &mut self.rope_local
            } else {
                &mut self.rope_global
            };
            x = layer.forward(&x, offset, &self.hp, rope)?;
        }
        let x = self.norm.forward(&last_position(&x)?)?;
        last_position_logits(self.output.forward(&x)?)
    }

    pub(crate) fn reset(&mut self) {
        for layer in &mut self.layers {
            layer.cache.clear();
        }
    }
}

impl Layer {
    fn forward(
        &mut self,
        x: &Tensor,
        offset: usize,
        hp: &Hparams,
        rope: &mut RopeTable,
    ) -> Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let q = split_heads(&self.q.forward(&h)?, hp.heads, hp.head_dim)?;
        let k = split_heads(&self.k.forward(&h)?, hp.kv_heads, hp.head_dim)?;
        let v = split_heads(&self.v.forward(&h)?, hp.kv_heads, hp.head_dim)?;
        let q = rope.apply(&self.q_norm.forward(&q)?, offset)?;
        let k = rope.apply(&self.k_norm.forward(&k)?, offset)?;
        let (k, v) = self.cache.append(k, v.contiguous()?, offset)?;
        let mask = causal_mask(x.dim(1)?, offset, self.window, x.device())?;
        let a = attention(&q, &k, &v, mask.as_ref(), hp.attn_scale, None)?;
        let a = self
            .post_attn_norm
            .forward(&self.o.forward(&merge_heads(&a)?)?)?;
        let x = (x + a)?;
        let h = self.ffn_norm.forward(&x)?;
        // GELU (tanh approximation), not SiLU: see the file comment.
        let f = (self.gate.forward(&h)?.gelu()? * self.up.forward(&h)?)?;
        let f = self.post_ffn_norm.forward(&self.down.forward(&f)?)?;
        Ok((x + f)?)
    }
}

impl CausalLM for QuantizedGemma3 {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        self.decoder.forward(input_ids, seqlen_offset)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.decoder.reset();
        Ok(())
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.info.eos_token_ids
    }

    fn vocab_size(&self) -> usize {
        self.info.vocab_size
    }

    fn architecture(&self) -> &'static str {
        Self::ENTRY.name
    }

    fn context_length(&self) -> usize {
        self.info.context_length
    }

    fn device(&self) -> &Device {
        &self.info.device
    }
}
