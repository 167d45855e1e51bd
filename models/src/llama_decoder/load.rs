//! Loading [`LlamaDecoder`]: its facts ([`LlamaHparams`]) and tensors ([`TensorSource`],
//! by llama.cpp's names) from a GGUF, and the one builder both formats go through
//! (a transformers checkpoint's side is `safetensors.rs`).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};
use zoo_core::source::GgufSource;
use zoo_core::{Error, Result};

use super::{
    expert_slice, qm, row_slice, Expert, Ffn, Layer, LlamaDecoder, LlamaOptions, Norms, QkNorm,
    Scales, Shared,
};
use crate::layers::{KvCache, Norm, PagedKv, QLinear, RmsNorm, RopeTable, Yarn};

/// The facts a Llama-like decoder is built from.
#[derive(Debug, Clone)]
pub(crate) struct LlamaHparams {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    pub eps: f64,
    pub rope_base: f64,
    pub blocks: usize,
    pub vocab: usize,
    /// Experts per layer (0: dense) and how many each token uses.
    pub experts: usize,
    pub used: usize,
    /// Whether each layer rotates q and k (empty: all do).
    pub rotary: Vec<bool>,
    /// With experts: whether each layer has them (empty: all do; the others a dense
    /// MLP), and whether the chosen experts' weights are renormalised to sum to one.
    pub moe_layers: Vec<bool>,
    pub norm_topk: bool,
    pub scales: Scales,
    /// LongRoPE: the frequency factors chosen for the context the model runs at, and
    /// the attention factor (cos and sin multiplied by it).
    pub long_rope: Option<(Vec<f32>, f32)>,
    /// The rotated features of each head (the head size, or fewer: partial rotary).
    pub rotary_dims: usize,
    /// YaRN or linear RoPE scaling.
    pub scaling: Option<RopeScaling>,
    /// q, k and v clamped to `[-c, c]` (OLMo's `clip_qkv`, llama.cpp's `clamp_kqv`).
    pub clip_qkv: Option<f64>,
}

/// RoPE scaling other than llama3's factors tensor and LongRoPE.
#[derive(Debug, Clone, Copy)]
pub(crate) enum RopeScaling {
    /// Every frequency divided by the factor.
    Linear(f64),
    Yarn(Yarn),
}

/// Where a decoder's tensors come from, named as llama.cpp names them
/// (`blk.{i}.attn_q.weight`, ...).
pub(crate) struct TensorSource<'a> {
    /// The tensor, on the given device.
    pub tensor: &'a dyn Fn(&str, &Device) -> Result<QTensor>,
    pub has: &'a dyn Fn(&str) -> bool,
    /// The error for a tensor the architecture's facts do not foresee, or of another
    /// shape than they say (the tensor, and what is wrong with it).
    pub invalid: &'a dyn Fn(&str, String) -> Error,
}

