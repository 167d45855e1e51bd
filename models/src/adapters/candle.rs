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
}

/// A candle-transformers model `M` with the facts read at load.
pub struct CandleLm<M> {
    model: M,
    info: ModelInfo,
    forward: fn(&mut M, &Tensor, usize) -> candle_core::Result<Tensor>,
    clear: fn(&mut M),
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
        let info = src.model_info(arch, quirks.context_length, device)?;
        let mut config = src.normalised_config(quirks.rope_theta)?;
        if let Some(fix) = quirks.fix {
            fix(src, &mut config)?;
        }
        let config: C = src.parse_config_value(arch, config)?;
        let (vb, _dtype) = src.var_builder(device)?;
        Ok(Self {
            model: new(&config, vb)?,
            info,
            forward,
            clear,
        })
    }
}

impl<M: Send> ModelBody for CandleLm<M> {
    fn forward(&mut self, input_ids: &Tensor, seqlen_offset: usize) -> Result<Tensor> {
        last_position_logits((self.forward)(&mut self.model, input_ids, seqlen_offset)?)
    }

    fn reset_cache(&mut self) -> Result<()> {
        (self.clear)(&mut self.model);
        Ok(())
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
