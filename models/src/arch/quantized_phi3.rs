//! Phi-3 from GGUF (`general.architecture = phi3`): Phi-3 and Phi-3.5 mini.
//!
//! Paper: "Phi-3 Technical Report" (Abdin et al., 2024). Reference implementation:
//! llama.cpp (`src/models/phi3.cpp`) and transformers' `modeling_phi3.py`. Built on zoo's
//! Llama decoder (`llama_decoder/`): Llama's computation with q/k/v stored as one matrix
//! and gate/up as another (split at load), NeoX halves. As in llama.cpp, the sliding
//! window some Phi-3 GGUFs declare is not applied (llama.cpp disables it for phi3: the
//! converted value is not the trained one). LongRoPE (the 128k variants'
//! `rope_factors_long`/`_short`, `rope.scaling.attn_factor`): as llama.cpp at the trained
//! context, the long factors when it passes `rope.scaling.original_context_length`.
//! candle-transformers 0.11.1's `quantized_phi3` ignores the GGUF's RoPE base, requires
//! an `output.weight` (tied models fail to load) and has no `clear_kv_cache`.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions, RopeLayout};

/// Phi-3 / Phi-3.5 mini (GGUF, quantized weights).
#[register_model(
    name = "quantized-phi3",
    format = gguf,
    gguf_architectures = ["phi3"],
    load = QuantizedPhi3::load,
    batching = true,
)]
pub struct QuantizedPhi3(Decoded<LlamaDecoder>);

/// Fused matrices, NeoX halves (llama.cpp's phi3 graph); Phi3Config's rope default.
const OPTIONS: LlamaOptions = LlamaOptions {
    rope: RopeLayout::Halves,
    fused_qkv: true,
    fused_gate_up: true,
    ..LlamaOptions::LLAMA
};

llama_gguf_load!(QuantizedPhi3, OPTIONS);
