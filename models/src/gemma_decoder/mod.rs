//! The Gemma decoder (Gemma 1, 2 and 3 text models), shared by their GGUF and
//! safetensors files, on candle's quantized matmul (f32 weights are wrapped as f32
//! `QTensor`s).
//!
//! One implementation instead of candle-transformers 0.11.1's five, which between them
//! use SiLU where Gemma uses GELU (`quantized_gemma3`, candle issue 3745), lack
//! `clear_kv_cache`, mask the sliding window with one key too many or not at all during
//! decode, and build 131,072-position rotary tables per layer with an f32 copy of the
//! 262k-token embedding. Here: GELU (tanh approximation); a KV cache that a reset
//! empties; the window as transformers and llama.cpp define it (`i - j < w`); two rotary
//! tables (local and global base) shared by all layers and grown with the positions
//! used; the embedding kept quantized (rows dequantized on lookup, reused as the tied
//! output).
//!
//! What differs between the generations is data ([`Hparams`] and which weights exist):
//! Gemma 2 adds post-norms, attention and final logit soft-capping and local layers;
//! Gemma 3 replaces soft-capping with q/k norms.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Module, Tensor};
use zoo_core::{last_position_logits, BatchedLM, KvShape, Result, SeqChunk};

mod load;

pub(crate) use load::GemmaConfigDefaults;

use crate::adapters::{Decoded, Decoder};
use crate::layers::split::{self, StepCost};
use crate::layers::{
    last_position, merge_heads, split_heads, AttnParams, KvCache, PagedKv, QLinear, RmsNorm,
    RopeAt, RopeTable, StepLayout,
};

/// A weight by its llama.cpp name (`blk.0.attn_q.weight`), still quantized or as f32.
pub(crate) type Weights<'a> = dyn Fn(&str) -> Result<QTensor> + 'a;

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
    /// Gemma 2: `tanh(x / cap) * cap` on attention scores and on the final logits.
    pub attn_softcap: Option<f64>,
    pub final_softcap: Option<f64>,
    /// The GELU of the feed-forward: as the format's reference computes it (llama.cpp's
    /// f16 table for GGUF, transformers' tanh form for safetensors).
    pub gelu: crate::layers::Gelu,
}

/// What a Gemma generation's GGUF files leave to the architecture: stated by the
/// generation's file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GemmaDefaults {
    /// Every `pattern`-th layer is global, the others local (see [`local_layers`]); 1:
    /// no local layers.
    pub sliding_window_pattern: usize,
    /// transformers' documented `rope_theta` (global layers) and local base.
    pub rope_base: f64,
    pub rope_base_local: f64,
}

/// llama.cpp's rule for which layers are local: `il % pattern < pattern - 1` (Gemma 2:
/// pattern 2, even layers; Gemma 3: pattern 6, five local then one global).
pub(crate) fn local_layers(blocks: usize, pattern: usize) -> Vec<bool> {
    (0..blocks)
        .map(|i| pattern > 1 && i % pattern < pattern - 1)
        .collect()
}

pub(crate) struct GemmaDecoder {
    embed: Arc<QTensor>,
    embed_scale: f64,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QLinear,
    rope_local: RopeTable,
    rope_global: RopeTable,
    hp: Hparams,
    /// Rows of the output projection.
    vocab: usize,
}

struct Layer {
    q: QLinear,
    k: QLinear,
    v: QLinear,
    o: QLinear,
    /// Gemma 3 only.
    q_norm: Option<RmsNorm>,
    k_norm: Option<RmsNorm>,
    attn_norm: RmsNorm,
    /// Gemma 2 and 3.
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    post_ffn_norm: Option<RmsNorm>,
    gate: QLinear,
    up: QLinear,
    down: QLinear,
    /// `Some(window)` for local (sliding-window) layers, `None` for global ones.
    window: Option<usize>,
    cache: KvCache,
    /// The batched forward's share of the KV block store.
    paged: PagedKv,
}