impl LlamaDecoder {
    /// Reads a GGUF whose keys are under its `general.architecture`, with the facts
    /// its architecture's file states; tensors the options do not expect, or missing
    /// ones they do, are errors.
    pub(crate) fn from_gguf(
        g: &GgufSource,
        options: &LlamaOptions,
        device: &Device,
    ) -> Result<Self> {
        let prefix = g.architecture().unwrap_or_default();
        let key = |s: &str| format!("{prefix}.{s}");
        let heads = g.u64(&key("attention.head_count"))? as usize;
        let kv_heads = g
            .u64_opt(&key("attention.head_count_kv"))?
            .map_or(heads, |h| h as usize);
        let hidden = g.u64(&key("embedding_length"))? as usize;
        let head_dim = g
            .u64_opt(&key("attention.key_length"))?
            .map_or(hidden / heads, |d| d as usize);
        let eps = g.f64(&key("attention.layer_norm_rms_epsilon"))?;
        let base = g
            .f64_opt(&key("rope.freq_base"))?
            .unwrap_or(options.default_rope_base);
        let refuse = |detail: String| Error::InvalidGguf {
            path: g.path.clone(),
            detail,
        };
        let value = g
            .u64_opt(&key("attention.value_length"))?
            .map_or(head_dim, |v| v as usize);
        // As llama.cpp: the rotated width defaults to the whole head.
        let rotary_dims = g
            .u64_opt(&key("rope.dimension_count"))?
            .map_or(head_dim, |d| d as usize);
        if value != head_dim
            || rotary_dims > head_dim
            || rotary_dims == 0
            || !rotary_dims.is_multiple_of(2)
        {
            return Err(refuse(format!(
                "key width {head_dim}, value width {value}, rotary width {rotary_dims}: expected equal key and value widths and an even rotary width up to the key width"
            )));
        }
        if g.has_tensor("blk.0.rope_factors_long.weight") {
            return Err(refuse("per-layer LongRoPE factors (`blk.N.rope_factors_long`) are not implemented; zoo reads the model-wide `rope_factors_long`".into()));
        }
        let long_rope = match g.has_tensor("rope_factors_long.weight") {
            false => None,
            true => {
                // As llama.cpp: the long factors when the context the model runs at
                // (zoo: the trained one) is past the original, else the short ones.
                let ctx = g.u64(&key("context_length"))?;
                let orig = g.u64(&key("rope.scaling.original_context_length"))?;
                let name = match ctx > orig {
                    true => "rope_factors_long.weight",
                    false => "rope_factors_short.weight",
                };
                let factors: Vec<f32> = g
                    .tensor(name, &Device::Cpu)?
                    .dequantize(&Device::Cpu)?
                    .flatten_all()?
                    .to_vec1()?;
                let m = g.f64_opt(&key("rope.scaling.attn_factor"))?.unwrap_or(1.0);
                Some((factors, m as f32))
            }
        };
        let scaling = match g.str_opt(&key("rope.scaling.type"))? {
            None | Some("none") => None,
            // LongRoPE's factors are tensors, read above.
            Some("longrope" | "su") if long_rope.is_some() => None,
            Some(_)
                if g.f64_opt(&key("rope.scaling.yarn_log_multiplier"))?
                    .is_some() =>
            {
                return Err(refuse("YaRN with `rope.scaling.yarn_log_multiplier` (DeepSeek's mscale) is not implemented on this decoder".into()));
            }
            Some(kind @ ("linear" | "yarn")) => {
                let factor = g.f64_opt(&key("rope.scaling.factor"))?.unwrap_or(1.0);
                if !(factor.is_finite() && factor >= 1.0) {
                    return Err(refuse(format!("{prefix}.rope.scaling.factor {factor}: expected a finite factor of at least 1")));
                }
                match kind {
                    "linear" => Some(RopeScaling::Linear(factor)),
                    _ => {
                        // As llama.cpp: the original context defaults to the trained
                        // one, the betas to 32 and 1, and the magnitude is
                        // 0.1 ln(factor) + 1 times the file's attention factor.
                        let original =
                            match g.u64_opt(&key("rope.scaling.original_context_length"))? {
                                Some(o) => o,
                                None => g.u64(&key("context_length"))?,
                            };
                        let m = g.f64_opt(&key("rope.scaling.attn_factor"))?.unwrap_or(1.0);
                        Some(RopeScaling::Yarn(Yarn {
                            factor,
                            original_context: original as f64,
                            beta_fast: 32.0,
                            beta_slow: 1.0,
                            base,
                            attention: Yarn::mscale(factor, 1.0) * m,
                        }))
                    }
                }
            }
            Some(other) => {
                return Err(refuse(format!("{prefix}.rope.scaling.type `{other}` is not implemented on this decoder (linear and yarn are)")));
            }
        };
        let n_experts = g.u64_opt(&key("expert_count"))?.unwrap_or(0) as usize;
        let used = g.u64_opt(&key("expert_used_count"))?.unwrap_or(0) as usize;
        if n_experts > 0 && (used == 0 || used > n_experts) {
            return Err(Error::InvalidGguf {
                path: g.path.clone(),
                detail: format!("{prefix}.expert_used_count {used} with {n_experts} experts"),
            });
        }
        let hp = LlamaHparams {
            heads,
            kv_heads,
            head_dim,
            eps,
            rope_base: base,
            blocks: g.u64(&key("block_count"))? as usize,
            vocab: g.vocab_size()?,
            experts: n_experts,
            used,
            rotary: Vec::new(),
            moe_layers: Vec::new(),
            norm_topk: true,
            scales: Scales::NONE,
            long_rope,
            rotary_dims,
            scaling,
            clip_qkv: match g.f64_opt(&key("attention.clamp_kqv"))? {
                Some(c) if !(c.is_finite() && c > 0.0) => {
                    return Err(refuse(format!(
                        "{prefix}.attention.clamp_kqv {c}: expected a positive bound"
                    )));
                }
                c => c,
            },
        };
        let invalid = |name: &str, what: String| {
            Error::InvalidGguf {
            path: g.path.clone(),
            detail: format!("tensor `{name}` {what}; the file may be of another architecture or broken (check `general.architecture` and the hyper-parameters)"),
        }
        };
        let src = TensorSource {
            tensor: &|name, device| g.tensor(name, device),
            has: &|name| g.has_tensor(name),
            invalid: &invalid,
        };
        Self::build(&hp, options, &src, device)
    }

