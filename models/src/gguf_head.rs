//! Weights of a llama.cpp GGUF as zoo's layers: the token embedding kept quantized
//! (rows dequantized on lookup) with the head `output.weight` or, where the file has
//! none, the embedding itself (tied); projections with their bias where the file has
//! one; dense tensors.

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::Tensor;
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

/// The file's `{arch}.block_count` layers, each built by `layer` from the block's
/// tensor names (`p("attn_q.weight")` is `blk.{i}.attn_q.weight`). Nothing is reserved
/// up front: a file that declares more blocks than it holds fails at the first
/// missing tensor.
pub(crate) fn blocks<L>(
    g: &GgufSource,
    arch: &str,
    mut layer: impl FnMut(&dyn Fn(&str) -> String) -> Result<L>,
) -> Result<Vec<L>> {
    let n = g.u64(&format!("{arch}.block_count"))?;
    let mut layers = Vec::new();
    for i in 0..n {
        layers.push(layer(&|s: &str| format!("blk.{i}.{s}"))?);
    }
    Ok(layers)
}

/// A tensor dequantized (norm weights, biases).
pub(crate) fn dense(g: &GgufSource, name: &str, device: &Device) -> Result<Tensor> {
    Ok(g.tensor(name, device)?.dequantize(device)?)
}

/// The projection `{stem}.weight`, with `{stem}.bias` added where the file has it.
pub(crate) fn linear(g: &GgufSource, stem: &str, device: &Device) -> Result<QLinear> {
    let bias = format!("{stem}.bias");
    let bias = match g.has_tensor(&bias) {
        true => Some(dense(g, &bias, device)?),
        false => None,
    };
    Ok(QLinear::new(Arc::new(g.tensor(&format!("{stem}.weight"), device)?))?.with_bias(bias))
}
