//! Layers shared by the architecture files that build their own forward pass (where
//! candle-transformers' is wrong or missing something), one job per file:
//!
//! - `rope.rs`: one rotary table per base frequency, sized to what is used and grown on
//!   demand;
//! - `attention.rs`: causal masks with an optional sliding window, a KV cache that a
//!   reset really empties and that attends in place, grouped-query attention;
//! - `qlinear.rs`: [`QLinear`], the one quantized projection (zoo's kernels in
//!   [`crate::qkernels`], candle's, or an f32 product for prompts);
//! - `activation.rs`: GELU as transformers or as llama.cpp's CPU backend computes it
//!   ([`Gelu`]), and the fused, threaded `gelu(gate) * up`;
//! - `half.rs`: products with bf16/f16 weights kept as stored;
//! - `norm.rs`: RMS norm;
//! - `heads.rs`: hidden states split into heads and back;
//! - `paged.rs`: the KV cache as blocks shared by the sequences of a batched step;
//! - `split.rs`: whether a batched step runs whole or as groups of sequences, one per
//!   thread;
//! - `group_attn.rs`: the arithmetic of one attention unit (a KV group's heads at one
//!   position), which both caches run;
//!
//! Everything is re-exported here: the layers are used as `crate::layers::X`.

mod activation;
mod attention;
mod attn_math;
mod group_attn;
mod half;
mod heads;
mod norm;
mod paged;
mod qlinear;
mod rope;
pub mod split;

pub use activation::{gelu, gelu_mul, silu_mul, silu_mul_halves, Gelu};
pub use attention::{attention, causal_mask, AttnParams, KvCache};
pub use half::Half;
pub use heads::{last_position, merge_heads, split_heads, split_qkv};
pub use norm::{Norm, RmsNorm};
pub(crate) use paged::{host, zeroed};
pub use paged::{PagedKv, StepLayout};
pub use qlinear::{QLinear, PROMPT_GEMM_ROWS};
pub use rope::{RopeAt, RopeLayout, RopeTable, Yarn};

/// The largest absolute value of `t`.
#[cfg(test)]
fn max_abs(t: &candle_core::Tensor) -> f32 {
    t.abs().unwrap().max_all().unwrap().to_scalar().unwrap()
}
