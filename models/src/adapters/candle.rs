//! [`CandleLm`]: a candle-transformers model with the usual shape, loaded from a
//! safetensors checkpoint.

use candle_core::Tensor;
use candle_nn::VarBuilder;
use serde::de::DeserializeOwned;
use serde_json::Value;
use zoo_core::{last_position_logits, Device, ModelBody, ModelInfo, Result, SafetensorsSource};

/// What config.json needs before candle's `Config` reads it. Each field is a fact of
/// the architecture, set (with its reason) in the architecture's file.
#[derive(Clone, Copy, Default)]
pub struct ConfigQuirks {
    /// The `rope_theta` transformers' config class documents, when config.json may
    /// omit it; `None` makes a missing value an error.
    pub rope_theta: Option<f64>,
    /// The context length the architecture documents when config.json has no
    /// `max_position_embeddings`.
    pub context_length: Option<usize>,
    /// Edits of the (normalised) config.json, or a clear error for what candle's model
    /// cannot compute.
    pub fix: Option<fn(&SafetensorsSource, &mut Value) -> Result<()>>,
    /// candle's model masks config.json's `sliding_window` wrongly (or not at all) once a
    /// sequence is longer than it: such a sequence is refused with
    /// [`zoo_core::Error::PromptTooLong`] instead of computed wrongly. Read before `fix`.
    pub refuse_past_sliding_window: bool,
    /// candle's model applies config.json's RoPE scaling as transformers does
    /// (DeepSeek-V2's YaRN). candle's other models ignore it (or, Phi-3's LongRoPE,
    /// apply it otherwise), which is wrong at every position for YaRN
    /// and past the original context for the others: a config that asks for scaling is
    /// refused unless this is set.
    pub applies_rope_scaling: bool,
}

/// A candle-transformers model `M` with the facts read at load.
pub struct CandleLm<M> {
    model: M,
    info: ModelInfo,
    /// The positions candle's model computes correctly (see
    /// [`ConfigQuirks::refuse_past_sliding_window`]).
    max_positions: Option<usize>,
    forward: fn(&mut M, &Tensor, usize) -> candle_core::Result<Tensor>,
    reset: Reset<M>,
}

/// How a reset empties the KV cache.
enum Reset<M> {
    /// candle's `clear_kv_cache`.
    Clear(fn(&mut M)),
    /// candle's model has no way to empty its cache: it is built again from the
    /// config and the memory-mapped weights (no weights are read again).
    Rebuild(Box<dyn Fn() -> candle_core::Result<M> + Send>),
}

impl<M: Send> CandleLm<M> {
    /// Reads config.json (normalised for transformers 4.x and 5.x, then `quirks`), maps
    /// the weights and builds the model with candle's `new`; `forward` and `clear` are
    /// the model's own methods (`Model::forward`, `Model::clear_kv_cache`).
    pub fn load<C: DeserializeOwned>(
        arch: &str,
        src: &SafetensorsSource,
        device: &Device,
        quirks: ConfigQuirks,
        new: fn(&C, VarBuilder) -> candle_core::Result<M>,
        forward: fn(&mut M, &Tensor, usize) -> candle_core::Result<Tensor>,
        clear: fn(&mut M),
    ) -> Result<Self> {
        let (info, max_positions, config, vb) = read::<C>(arch, src, device, quirks)?;
        Ok(Self {
            model: new(&config, vb)?,
            info,
            max_positions,
            forward,
            reset: Reset::Clear(clear),
        })
    }

    /// As [`CandleLm::load`], for a candle model without `clear_kv_cache`: a reset
    /// builds it again from the config and the mapped weights.
    pub fn load_rebuilt_on_reset<C: DeserializeOwned + Send + 'static>(
        arch: &str,
        src: &SafetensorsSource,
        device: &Device,
        quirks: ConfigQuirks,
        new: fn(&C, VarBuilder) -> candle_core::Result<M>,
        forward: fn(&mut M, &Tensor, usize) -> candle_core::Result<Tensor>,
    ) -> Result<Self>
    where
        M: 'static,
    {
        let (info, max_positions, config, vb) = read::<C>(arch, src, device, quirks)?;
        Ok(Self {
            model: new(&config, vb.clone())?,
            info,
            max_positions,
            forward,
            reset: Reset::Rebuild(Box::new(move || new(&config, vb.clone()))),
        })
    }
}