    /// The decoder from its facts and tensors, whichever format they come from; tensors
    /// the options do not expect, or missing ones they do, are errors.
    pub(crate) fn build(
        hp: &LlamaHparams,
        options: &LlamaOptions,
        src: &TensorSource,
        device: &Device,
    ) -> Result<Self> {
        let LlamaHparams {
            heads,
            kv_heads,
            head_dim,
            eps,
            rope_base: base,
            experts: n_experts,
            used,
            ..
        } = *hp;
        let tensor = |name: &str| (src.tensor)(name, device);
        let dense = |name: &str| -> Result<Tensor> { Ok(tensor(name)?.dequantize(device)?) };
        let norm = |name: &str| -> Result<RmsNorm> { Ok(RmsNorm::new(dense(name)?, eps)) };
        // A tensor the architecture's facts do not foresee is an error, not ignored.
        let unexpected = |name: &str, fact: &str| {
            (src.invalid)(
                name,
                format!("present, but this architecture has no {fact}"),
            )
        };
        // So is a matrix of another shape than the hyper-parameters say (a config that
        // contradicts its checkpoint), before any forward meets it.
        let shaped = |name: &str, want: [usize; 2]| -> Result<QTensor> {
            let t = tensor(name)?;
            match t.shape().dims() {
                found if found == want => Ok(t),
                found => Err((src.invalid)(
                    name,
                    format!("has shape {found:?} where the hyper-parameters say {want:?}"),
                )),
            }
        };
        let embed = Arc::new(tensor("token_embd.weight")?);
        let hidden = embed.shape().dims().last().copied().unwrap_or(0);
        let linear = |name: &str, rows: usize| -> Result<QLinear> {
            let bias = format!("{name}.bias");
            let bias = match (options.qkv_bias, (src.has)(&bias)) {
                (true, _) => Some(dense(&bias)?),
                (false, true) => return Err(unexpected(&bias, "q/k/v biases")),
                (false, false) => None,
            };
            Ok(qm(shaped(&format!("{name}.weight"), [rows, hidden])?)?.with_bias(bias))
        };
        let qk_norm = |name: &str| -> Result<Option<RmsNorm>> {
            match (options.qk_norm, (src.has)(name)) {
                (QkNorm::Off, true) => Err(unexpected(name, "q/k norms")),
                (QkNorm::Off, false) => Ok(None),
                (_, _) => norm(name).map(Some),
            }
        };
        // Each branch's norms, by llama.cpp's names, where the architecture puts them
        // (transformers' names alias: Llama's `post_attention_layernorm` is the MLP's
        // pre-norm, OLMo 2's the attention's post-norm, so absence is not checked).
        let (pre, post) = match options.norms {
            Norms::Pre => (true, false),
            Norms::Post => (false, true),
            Norms::Sandwich => (true, true),
        };
        // The branch and output norms: RMS with their weights, or weightless LayerNorms.
        let branch_norm = |name: &str| -> Result<Norm> {
            match options.plain_layer_norm {
                true => {
                    if (src.has)(name) {
                        return Err(unexpected(name, "norm weights"));
                    }
                    Ok(Norm::plain(hidden, eps, device)?)
                }
                false => norm(name).map(Norm::Rms),
            }
        };
        let placed = |name: &str, on: bool| -> Result<Option<Norm>> {
            on.then(|| branch_norm(name)).transpose()
        };
        let output = match (src.has)("output.weight") {
            true => qm(tensor("output.weight")?)?,
            false => QLinear::new(embed.clone())?,
        };
        let mut rope = RopeTable::new(hp.rotary_dims, base as f32, 1.0, device)?;
        if (src.has)("rope_freqs.weight") {
            let f: Vec<f32> = dense("rope_freqs.weight")?
                .to_dtype(DType::F32)?
                .to_vec1()?;
            rope = rope.with_factors(&f)?;
        }
        if let Some((factors, m)) = &hp.long_rope {
            rope = rope.with_factors(factors)?.with_attention_factor(*m);
        }
        match hp.scaling {
            Some(RopeScaling::Linear(f)) => {
                rope = rope.with_factors(&vec![f as f32; hp.rotary_dims / 2])?
            }
            Some(RopeScaling::Yarn(y)) => rope = rope.with_yarn(&y),
            None => {}
        }
        let blocks = hp.blocks;
        let mut layers = Vec::with_capacity(blocks);
        for i in 0..blocks {
            let p = |s: &str| format!("blk.{i}.{s}");
            // A fused matrix is read into host memory and its parts sent to the device.
            let fused_parts = |name: &str, rows: &[usize]| -> Result<Vec<QLinear>> {
                let t = (src.tensor)(name, &Device::Cpu)?;
                let (total, at) = (rows.iter().sum::<usize>(), t.shape().dims());
                if at.first() != Some(&total) || at.get(1) != Some(&hidden) {
                    return Err((src.invalid)(
                        name,
                        format!(
                            "has shape {at:?} where the hyper-parameters say [{total}, {hidden}]"
                        ),
                    ));
                }
                let mut start = 0;
                rows.iter()
                    .map(|&r| {
                        start += r;
                        qm(row_slice(&t, start - r..start, device)?)
                    })
                    .collect()
            };
            let mlp = |stem: &str| -> Result<Expert> {
                if options.fused_gate_up && stem.is_empty() {
                    let down = tensor(&p("ffn_down.weight"))?;
                    let ff = down.shape().dims().last().copied().unwrap_or(0);
                    let name = p("ffn_up.weight");
                    let [gate, up]: [QLinear; 2] = fused_parts(&name, &[ff, ff])?
                        .try_into()
                        .map_err(|_| (src.invalid)(&name, "did not split in two".into()))?;
                    return Ok(Expert {
                        gate,
                        up,
                        down: qm(down)?,
                    });
                }
                Ok(Expert {
                    gate: qm(tensor(&p(&format!("ffn_gate{stem}.weight")))?)?,
                    up: qm(tensor(&p(&format!("ffn_up{stem}.weight")))?)?,
                    down: qm(tensor(&p(&format!("ffn_down{stem}.weight")))?)?,
                })
            };
            let shared = match (
                options.shared_expert,
                (src.has)(&p("ffn_gate_inp_shexp.weight")),
            ) {
                (true, _) => Some(Shared {
                    expert: mlp("_shexp")?,
                    gate: qm(tensor(&p("ffn_gate_inp_shexp.weight"))?)?,
                }),
                (false, true) => {
                    return Err(unexpected(&p("ffn_gate_inp_shexp.weight"), "shared expert"))
                }
                (false, false) => None,
            };
            let ffn = if n_experts == 0 || !hp.moe_layers.get(i).copied().unwrap_or(true) {
                Ffn::Dense(mlp("")?)
            } else {
                let experts = if (src.has)(&p("ffn_gate_exps.weight")) {
                    // The stacks are read into host memory and each expert's slice
                    // sent to the device from there.
                    let host = |name: &str| (src.tensor)(name, &Device::Cpu);
                    let (gate, up, down) = (
                        host(&p("ffn_gate_exps.weight"))?,
                        host(&p("ffn_up_exps.weight"))?,
                        host(&p("ffn_down_exps.weight"))?,
                    );
                    (0..n_experts)
                        .map(|e| {
                            Ok(Expert {
                                gate: qm(expert_slice(&gate, e, device)?)?,
                                up: qm(expert_slice(&up, e, device)?)?,
                                down: qm(expert_slice(&down, e, device)?)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                } else {
                    (0..n_experts)
                        .map(|e| {
                            Ok(Expert {
                                gate: qm(tensor(&p(&format!("ffn_gate.{e}.weight")))?)?,
                                up: qm(tensor(&p(&format!("ffn_up.{e}.weight")))?)?,
                                down: qm(tensor(&p(&format!("ffn_down.{e}.weight")))?)?,
                            })
                        })
                        .collect::<Result<Vec<_>>>()?
                };
                Ffn::Moe {
                    router: qm(tensor(&p("ffn_gate_inp.weight"))?)?,
                    experts,
                    used,
                    norm_topk: hp.norm_topk,
                    shared,
                }
            };
            let (q, k, v) = if options.fused_qkv {
                if (src.has)(&p("attn_qkv.bias")) {
                    return Err(unexpected(&p("attn_qkv.bias"), "q/k/v biases"));
                }
                let (qr, kr) = (heads * head_dim, kv_heads * head_dim);
                let name = p("attn_qkv.weight");
                let [q, k, v]: [QLinear; 3] = fused_parts(&name, &[qr, kr, kr])?
                    .try_into()
                    .map_err(|_| (src.invalid)(&name, "did not split in three".into()))?;
                (q, k, v)
            } else {
                (
                    linear(&p("attn_q"), heads * head_dim)?,
                    linear(&p("attn_k"), kv_heads * head_dim)?,
                    linear(&p("attn_v"), kv_heads * head_dim)?,
                )
            };
            layers.push(Layer {
                attn_norm: placed(&p("attn_norm.weight"), pre)?,
                post_attn_norm: placed(&p("post_attention_norm.weight"), post)?,
                ffn_norm: placed(&p("ffn_norm.weight"), pre)?,
                post_ffn_norm: placed(&p("post_ffw_norm.weight"), post)?,
                q,
                k,
                v,
                o: qm(shaped(
                    &p("attn_output.weight"),
                    [hidden, heads * head_dim],
                )?)?,
                q_norm: qk_norm(&p("attn_q_norm.weight"))?,
                k_norm: qk_norm(&p("attn_k_norm.weight"))?,
                qk_norm: options.qk_norm,
                clip_qkv: hp.clip_qkv,
                rotary: hp.rotary.get(i).copied().unwrap_or(true),
                ffn,
                cache: KvCache::default(),
                paged: PagedKv::default(),
            });
        }
        Ok(Self {
            embed,
            layers,
            norm: branch_norm("output_norm.weight")?,
            output,
            rope,
            rope_layout: options.rope,
            rotary_dims: hp.rotary_dims,
            scales: hp.scales,
            heads,
            kv_heads,
            head_dim,
            vocab: hp.vocab,
        })
    }
}