fn apply(norm: &Option<RmsNorm>, x: Tensor) -> Result<Tensor> {
    Ok(match norm {
        Some(n) => n.forward(&x)?,
        None => x,
    })
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
        let q = rope.apply(&apply(&self.q_norm, q)?, offset)?;
        let k = rope.apply(&apply(&self.k_norm, k)?, offset)?;
        let params = AttnParams {
            scale: hp.attn_scale,
            softcap: hp.attn_softcap,
            window: self.window,
        };
        let a = self.cache.attend(&q, &k, &v, offset, &params)?;
        let a = apply(&self.post_attn_norm, self.o.forward(&merge_heads(&a)?)?)?;
        let x = (x + a)?;
        let h = self.ffn_norm.forward(&x)?;
        // GELU (tanh approximation), as transformers' gelu_pytorch_tanh or llama.cpp.
        let f = crate::layers::gelu_mul(&self.gate.forward(&h)?, &self.up.forward(&h)?, hp.gelu)?;
        let f = apply(&self.post_ffn_norm, self.down.forward(&f)?)?;
        Ok((x + f)?)
    }
}

impl Layer {
    /// [`Layer::forward`] for a batched step (or one group of it): every product row
    /// by row ([`QLinear::forward_rows`]), rotations at each token's position (`rope`,
    /// the rows of this layer's table), attention over each sequence's blocks.
    ///
    /// # Safety
    ///
    /// As [`PagedKv::attend_shared`]: no other thread writes a block these chunks
    /// read, nor touches a block they write.
    unsafe fn forward_rows(
        &self,
        x: &Tensor,
        layout: &StepLayout,
        hp: &Hparams,
        rope: &RopeAt,
    ) -> Result<Tensor> {
        let h = self.attn_norm.forward(x)?;
        let q = split_heads(&self.q.forward_rows(&h)?, hp.heads, hp.head_dim)?;
        let k = split_heads(&self.k.forward_rows(&h)?, hp.kv_heads, hp.head_dim)?;
        let v = split_heads(&self.v.forward_rows(&h)?, hp.kv_heads, hp.head_dim)?;
        let q = rope.apply(&apply(&self.q_norm, q)?)?;
        let k = rope.apply(&apply(&self.k_norm, k)?)?;
        let params = AttnParams {
            scale: hp.attn_scale,
            softcap: hp.attn_softcap,
            window: self.window,
        };
        // SAFETY: the caller's contract.
        let a = unsafe { self.paged.attend_shared(layout, &q, &k, &v, &params)? };
        let a = apply(
            &self.post_attn_norm,
            self.o.forward_rows(&merge_heads(&a)?)?,
        )?;
        let x = (x + a)?;
        let h = self.ffn_norm.forward(&x)?;
        let f = crate::layers::gelu_mul(
            &self.gate.forward_rows(&h)?,
            &self.up.forward_rows(&h)?,
            hp.gelu,
        )?;
        let f = apply(&self.post_ffn_norm, self.down.forward_rows(&f)?)?;
        Ok((x + f)?)
    }
}

impl BatchedLM for GemmaDecoder {
    fn kv_shape(&self) -> KvShape {
        KvShape {
            layers: self.layers.len(),
            kv_heads: self.hp.kv_heads,
            head_dim: self.hp.head_dim,
            other_values: 0,
            bytes_per_value: 4,
        }
    }

    fn allocate_kv(&mut self, blocks: usize, block_size: usize) -> Result<()> {
        for layer in &mut self.layers {
            layer.paged = PagedKv::default(); // the old store goes before the new comes
            layer.paged = PagedKv::new(blocks, block_size, self.hp.kv_heads, self.hp.head_dim)?;
        }
        Ok(())
    }

