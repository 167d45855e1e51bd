//! What an architecture file builds on, so that it states only what differs: its
//! attribute, its config quirks and why it exists.
//!
//! - [`CandleLm`]: a candle-transformers model with the usual shape
//!   (`new(&Config, VarBuilder)`, `forward(&ids, seqlen_offset)`, `clear_kv_cache()`)
//!   and its config read from config.json.
//! - [`Decoded`]: one of zoo's decoders (`llama_decoder`, `gemma_decoder`) with the
//!   facts read at load.
//!
//! Both are [`ModelBody`]s: the architecture's newtype gets its `CausalLM` impl from
//! the body (`#[register_model]` writes it).

mod candle;
mod decoded;

#[allow(unused_imports)] // the scaffold's (see `candle_load!`)
pub(crate) use candle::candle_load;
pub use candle::{
    refuse_rope_scaling, unsupported, window_one_key_narrower, CandleLm, ConfigQuirks,
};
pub use decoded::{stored_half, transformers_name, Decoded, Decoder};
