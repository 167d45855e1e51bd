//! [`LlamaDecoder`] from a GGUF: its facts ([`LlamaHparams`]) from the metadata, its
//! tensors ([`TensorSource`]) by llama.cpp's names; `build.rs` makes the decoder (a
//! transformers checkpoint's side is `safetensors.rs`).

use candle_core::quantized::QTensor;
use candle_core::Device;
use zoo_core::source::GgufSource;
use zoo_core::{Error, Result};

use super::{LlamaDecoder, LlamaOptions, NormKind, Scales};
use crate::layers::{Gelu, Yarn};

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
    /// Whether each layer is a short convolution (empty: none is), and the
    /// convolution's length in positions.
    pub conv_layers: Vec<bool>,
    pub conv_len: usize,
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
    /// Attention and MLP in parallel (the option, or StableLM's config).
    pub parallel: bool,
    /// How a GELU MLP computes GELU: as the format's reference does.
    pub gelu: Gelu,
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
        let (kv_heads, conv_layers, conv_len) = match options.short_conv {
            true => short_conv_layers(g, &key)?,
            false => (
                g.u64_opt(&key("attention.head_count_kv"))?
                    .map_or(heads, |h| h as usize),
                Vec::new(),
                0,
            ),
        };
        let hidden = g.u64(&key("embedding_length"))? as usize;
        let head_dim = g
            .u64_opt(&key("attention.key_length"))?
            .map_or(hidden / heads, |d| d as usize);
        let eps = match options.norm {
            NormKind::Layer | NormKind::PlainLayer => {
                g.f64(&key("attention.layer_norm_epsilon"))?
            }
            _ => g.f64(&key("attention.layer_norm_rms_epsilon"))?,
        };
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
            conv_layers,
            conv_len,
            rotary: Vec::new(),
            moe_layers: Vec::new(),
            norm_topk: true,
            scales: Scales::NONE,
            long_rope,
            rotary_dims,
            scaling,
            parallel: options.parallel,
            gelu: Gelu::GgmlF16Table,
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
}

/// LFM2's layers: `attention.head_count_kv` per layer, 0 for a convolution; every
/// attention layer the same count (what the decoder keeps one of). Returns that count,
/// which layers are convolutions, and `shortconv.l_cache`.
fn short_conv_layers(
    g: &GgufSource,
    key: &dyn Fn(&str) -> String,
) -> Result<(usize, Vec<bool>, usize)> {
    let blocks = g.u64(&key("block_count"))? as usize;
    let name = key("attention.head_count_kv");
    let per_layer: Vec<u64> = match g.get(&name) {
        Some(v) if zoo_core::source::as_u64(v).is_some() => {
            vec![g.u64(&name)?; blocks]
        }
        Some(_) => g
            .array(&name)?
            .iter()
            .map(zoo_core::source::as_u64)
            .collect::<Option<_>>()
            .unwrap_or_default(),
        None => Vec::new(),
    };
    let refuse = |detail: String| Error::InvalidGguf {
        path: g.path.clone(),
        detail,
    };
    let attention: Vec<u64> = per_layer.iter().copied().filter(|&h| h > 0).collect();
    if per_layer.len() != blocks || attention.windows(2).any(|w| w[0] != w[1]) {
        return Err(refuse(format!(
            "{name} {per_layer:?}: expected {blocks} integers (one per layer, 0 for a convolution layer), the same for every attention layer"
        )));
    }
    let len = g.u64(&key("shortconv.l_cache"))? as usize;
    if !(1..=64).contains(&len) {
        return Err(refuse(format!(
            "{} {len}: expected a convolution length of 1 to 64 positions",
            key("shortconv.l_cache")
        )));
    }
    let kv_heads = attention.first().copied().unwrap_or(1) as usize;
    Ok((kv_heads, per_layer.iter().map(|&h| h == 0).collect(), len))
}