    /// Whole, or as groups of sequences side by side ([`split::plan`]), as the Llama
    /// decoder's batched forward.
    fn forward_batch(&mut self, chunks: &[SeqChunk<'_>]) -> Result<Vec<Tensor>> {
        let block_size = self.layers.first().map_or(0, |l| l.paged.block_size());
        let groups = split::groups(chunks, &self.step_cost(), block_size);
        // Each group's rows of both rotary tables.
        let mut parts = Vec::with_capacity(groups.len());
        for g in groups {
            let layout = StepLayout::new(&chunks[g]);
            let local = self.rope_local.at(&layout.position)?;
            let global = self.rope_global.at(&layout.position)?;
            parts.push((layout, local, global));
        }
        let this = &*self;
        // SAFETY: one group while `&mut self` is held, or `split::plan`'s groups, which
        // touch none of each other's blocks.
        split::run(&parts, |(layout, local, global)| unsafe {
            this.step(layout, (local, global))
        })
    }
}

impl GemmaDecoder {
    /// What a step's rows and positions cost, for [`split::plan`].
    fn step_cost(&self) -> StepCost {
        let layer = |l: &Layer| {
            [&l.q, &l.k, &l.v, &l.o, &l.gate, &l.up, &l.down]
                .iter()
                .map(|p| p.values())
                .sum::<usize>()
        };
        let weights = self.layers.iter().map(layer).sum::<usize>() + self.output.values();
        let hp = &self.hp;
        StepCost::new(weights, (self.layers.len(), hp.heads, hp.head_dim))
    }

    /// The batched forward of one group of a step (`layout`'s chunks; the rows of the
    /// local and the global rotary table at their positions).
    ///
    /// # Safety
    ///
    /// As [`PagedKv::attend_shared`].
    unsafe fn step(
        &self,
        layout: &StepLayout,
        (local, global): (&RopeAt, &RopeAt),
    ) -> Result<Vec<Tensor>> {
        let chunks = layout.chunks;
        let device = self.embed.device().clone();
        if layout.position.is_empty() {
            let empty = Tensor::zeros((0, self.vocab), DType::F32, &device)?;
            return Ok(chunks.iter().map(|_| empty.clone()).collect());
        }
        let ids = Tensor::new(layout.tokens().as_slice(), &device)?.unsqueeze(0)?;
        let mut x = (self.embed.embedding(&ids)? * self.embed_scale)?;
        for layer in &self.layers {
            let rope = if layer.window.is_some() {
                local
            } else {
                global
            };
            // SAFETY: the caller's contract.
            x = unsafe { layer.forward_rows(&x, layout, &self.hp, rope)? };
        }
        let rows = layout.logit_rows();
        let logits = if rows.is_empty() {
            Tensor::zeros((0, self.vocab), DType::F32, &device)?
        } else {
            let idx = Tensor::new(rows.as_slice(), &device)?;
            let x = self.norm.forward(&x.squeeze(0)?.index_select(&idx, 0)?)?;
            let mut logits = self.output.forward_rows(&x)?;
            if let Some(cap) = self.hp.final_softcap {
                logits = ((logits / cap)?.tanh()? * cap)?;
            }
            logits.to_dtype(DType::F32)?
        };
        crate::llama_decoder::split_logits(chunks, &logits)
    }
}

impl GemmaDecoder {
    /// Builds the decoder from weights named as llama.cpp names them; `has` tells which
    /// exist. Norm weights are llama.cpp's (`1 + w` already added).
    pub(crate) fn new(
        hp: Hparams,
        weights: &Weights,
        has: &dyn Fn(&str) -> bool,
        device: &Device,
    ) -> Result<Self> {
        let qmatmul =
            |name: &str| -> Result<QLinear> { Ok(QLinear::new(Arc::new(weights(name)?))?) };
        let norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm::new(weights(name)?.dequantize(device)?, hp.eps))
        };
        let opt_norm = |name: &str| -> Result<Option<RmsNorm>> {
            if has(name) {
                norm(name).map(Some)
            } else {
                Ok(None)
            }
        };
        let embed = Arc::new(weights("token_embd.weight")?);
        let output = if has("output.weight") {
            qmatmul("output.weight")?
        } else {
            QLinear::new(embed.clone())?
        };
        let vocab = embed.shape().dims()[0];
        let mut layers = Vec::with_capacity(hp.blocks);
        for i in 0..hp.blocks {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                q: qmatmul(&p("attn_q"))?,
                k: qmatmul(&p("attn_k"))?,
                v: qmatmul(&p("attn_v"))?,
                o: qmatmul(&p("attn_output"))?,
                q_norm: opt_norm(&p("attn_q_norm"))?,
                k_norm: opt_norm(&p("attn_k_norm"))?,
                attn_norm: norm(&p("attn_norm"))?,
                post_attn_norm: opt_norm(&p("post_attention_norm"))?,
                ffn_norm: norm(&p("ffn_norm"))?,
                post_ffn_norm: opt_norm(&p("post_ffw_norm"))?,
                gate: qmatmul(&p("ffn_gate"))?,
                up: qmatmul(&p("ffn_up"))?,
                down: qmatmul(&p("ffn_down"))?,
                window: hp.local[i].then_some(hp.window),
                cache: KvCache::default(),
                paged: PagedKv::default(),
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
            vocab,
            layers,
            hp,
        })
    }
}

