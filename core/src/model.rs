//! The one model interface every architecture implements.

use candle_core::{DType, Device, IndexOp, Tensor};

use crate::{BatchedLM, Result};

/// A causal language model with its own KV cache.
///
/// Every method but [`CausalLM::batched`] is mandatory: there is no default that
/// silently does nothing. `batched`'s default says "this model does not batch", which
/// the engine honours by running it one sequence at a time; the registry attribute's
/// `batching` states the same fact and the conformance suite checks that they agree.
/// `zoo-macros` derives the `Model` enum that delegates to these methods, and the
/// conformance suite checks every implementation (shapes, cache consistency, reset).
#[diagnostic::on_unimplemented(
    message = "`{Self}` does not implement `CausalLM`",
    label = "a model type must implement zoo::CausalLM",
    note = "implement every method of CausalLM for `{Self}`: forward, reset_cache, eos_token_ids, vocab_size, architecture, context_length, device"
)]
pub trait CausalLM: Send {
    /// Runs `input_ids` (`[batch, seq]`, u32) placed at positions
    /// `seqlen_offset..seqlen_offset + seq` and returns the logits of the last
    /// position as f32 `[batch, vocab]`. The KV cache is extended by `seq` positions.
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor>;

    /// Empties the KV cache for real: the next forward at offset 0 sees nothing of
    /// earlier calls.
    fn reset_cache(&mut self) -> Result<()>;

    /// The token ids that end generation (several models have more than one).
    fn eos_token_ids(&self) -> &[u32];

    /// The number of logits `forward` returns per row.
    fn vocab_size(&self) -> usize;

    /// The registry name of the architecture, e.g. `llama`.
    fn architecture(&self) -> &'static str;

    /// The most positions the model attends to (prompt plus generated tokens).
    fn context_length(&self) -> usize;

    /// The device the weights live on.
    fn device(&self) -> &Device;

    /// The batched forward over KV blocks, for a model that has one.
    fn batched(&mut self) -> Option<&mut dyn BatchedLM> {
        None
    }
}

impl<M: CausalLM + ?Sized> CausalLM for Box<M> {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        (**self).forward(input_ids, seqlen_offset)
    }
    fn reset_cache(&mut self) -> Result<()> {
        (**self).reset_cache()
    }
    fn eos_token_ids(&self) -> &[u32] {
        (**self).eos_token_ids()
    }
    fn vocab_size(&self) -> usize {
        (**self).vocab_size()
    }
    fn architecture(&self) -> &'static str {
        (**self).architecture()
    }
    fn context_length(&self) -> usize {
        (**self).context_length()
    }
    fn device(&self) -> &Device {
        (**self).device()
    }
    fn batched(&mut self) -> Option<&mut dyn BatchedLM> {
        (**self).batched()
    }
}

/// The forward pass, KV cache and facts of a model, which a registered newtype wraps:
/// `#[register_model(...)] pub struct Helium(CandleLm<helium::Model>);` gets its
/// [`CausalLM`] impl from the body (the attribute writes it, through
/// [`delegate_causal_lm!`]), and only its architecture name from its own
/// registry entry. Shared adapters (zoo's decoders, candle-transformers wrappers)
/// implement it once for every architecture built on them.
pub trait ModelBody: Send {
    /// As [`CausalLM::forward`].
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor>;
    /// As [`CausalLM::reset_cache`].
    fn reset_cache(&mut self) -> Result<()>;
    /// The facts read at load.
    fn info(&self) -> &ModelInfo;
    /// As [`CausalLM::batched`].
    fn batched(&mut self) -> Option<&mut dyn BatchedLM>;
}

