//! The token embedding and output head of a llama.cpp GGUF: the embedding kept
//! quantized (rows dequantized on lookup), the head `output.weight` or, where the file
//! has none, the embedding itself (tied).

use std::sync::Arc;

use candle_core::quantized::QTensor;
use zoo_core::{Device, GgufSource, Result};

use crate::layers::QLinear;

/// `token_embd.weight`, and the head: `untied()` where the file has `output.weight`,
/// else the embedding.
pub(crate) fn embedding_and_head(
    g: &GgufSource,
    device: &Device,
    untied: impl FnOnce() -> Result<QLinear>,
) -> Result<(Arc<QTensor>, QLinear)> {
    let embed = Arc::new(g.tensor("token_embd.weight", device)?);
    let output = if g.has_tensor("output.weight") {
        untied()?
    } else {
        QLinear::new(embed.clone())?
    };
    Ok((embed, output))
}