/// The facts, the sliding-window limit, candle's config and the mapped weights.
fn read<C: DeserializeOwned>(
    arch: &str,
    src: &SafetensorsSource,
    device: &Device,
    quirks: ConfigQuirks,
) -> Result<(ModelInfo, Option<usize>, C, VarBuilder<'static>)> {
    let info = src.model_info(arch, quirks.context_length, device)?;
    if !quirks.applies_rope_scaling {
        refuse_rope_scaling(src, arch)?;
    }
    let mut config = src.normalised_config(quirks.rope_theta)?;
    let max_positions = match quirks.refuse_past_sliding_window {
        true => config["sliding_window"].as_u64().map(|w| w as usize),
        false => None,
    };
    if let Some(fix) = quirks.fix {
        fix(src, &mut config)?;
    }
    let config: C = src.parse_config_value(arch, config)?;
    let (vb, _dtype) = src.var_builder(device)?;
    Ok((info, max_positions, config, vb))
}

impl<M: Send> ModelBody for CandleLm<M> {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        if let Some(w) = self.max_positions {
            let end = seqlen_offset + input_ids.dim(1)?;
            if end > w {
                return Err(zoo_core::Error::PromptTooLong {
                    prompt_tokens: end,
                    context_length: w,
                });
            }
        }
        last_position_logits((self.forward)(&mut self.model, input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        match &self.reset {
            Reset::Clear(clear) => clear(&mut self.model),
            Reset::Rebuild(new) => self.model = new()?,
        }
        Ok(())
    }

    fn batched(&mut self) -> Option<&mut dyn zoo_core::BatchedLM> {
        // candle's models keep one sequence's KV cache inside: one at a time.
        None
    }

    fn info(&self) -> &ModelInfo {
        &self.info
    }
}

/// The error for a config.json value that candle's model cannot compute.
pub fn unsupported(
    src: &SafetensorsSource,
    arch: &str,
    detail: impl Into<String>,
    hint: impl Into<String>,
) -> zoo_core::Error {
    zoo_core::Error::Config {
        path: src.config_path.clone(),
        what: format!("`{arch}` config"),
        detail: detail.into(),
        hint: hint.into(),
    }
}

/// Config quirk of candle models whose mask admits one key too many (`i - j <= w` where
/// transformers has `i - j < w`: Mistral, Starcoder2): `w - 1` gives transformers'
/// window.
pub fn window_one_key_narrower(_: &SafetensorsSource, config: &mut Value) -> Result<()> {
    if let Some(w) = config["sliding_window"].as_u64() {
        config["sliding_window"] = serde_json::json!(w.saturating_sub(1));
    }
    Ok(())
}

/// The load function of an architecture that is a candle-transformers model with the
/// usual shape (`new(&Config, VarBuilder)`, `forward(&ids, seqlen_offset)`,
/// `clear_kv_cache()`), given its config quirks:
///
/// ```text
/// pub struct Olmo(CandleLm<candle_model::Model>);
/// candle_load!(Olmo, candle_model::Model, ConfigQuirks::default());
/// ```
///
/// It is what `cargo xtask new-arch --candle` writes; no file in the tree uses it now
/// (the one-line candle wrappers moved to zoo's decoders), hence the `allow`.
///
/// `reset = rebuild`: candle's model has no `clear_kv_cache`, a reset builds it again.
/// `new = expr` gives the constructor where candle's takes more than the config and
/// the weights (`|c, vb| gemma::Model::new(false, c, vb)`).
#[allow(unused_macros)]
macro_rules! candle_load {
    ($ty:ident, $model:ty, $quirks:expr, reset = rebuild) => {
        $crate::adapters::candle_load!(
            @impl $ty, load_rebuilt_on_reset, $quirks, <$model>::new, <$model>::forward
        );
    };
    ($ty:ident, $model:ty, $quirks:expr) => {
        $crate::adapters::candle_load!($ty, $model, $quirks, new = <$model>::new);
    };
    ($ty:ident, $model:ty, $quirks:expr, new = $new:expr) => {
        $crate::adapters::candle_load!(
            @impl $ty, load, $quirks, $new, <$model>::forward, <$model>::clear_kv_cache
        );
    };
    (@impl $ty:ident, $loader:ident, $quirks:expr, $($fns:expr),+) => {
        impl $ty {
            fn load(
                src: &zoo_core::SafetensorsSource,
                device: &zoo_core::Device,
            ) -> zoo_core::Result<Self> {
                $crate::adapters::CandleLm::$loader(
                    <Self as zoo_core::registry::Registered>::ENTRY.name,
                    src,
                    device,
                    $quirks,
                    $($fns),+
                )
                .map(Self)
            }
        }
    };
}
pub(crate) use candle_load;

/// Refuses config.json's rope scaling where candle's model ignores it (or reads it in a
/// form of its own): computed without it, positions past the trained context would be
/// wrong.
pub fn refuse_rope_scaling(src: &SafetensorsSource, arch: &str) -> Result<()> {
    match src.rope_scaling() {
        None => Ok(()),
        Some(scaling) => Err(unsupported(
            src,
            arch,
            format!("rope scaling {scaling} is not supported"),
            "candle's model for this architecture does not apply it; remove rope_scaling to run within the trained context",
        )),
    }
}