/// Implements [`CausalLM`] for a registered one-field tuple struct whose field is a
/// [`ModelBody`]: every method delegates to the body, `architecture` is the type's
/// registry name. `#[register_model]` invokes it for every such newtype, so an
/// architecture file does not:
///
/// ```text
/// #[register_model(name = "helium", format = safetensors, ..., load = Helium::load)]
/// pub struct Helium(CandleLm<helium::Model>);
/// ```
#[macro_export]
macro_rules! delegate_causal_lm {
    ($ty:ty) => {
        impl $crate::CausalLM for $ty {
            fn forward(
                &mut self,
                input_ids: &$crate::Tensor,
                seqlen_offset: usize,
            ) -> $crate::Result<$crate::Tensor> {
                $crate::ModelBody::forward(&mut self.0, input_ids, seqlen_offset)
            }

            fn reset_cache(&mut self) -> $crate::Result<()> {
                $crate::ModelBody::reset_cache(&mut self.0)
            }

            fn eos_token_ids(&self) -> &[u32] {
                &$crate::ModelBody::info(&self.0).eos_token_ids
            }

            fn vocab_size(&self) -> usize {
                $crate::ModelBody::info(&self.0).vocab_size
            }

            fn architecture(&self) -> &'static str {
                <Self as $crate::registry::Registered>::ENTRY.name
            }

            fn context_length(&self) -> usize {
                $crate::ModelBody::info(&self.0).context_length
            }

            fn device(&self) -> &$crate::Device {
                &$crate::ModelBody::info(&self.0).device
            }

            fn batched(&mut self) -> ::core::option::Option<&mut dyn $crate::BatchedLM> {
                $crate::ModelBody::batched(&mut self.0)
            }
        }
    };
}

/// Normalises what candle's models return into the `[batch, vocab]` f32 logits of
/// the last position: accepts `[batch, vocab]`, `[batch, seq, vocab]` and any float dtype.
pub fn last_position_logits(logits: Tensor) -> Result<Tensor> {
    let logits = match logits.rank() {
        2 => logits,
        3 => {
            let seq = logits.dim(1)?;
            logits.i((.., seq - 1, ..))?
        }
        r => {
            return Err(candle_core::Error::Msg(format!(
                "a model returned logits of rank {r} (shape {:?}); expected [batch, vocab] or [batch, seq, vocab]",
                logits.shape()
            ))
            .into())
        }
    };
    let logits = if logits.dtype() == DType::F32 {
        logits
    } else {
        logits.to_dtype(DType::F32)?
    };
    Ok(logits.contiguous()?)
}

/// The facts every [`CausalLM`] reports besides its forward pass, read once at load.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Every token id that ends generation.
    pub eos_token_ids: Vec<u32>,
    pub vocab_size: usize,
    pub context_length: usize,
    pub device: candle_core::Device,
}

impl ModelInfo {
    /// From a GGUF's `tokenizer.ggml.*` and `<arch>.context_length` metadata.
    pub fn from_gguf(g: &crate::source::GgufSource, device: &candle_core::Device) -> Result<Self> {
        Ok(Self {
            eos_token_ids: g.eos_token_ids()?,
            vocab_size: g.vocab_size()?,
            context_length: g.context_length()?,
            device: device.clone(),
        })
    }
}

/// Writes the five [`CausalLM`] methods that report facts (`eos_token_ids`,
/// `vocab_size`, `architecture`, `context_length`, `device`) from a [`ModelInfo`] field
/// and the type's registry entry, inside an `impl CausalLM` block:
///
/// ```text
/// impl CausalLM for MyModel {
///     fn forward(&mut self, ids: &Tensor, offset: usize) -> Result<Tensor> { ... }
///     fn reset_cache(&mut self) -> Result<()> { ... }
///     zoo::causal_lm_info!(info);
/// }
/// ```
///
/// The trait keeps every method mandatory; this only saves writing the same five
/// lines in every architecture file. `forward` and `reset_cache` are always written
/// by hand.
#[macro_export]
macro_rules! causal_lm_info {
    ($field:ident) => {
        fn eos_token_ids(&self) -> &[u32] {
            &self.$field.eos_token_ids
        }

        fn vocab_size(&self) -> usize {
            self.$field.vocab_size
        }

        fn architecture(&self) -> &'static str {
            <Self as $crate::registry::Registered>::ENTRY.name
        }

        fn context_length(&self) -> usize {
            self.$field.context_length
        }

        fn device(&self) -> &$crate::Device {
            &self.$field.device
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_position_of_rank3_is_taken_and_cast() {
        let t = Tensor::arange(0f32, 12., &Device::Cpu)
            .unwrap()
            .reshape((1, 3, 4))
            .unwrap()
            .to_dtype(DType::BF16)
            .unwrap();
        let l = last_position_logits(t).unwrap();
        assert_eq!(l.dims(), &[1, 4]);
        assert_eq!(l.dtype(), DType::F32);
        assert_eq!(l.to_vec2::<f32>().unwrap(), vec![vec![8., 9., 10., 11.]]);
    }

    #[test]
    fn rank1_is_an_error() {
        let t = Tensor::zeros(4, DType::F32, &Device::Cpu).unwrap();
        assert!(last_position_logits(t).is_err());
    }
}
