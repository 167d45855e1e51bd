//! Mixtral from GGUF: llama.cpp writes it as `general.architecture = llama` with
//! `llama.expert_count` experts per layer, which is how this entry claims such a file
//! (the registry asks each entry that shares the `llama` string; see `detect`).
//!
//! Paper: "Mixtral of Experts" (Jiang et al., 2024). Reference implementation:
//! llama.cpp (`src/models/llama.cpp`, MoE branch) and transformers'
//! `modeling_mixtral.py`: softmax over the router logits, the top `expert_used_count`
//! experts, their weights renormalised to sum to one.
//!
//! Our own forward pass on candle's quantized matmul: candle-transformers 0.11.1's
//! `quantized_llama` only reads the old per-expert tensors (`blk.N.ffn_gate.E.weight`);
//! current llama.cpp stacks the experts (`blk.N.ffn_gate_exps.weight`, 3-D). Both
//! layouts load here (stacked experts are split into per-expert matrices at load, a
//! view of the same bytes).

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{QMatMul, QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use zoo_core::registry::Registered;
use zoo_core::source::GgufSource;
use zoo_core::{last_position_logits, CausalLM, Error, ModelInfo, ModelSource, Result};
use zoo_macros::register_model;

use crate::layers::{
    attention, causal_mask, last_position, merge_heads, split_heads, KvCache, RmsNorm, RopeTable,
};

/// Mixtral (GGUF, quantized weights, sparse mixture of experts).
#[register_model(
    name = "quantized-mixtral",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedMixtral::load,
    detect = is_mixtral,
)]
pub struct QuantizedMixtral {
    embed: Arc<QTensor>,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: QMatMul,
    rope: RopeTable,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
    experts_used: usize,
    info: ModelInfo,
}

struct Expert {
    gate: QMatMul,
    up: QMatMul,
    down: QMatMul,
}

struct Layer {
    attn_norm: RmsNorm,
    q: QMatMul,
    k: QMatMul,
    v: QMatMul,
    o: QMatMul,
    ffn_norm: RmsNorm,
    router: QMatMul,
    experts: Vec<Expert>,
    cache: KvCache,
}

/// A `llama` GGUF with experts (`llama.expert_count` > 0).
pub fn is_mixtral(source: &ModelSource) -> bool {
    source
        .as_gguf()
        .is_some_and(|g| g.u64_opt("llama.expert_count").ok().flatten().unwrap_or(0) > 0)
}

/// transformers' MixtralConfig default.
const DEFAULT_ROPE_BASE: f64 = 1_000_000.0;

/// Expert `e` of a stacked `[experts, rows, cols]` tensor, as its own 2-D tensor.
fn expert_slice(t: &QTensor, e: usize, device: &Device) -> Result<QTensor> {
    let (n, rows, cols) = t.shape().dims3()?;
    let data = t.data()?;
    let per = data.len() / n;
    let bytes = &data[e * per..(e + 1) * per];
    let storage = QStorage::from_data(Cow::Borrowed(bytes), device, t.dtype())?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

fn experts(g: &GgufSource, i: usize, n: usize, device: &Device) -> Result<Vec<Expert>> {
    let qm = |t: QTensor| -> Result<QMatMul> { Ok(QMatMul::from_arc(Arc::new(t))?) };
    if g.has_tensor(&format!("blk.{i}.ffn_gate_exps.weight")) {
        let stacked = |s: &str| g.tensor(&format!("blk.{i}.{s}.weight"), device);
        let (gate, up, down) = (
            stacked("ffn_gate_exps")?,
            stacked("ffn_up_exps")?,
            stacked("ffn_down_exps")?,
        );
        (0..n)
            .map(|e| {
                Ok(Expert {
                    gate: qm(expert_slice(&gate, e, device)?)?,
                    up: qm(expert_slice(&up, e, device)?)?,
                    down: qm(expert_slice(&down, e, device)?)?,
                })
            })
            .collect()
    } else {
        (0..n)
            .map(|e| {
                let t = |s: &str| g.tensor(&format!("blk.{i}.{s}.{e}.weight"), device);
                Ok(Expert {
                    gate: qm(t("ffn_gate")?)?,
                    up: qm(t("ffn_up")?)?,
                    down: qm(t("ffn_down")?)?,
                })
            })
            .collect()
    }
}

impl QuantizedMixtral {
    /// Loads the tensors and hyper-parameters from the GGUF file.
    pub fn load(source: &ModelSource, device: &Device) -> Result<Self> {
        let g = source.expect_gguf(Self::ENTRY.name)?;
        let info = ModelInfo::from_gguf(g, device)?;
        let n_experts = g.u64("llama.expert_count")? as usize;
        let experts_used = g.u64("llama.expert_used_count")? as usize;
        if experts_used == 0 || experts_used > n_experts {
            return Err(Error::InvalidGguf {
                path: g.path.clone(),
                detail: format!("llama.expert_used_count {experts_used} with {n_experts} experts"),
            });
        }
        let heads = g.u64("llama.attention.head_count")? as usize;
        let kv_heads = g
            .u64_opt("llama.attention.head_count_kv")?
            .map_or(heads, |h| h as usize);
        let hidden = g.u64("llama.embedding_length")? as usize;
        let head_dim = g
            .u64_opt("llama.attention.key_length")?
            .map_or(hidden / heads, |d| d as usize);
        let eps = g.f64("llama.attention.layer_norm_rms_epsilon")?;
        let base = g
            .f64_opt("llama.rope.freq_base")?
            .unwrap_or(DEFAULT_ROPE_BASE);
        let qm = |name: &str| -> Result<QMatMul> {
            Ok(QMatMul::from_arc(Arc::new(g.tensor(name, device)?))?)
        };
        let norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm::new(
                g.tensor(name, device)?.dequantize(device)?,
                eps,
            ))
        };
        let embed = Arc::new(g.tensor("token_embd.weight", device)?);
        let output = if g.has_tensor("output.weight") {
            qm("output.weight")?
        } else {
            QMatMul::from_arc(embed.clone())?
        };
        let blocks = g.u64("llama.block_count")? as usize;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            layers.push(Layer {
                attn_norm: norm(&p("attn_norm"))?,
                q: qm(&p("attn_q"))?,
                k: qm(&p("attn_k"))?,
                v: qm(&p("attn_v"))?,
                o: qm(&p("attn_output"))?,
                ffn_norm: norm(&p("ffn_norm"))?,
                router: qm(&p("ffn_gate_inp"))?,
                experts: experts(g, i, n_experts, device)?,
                cache: KvCache::default(),
            });
        }
        Ok(Self {
            embed,
            layers,
            norm: norm("output_norm.weight")?,
            output,
            rope: RopeTable::new(head_dim, base as f32, 1.0, device)?,
            heads,
            kv_heads,
            head_dim,
            experts_used,
            info,
        })
    }
}

