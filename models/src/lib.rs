//! zoo-models: one file per architecture and per quantized form, each registered by
//! its `#[register_model(...)]` attribute and nothing else.
//!
//! The files live in `src/arch/`; `src/arch.rs`, which declares them and derives the
//! [`Model`] enum, is written by `cargo xtask codegen`.
//!
//! A program that loads models through the registry (`zoo::load`) must link this
//! crate; the `zoo` facade does.

// Generated code names the runtime `::zoo`; inside zoo's own crates that is zoo-core.
extern crate zoo_core as zoo;

pub mod adapters;
pub mod arch;
pub(crate) mod detect;
pub(crate) mod gemma_decoder;
pub mod layers;
pub(crate) mod llama_decoder;
mod par;
pub mod qkernels;

pub use arch::{Arch, Model};
