//! Mistral from GGUF: llama.cpp writes it as `general.architecture = llama`, the same
//! computation as Llama (its converter keeps no sliding window, and Mistral 7B v0.2
//! and later have none). This entry claims a dense `llama` file whose
//! `general.basename` or `general.name` says Mistral, so the registry reports what the
//! model is; plain Llama files fall back to `quantized-llama`.
//!
//! Paper: "Mistral 7B" (Jiang et al., 2023). Reference implementation: llama.cpp
//! (`src/models/llama.cpp`). Built on zoo's Llama decoder (`llama_decoder/`).

use zoo_core::GgufSource;
use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::detect;
use crate::llama_decoder::{llama_gguf_load, LlamaDecoder, LlamaOptions};

/// Mistral (GGUF, quantized weights).
#[register_model(
    name = "quantized-mistral",
    format = gguf,
    gguf_architectures = ["llama"],
    load = QuantizedMistral::load,
    batching = true,
    detect = is_mistral,
)]
pub struct QuantizedMistral(Decoded<LlamaDecoder>);

// As Llama (transformers' MistralConfig rope default is Llama's).
llama_gguf_load!(QuantizedMistral, LlamaOptions::LLAMA);

/// A dense `llama` GGUF (not one `quantized-mixtral` claims) named Mistral.
fn is_mistral(g: &GgufSource) -> bool {
    !detect::has_experts(g) && detect::named(g, "mistral")
}