impl Layer {
    /// The sparse feed-forward of `x` (`[tokens, hidden]`).
    fn moe(&self, x: &Tensor, k: usize) -> Result<Tensor> {
        let probs = candle_nn::ops::softmax_last_dim(&self.router.forward(x)?)?;
        let probs: Vec<Vec<f32>> = probs.to_dtype(DType::F32)?.to_vec2()?;
        // For each expert, the tokens routed to it and their renormalised weights.
        let mut routed: Vec<(Vec<u32>, Vec<f32>)> =
            vec![(Vec::new(), Vec::new()); self.experts.len()];
        for (t, p) in probs.iter().enumerate() {
            let mut order: Vec<usize> = (0..p.len()).collect();
            order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
            let top = &order[..k];
            let sum: f32 = top.iter().map(|&e| p[e]).sum();
            for &e in top {
                routed[e].0.push(t as u32);
                routed[e].1.push(p[e] / sum);
            }
        }
        let mut out = x.zeros_like()?;
        for (expert, (tokens, weights)) in self.experts.iter().zip(routed) {
            if tokens.is_empty() {
                continue;
            }
            let idx = Tensor::new(tokens.as_slice(), x.device())?;
            let xs = x.index_select(&idx, 0)?;
            let h =
                (candle_nn::ops::silu(&expert.gate.forward(&xs)?)? * expert.up.forward(&xs)?)?;
            let y = expert.down.forward(&h)?;
            let w = Tensor::new(weights.as_slice(), x.device())?.unsqueeze(D::Minus1)?;
            out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
        }
        Ok(out)
    }
}

impl CausalLM for QuantizedMixtral {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        let (h, kvh, hd) = (self.heads, self.kv_heads, self.head_dim);
        let (b, s) = input_ids.dims2()?;
        let mut x = self.embed.embedding(input_ids)?;
        let mask = causal_mask(s, seqlen_offset, None, x.device())?;
        for layer in &mut self.layers {
            let n = layer.attn_norm.forward(&x)?;
            let q = self
                .rope
                .apply_interleaved(&split_heads(&layer.q.forward(&n)?, h, hd)?, seqlen_offset)?;
            let k = self
                .rope
                .apply_interleaved(&split_heads(&layer.k.forward(&n)?, kvh, hd)?, seqlen_offset)?;
            let v = split_heads(&layer.v.forward(&n)?, kvh, hd)?;
            let (k, v) = layer.cache.append(k, v.contiguous()?, seqlen_offset)?;
            let a = attention(&q, &k, &v, mask.as_ref(), 1.0 / (hd as f64).sqrt(), None)?;
            x = (x + layer.o.forward(&merge_heads(&a)?)?)?;
            let n = layer.ffn_norm.forward(&x)?;
            let hidden = n.dim(2)?;
            let f = layer.moe(&n.reshape((b * s, hidden))?, self.experts_used)?;
            x = (x + f.reshape((b, s, hidden))?)?;
        }
        let x = self.norm.forward(&last_position(&x)?)?;
        last_position_logits(self.output.forward(&x)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        for layer in &mut self.layers {
            layer.cache.clear();
        }
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
