//! Hidden states split into attention heads and joined back, and the last position of
//! a sequence (what a decoder turns into logits).

use candle_core::{Result, Tensor};

/// Splits `[batch, seq, heads * head_dim]` into `[batch, heads, seq, head_dim]`.
pub fn split_heads(x: &Tensor, heads: usize, head_dim: usize) -> Result<Tensor> {
    let (b, s, _) = x.dims3()?;
    x.reshape((b, s, heads, head_dim))?.transpose(1, 2)
}

/// Splits a fused `[batch, seq, (heads + 2 * kv_heads) * head_dim]` projection into q,
/// k and v, each `[batch, heads or kv_heads, seq, head_dim]`.
pub fn split_qkv(
    qkv: &Tensor,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
) -> Result<(Tensor, Tensor, Tensor)> {
    let (q, kv) = (heads * head_dim, kv_heads * head_dim);
    Ok((
        split_heads(&qkv.narrow(2, 0, q)?, heads, head_dim)?,
        split_heads(&qkv.narrow(2, q, kv)?, kv_heads, head_dim)?,
        split_heads(&qkv.narrow(2, q + kv, kv)?, kv_heads, head_dim)?,
    ))
}

/// Joins `[batch, heads, seq, head_dim]` back into `[batch, seq, heads * head_dim]`.
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, h, s, d) = x.dims4()?;
    x.transpose(1, 2)?.reshape((b, s, h * d))
}

/// The last position of `[batch, seq, hidden]`, as `[batch, 1, hidden]`.
pub fn last_position(x: &Tensor) -> Result<Tensor> {
    let s = x.dim(1)?;
    x.narrow(1, s - 1, 1)
}
