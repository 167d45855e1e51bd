//! The feed-forward of [`super::LlamaDecoder`]'s layers: a gated SiLU MLP, a GELU MLP, or experts
//! behind a softmax router (with a shared expert where the architecture has one).

use std::borrow::Cow;
use std::ops::Range;

use candle_core::quantized::{QStorage, QTensor};
use candle_core::{DType, Device, Module, Tensor, D};
use zoo_core::Result;

use crate::layers::{gelu, silu_mul, Gelu, QLinear};

pub(super) struct Expert {
    pub gate: QLinear,
    pub up: QLinear,
    pub down: QLinear,
}

impl Expert {
    /// `rows`: each row's product alone ([`QLinear::forward_rows`], the batched forward).
    fn forward(&self, x: &Tensor, rows: bool) -> Result<Tensor> {
        let h = silu_mul(&mm(&self.gate, x, rows)?, &mm(&self.up, x, rows)?)?;
        Ok(mm(&self.down, &h, rows)?)
    }
}

pub(super) enum Ffn {
    Dense(Expert),
    /// `down(gelu(up(x)))` (Starcoder2, Phi-2).
    Gelu {
        up: QLinear,
        down: QLinear,
        kind: Gelu,
    },
    /// Softmax over the router's logits, the top `used` experts, with `norm_topk` their
    /// weights renormalised to sum to one (Mixtral; a Qwen MoE config's
    /// `norm_topk_prob`); a shared expert's output added, gated by a sigmoid (Qwen2-MoE).
    Moe {
        router: QLinear,
        experts: Vec<Expert>,
        used: usize,
        norm_topk: bool,
        shared: Option<Shared>,
    },
}

/// The expert every token goes through, scaled by `sigmoid(gate(x))`.
pub(super) struct Shared {
    pub expert: Expert,
    pub gate: QLinear,
}

impl Expert {
    fn values(&self) -> usize {
        self.gate.values() + self.up.values() + self.down.values()
    }
}

impl Ffn {
    /// The weight values one token's feed-forward multiplies (its experts' share).
    pub(super) fn values(&self) -> usize {
        match self {
            Ffn::Dense(e) => e.values(),
            Ffn::Gelu { up, down, .. } => up.values() + down.values(),
            Ffn::Moe {
                router,
                experts,
                used,
                shared,
                ..
            } => {
                let expert = experts.first().map_or(0, Expert::values);
                let shared = shared
                    .as_ref()
                    .map_or(0, |s| s.expert.values() + s.gate.values());
                router.values() + used * expert + shared
            }
        }
    }

    /// The feed-forward of `x` (`[batch, seq, hidden]`); `rows` as in [`Expert::forward`].
    pub(super) fn forward(&self, x: &Tensor, rows: bool) -> Result<Tensor> {
        match self {
            Ffn::Dense(e) => e.forward(x, rows),
            Ffn::Gelu { up, down, kind } => Ok(mm(down, &gelu(&mm(up, x, rows)?, *kind)?, rows)?),
            Ffn::Moe {
                router,
                experts,
                used,
                norm_topk,
                shared,
            } => {
                let (b, s, hidden) = x.dims3()?;
                let x = x.reshape((b * s, hidden))?;
                let mut out = moe(router, experts, *used, *norm_topk, &x, rows)?;
                if let Some(Shared { expert, gate }) = shared {
                    let g = candle_nn::ops::sigmoid(&mm(gate, &x, rows)?)?;
                    out = (out + expert.forward(&x, rows)?.broadcast_mul(&g)?)?;
                }
                Ok(out.reshape((b, s, hidden))?)
            }
        }
    }
}

/// Expert `e` of a stacked `[experts, rows, cols]` tensor, as its own 2-D tensor.
pub(super) fn expert_slice(t: &QTensor, e: usize, device: &Device) -> Result<QTensor> {
    let (n, rows, cols) = t.shape().dims3()?;
    let data = t.data()?;
    let per = data.len() / n;
    let storage = QStorage::from_data(
        Cow::Borrowed(&data[e * per..(e + 1) * per]),
        device,
        t.dtype(),
    )?;
    Ok(QTensor::new(storage, (rows, cols))?)
}

/// Rows `rows` of a 2-D tensor (a fused matrix's part), as their own tensor: rows of
/// every GGUF type are whole blocks, so the bytes are cut as they are.
pub(super) fn row_slice(t: &QTensor, rows: Range<usize>, device: &Device) -> Result<QTensor> {
    let (n, cols) = t.shape().dims2()?;
    let data = t.data()?;
    let per = data.len() / n.max(1);
    let storage = QStorage::from_data(
        Cow::Borrowed(&data[rows.start * per..rows.end * per]),
        device,
        t.dtype(),
    )?;
    Ok(QTensor::new(storage, (rows.len(), cols))?)
}

/// `l(x)`; `rows` as in [`Expert::forward`].
pub(super) fn mm(l: &QLinear, x: &Tensor, rows: bool) -> candle_core::Result<Tensor> {
    if rows {
        l.forward_rows(x)
    } else {
        l.forward(x)
    }
}

/// The sparse feed-forward of `x` (`[tokens, hidden]`); `rows` as in [`Expert::forward`]
/// (a token's result never depends on the others routed with it: each expert's
/// contributions are added in expert order).
fn moe(
    router: &QLinear,
    experts: &[Expert],
    k: usize,
    norm_topk: bool,
    x: &Tensor,
    rows: bool,
) -> Result<Tensor> {
    let logits = mm(router, x, rows)?;
    let probs = candle_nn::ops::softmax_last_dim(&logits)?;
    let probs: Vec<Vec<f32>> = probs.to_dtype(DType::F32)?.to_vec2()?;
    // For each expert, the tokens routed to it and their renormalised weights.
    let mut routed: Vec<(Vec<u32>, Vec<f32>)> = vec![(Vec::new(), Vec::new()); experts.len()];
    for (t, p) in probs.iter().enumerate() {
        let mut order: Vec<usize> = (0..p.len()).collect();
        order.sort_by(|&a, &b| p[b].total_cmp(&p[a]));
        let top = &order[..k];
        let sum: f32 = top.iter().map(|&e| p[e]).sum();
        for &e in top {
            routed[e].0.push(t as u32);
            routed[e].1.push(if norm_topk { p[e] / sum } else { p[e] });
        }
    }
    let mut out = x.zeros_like()?;
    for (expert, (tokens, weights)) in experts.iter().zip(routed) {
        if tokens.is_empty() {
            continue;
        }
        let idx = Tensor::new(tokens.as_slice(), x.device())?;
        let y = expert.forward(&x.index_select(&idx, 0)?, rows)?;
        let w = Tensor::new(weights.as_slice(), x.device())?.unsqueeze(D::Minus1)?;
        out = out.index_add(&idx, &y.broadcast_mul(&w)?, 0)?;
    }
    Ok(out)
}