impl Decoder for GemmaDecoder {
    fn forward(&mut self, input_ids: &Tensor, offset: usize) -> Result<Tensor> {
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
        let mut logits = self.output.forward(&x)?;
        if let Some(cap) = self.hp.final_softcap {
            logits = ((logits / cap)?.tanh()? * cap)?;
        }
        last_position_logits(logits)
    }

    fn reset(&mut self) {
        for layer in &mut self.layers {
            layer.cache.clear();
        }
    }
}

/// The load function of a Gemma GGUF architecture with its generation's defaults:
/// `gemma_gguf_load!(QuantizedGemma3 { ..the fields of GemmaDefaults });`.
macro_rules! gemma_gguf_load {
    ($ty:ident { $($field:ident: $value:expr),* $(,)? }) => {
        $crate::gemma_decoder::gemma_gguf_load!(
            $ty,
            $crate::gemma_decoder::GemmaDefaults { $($field: $value),* }
        );
    };
    ($ty:ident, $defaults:expr) => {
        impl $ty {
            fn load(g: &zoo_core::GgufSource, device: &zoo_core::Device) -> zoo_core::Result<Self> {
                $crate::gemma_decoder::GemmaDecoder::load(g, &$defaults, device).map(Self)
            }
        }
    };
}
pub(crate) use gemma_gguf_load;

/// The load function of a Gemma safetensors architecture with its generation's
/// config.json defaults: `gemma_safetensors_load!(Gemma2 { ..the fields of
/// GemmaConfigDefaults });`.
macro_rules! gemma_safetensors_load {
    ($ty:ident { $($field:ident: $value:expr),* $(,)? }) => {
        $crate::gemma_decoder::gemma_safetensors_load!(
            $ty,
            $crate::gemma_decoder::GemmaConfigDefaults { $($field: $value),* }
        );
    };
    ($ty:ident, $defaults:expr) => {
        impl $ty {
            fn load(
                src: &zoo_core::SafetensorsSource,
                device: &zoo_core::Device,
            ) -> zoo_core::Result<Self> {
                let defaults: $crate::gemma_decoder::GemmaConfigDefaults = $defaults;
                let name = <Self as zoo_core::registry::Registered>::ENTRY.name;
                let info = src.model_info(name, defaults.default_context, device)?;
                let decoder = $crate::gemma_decoder::GemmaDecoder::from_safetensors(
                    src, &defaults, name, device,
                )?;
                Ok(Self($crate::adapters::Decoded { decoder, info }))
            }
        }
    };
}
pub(crate) use gemma_safetensors_load;
