//! An out-of-tree architecture: this crate registers `toy-bigram` with zoo's registry
//! without touching zoo's crates, and `zoo::load` finds it like any built-in one.
//!
//! A program that uses it only through the registry must still link it:
//! `use zoo_extra_arch as _;`.
//!
//! The model is a bigram table (`bigram.weight`, `[vocab, vocab]`): the logits of the
//! next token are the row of the last token. Its "KV cache" is the last token seen,
//! so a forward of one token continues from it, and a reset really forgets it.

use zoo::registry::Registered;
use zoo::{
    last_position_logits, register_model, CausalLM, Device, Error, Result, SafetensorsSource,
    Tensor,
};

/// A bigram language model (an example of an out-of-tree architecture).
#[register_model(
    name = "toy-bigram",
    format = safetensors,
    hf_architectures = ["ToyBigramForCausalLM"],
    load = ToyBigram::load,
)]
pub struct ToyBigram {
    table: Tensor,
    /// The last token of the sequence so far: the whole state this model keeps.
    last: Option<u32>,
    eos: Vec<u32>,
    context_length: usize,
    device: Device,
}

#[derive(serde::Deserialize)]
struct Config {
    vocab_size: usize,
    max_position_embeddings: usize,
    eos_token_id: u32,
}

impl ToyBigram {
    pub fn load(src: &SafetensorsSource, device: &Device) -> Result<Self> {
        let cfg: Config = src.parse_config(Self::ENTRY.name)?;
        let tensors = candle_core::safetensors::load(&src.weights[0], device)?;
        let table = tensors
            .get("bigram.weight")
            .cloned()
            .ok_or_else(|| Error::Config {
                path: src.weights[0].clone(),
                what: "toy-bigram checkpoint".into(),
                detail: "no tensor `bigram.weight`".into(),
                hint: "save the table as `bigram.weight`".into(),
            })?;
        if table.dims() != [cfg.vocab_size, cfg.vocab_size] {
            return Err(candle_core::Error::Msg(format!(
                "bigram.weight has shape {:?}, expected [{v}, {v}]",
                table.dims(),
                v = cfg.vocab_size
            ))
            .into());
        }
        Ok(Self {
            table,
            last: None,
            eos: vec![cfg.eos_token_id],
            context_length: cfg.max_position_embeddings,
            device: device.clone(),
        })
    }
}

impl CausalLM for ToyBigram {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        if seqlen_offset > 0 && self.last.is_none() {
            return Err(candle_core::Error::Msg(format!(
                "forward at offset {seqlen_offset} with an empty cache"
            ))
            .into());
        }
        let last_col = input_ids.dim(1)? - 1;
        let last = input_ids.narrow(1, last_col, 1)?.squeeze(1)?;
        self.last = last.to_vec1::<u32>()?.last().copied();
        last_position_logits(self.table.index_select(&last, 0)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        self.last = None;
        Ok(())
    }

    fn eos_token_ids(&self) -> &[u32] {
        &self.eos
    }

    fn vocab_size(&self) -> usize {
        self.table.dim(0).unwrap_or(0)
    }

    fn architecture(&self) -> &'static str {
        Self::ENTRY.name
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn device(&self) -> &Device {
        &self.device
    }
}
