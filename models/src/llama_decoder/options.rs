//! The facts an architecture's file states about itself on [`super::LlamaDecoder`]
//! ([`LlamaOptions`]), and the kinds they choose from.

use super::RopeLayout;
use crate::layers::AttnParams;

/// The facts of an architecture built on [`LlamaDecoder`], stated by its file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LlamaOptions {
    /// The GGUF form's q/k layout (llama.cpp's converter permutes some architectures into
    /// pairs).
    pub rope: RopeLayout,
    /// The safetensors form's: transformers' `rotate_half`, NeoX halves in all but a few
    /// architectures (Helium's interleaves).
    pub hf_rope: RopeLayout,
    /// Biases on the q, k and v projections (Qwen2).
    pub qkv_bias: bool,
    /// RMS norms of q and k before the rotation.
    pub qk_norm: QkNorm,
    /// Where each branch's norm sits.
    pub norms: Norms,
    /// The kind of every branch and output norm.
    pub norm: NormKind,
    /// Biases on the attention output (Starcoder2, Phi-2), on the MLP's matrices
    /// (Starcoder2, Phi-2) and on the output head (Phi-2).
    pub o_bias: bool,
    pub mlp_bias: bool,
    pub output_bias: bool,
    /// The MLP: SiLU-gated (Llama) or GELU (`ffn_up`, GELU, `ffn_down`: Starcoder2, Phi-2).
    pub mlp: Mlp,
    /// Learned absolute position embeddings added to the token embeddings
    /// (`position_embd`), and no rotation (GPT-BigCode).
    pub learned_positions: bool,
    /// Attention and MLP both read the attention's normed input and add to the residual
    /// together (Phi-2; StableLM where `use_parallel_residual` says so).
    pub parallel: bool,
    /// The `rope.freq_base` transformers' config class documents, for files without one.
    pub default_rope_base: f64,
    /// config.json's `embedding_multiplier`, `attention_multiplier`,
    /// `residual_multiplier` and `logits_scaling` (Granite), each 1 when omitted.
    pub multipliers: bool,
    /// q, k and v stored as one matrix (`attn_qkv`): Phi-3.
    pub fused_qkv: bool,
    /// gate and up stored as one matrix (`ffn_up`, gate rows first): Phi-3, GLM-4.
    pub fused_gate_up: bool,
    /// A shared expert beside the routed ones (Qwen2-MoE's `shared_expert`).
    pub shared_expert: bool,
    /// config.json's `no_rope_layers` (SmolLM3): the layers marked 0 rotate neither q
    /// nor k; without the list, every `no_rope_layer_interval`-th layer.
    pub nope_layers: bool,
    /// Layers without attention mix positions by a gated short convolution (LFM2): in a
    /// GGUF those whose `attention.head_count_kv` entry is 0; in a checkpoint those
    /// config.json's `layer_types` calls `conv`.
    pub short_conv: bool,
    /// llama.cpp's name of the final norm (LFM2's is `token_embd_norm`).
    pub output_norm: &'static str,
    /// Other defaults of transformers' config class that differ from Llama's, as JSON,
    /// for a config.json that omits the key (`("head_dim", "128")`).
    pub config_defaults: &'static [(&'static str, &'static str)],
}

impl LlamaOptions {
    /// Llama's facts, which a file built on this decoder states only where it differs:
    /// llama.cpp's `llama` converter permutes q/k into GPT-J pairs; no biases or q/k
    /// norms; transformers' LlamaConfig rope default.
    pub const LLAMA: LlamaOptions = LlamaOptions {
        rope: RopeLayout::Interleaved,
        hf_rope: RopeLayout::Halves,
        qkv_bias: false,
        qk_norm: QkNorm::Off,
        norms: Norms::Pre,
        norm: NormKind::Rms,
        o_bias: false,
        mlp_bias: false,
        output_bias: false,
        mlp: Mlp::SiluGated,
        parallel: false,
        learned_positions: false,
        default_rope_base: 10_000.0,
        multipliers: false,
        fused_qkv: false,
        fused_gate_up: false,
        shared_expert: false,
        nope_layers: false,
        short_conv: false,
        output_norm: "output_norm",
        config_defaults: &[],
    };

    /// GPT-2's block as Starcoder2 and GPT-BigCode keep it: LayerNorms with bias, biases
    /// on every projection, a GELU MLP.
    pub const GELU_BIASED: LlamaOptions = LlamaOptions {
        norm: NormKind::Layer,
        qkv_bias: true,
        o_bias: true,
        mlp_bias: true,
        mlp: Mlp::Gelu,
        ..LlamaOptions::LLAMA
    };

    /// Phi-2's layer, in both its forms: that block with attention and MLP in parallel
    /// and a bias on the output head.
    pub const PARALLEL_GELU: LlamaOptions = LlamaOptions {
        output_bias: true,
        parallel: true,
        ..LlamaOptions::GELU_BIASED
    };
}

/// The norm of an architecture's branches and output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NormKind {
    /// RMS norm with a weight (Llama), over `rms_norm_eps`.
    Rms,
    /// LayerNorm with weight and bias (Starcoder2, StableLM, Phi-2), over the config's
    /// `layer_norm_eps` / `norm_epsilon` or llama.cpp's `layer_norm_epsilon`.
    Layer,
    /// LayerNorm with neither (OLMo), over `rms_norm_eps` as the file defaults it.
    PlainLayer,
}

/// An architecture's dense MLP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mlp {
    /// `down(silu(gate(x)) * up(x))`.
    SiluGated,
    /// `down(gelu(up(x)))`, GELU's tanh form as the format's reference computes it.
    Gelu,
}

/// Where an architecture normalises q and k before the rotation, if it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QkNorm {
    Off,
    /// Each head's q and k over the head size (Qwen3).
    Heads,
    /// The whole q and k projections over all heads (OLMo 2).
    Projection,
}

/// Where an architecture puts each branch's RMS norm (llama.cpp's `attn_norm` and
/// `ffn_norm` before, `post_attention_norm` and `post_ffw_norm` after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Norms {
    /// On the branch's input (Llama).
    Pre,
    /// On the branch's output (OLMo 2).
    Post,
    /// On both (GLM-4's "sandwich").
    Sandwich,
}

/// Granite's multipliers: of the embedding, of q.k (in place of `1/sqrt(head_dim)`), of
/// each residual branch, and the divisor of the logits. [`Scales::NONE`] elsewhere.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Scales {
    pub embedding: f64,
    pub attention: Option<f64>,
    pub residual: f64,
    pub logits: f64,
}

impl Scales {
    pub const NONE: Scales = Scales {
        embedding: 1.0,
        attention: None,
        residual: 1.0,
        logits: 1.0,
    };

    pub(super) fn attention(&self, head_dim: usize) -> AttnParams {
        match self.attention {
            Some(s) => AttnParams::causal(s),
            None => AttnParams::for_head_dim(head_dim),
        }
    }
}
