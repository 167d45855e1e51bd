//! The tensor directory of a GGUF header: each entry checked (name, dimensions and
//! their product, a tensor type candle computes, whole blocks per row) and the spans
//! of all of them (aligned, inside the file, not overlapping).

use std::collections::HashSet;

use candle_core::quantized::GgmlDType;

use super::gguf_header::{Cursor, Header, HeaderError};
use super::gguf_values::{ggml_type, SUPPORTED};

/// GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;
/// A tensor directory entry, checked: known type, whole blocks, inside the file.
#[derive(Debug, Clone)]
pub(crate) struct TensorEntry<'a> {
    pub name: &'a str,
    /// Dimensions in file order (innermost first, as ggml's `ne`).
    pub ne: Vec<u64>,
    pub dtype: GgmlDType,
    /// Relative to the tensor data section.
    pub offset: u64,
    /// Bytes it takes.
    pub size: u64,
}

pub(super) fn tensor_entry<'a>(
    c: &mut Cursor<'a>,
    i: u64,
    names: &mut HashSet<&'a str>,
) -> Result<TensorEntry<'a>, HeaderError> {
    let name = c.name(&|| format!("the name of tensor #{i}"))?;
    if !names.insert(name) {
        return Err(HeaderError::Invalid(format!(
            "tensor `{name}` appears twice in the tensor directory; each tensor appears once"
        )));
    }
    let what = || format!("tensor `{name}`");
    let n_dims = c.u32(&what)?;
    if n_dims > MAX_DIMS {
        return Err(HeaderError::Invalid(format!(
            "tensor `{name}` has {n_dims} dimensions; GGML tensors have at most {MAX_DIMS}"
        )));
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    let mut elems: u64 = 1;
    for _ in 0..n_dims {
        let d = c.len(&what)?;
        ne.push(d);
        elems = elems.saturating_mul(d);
    }
    if ne.contains(&0) {
        return Err(HeaderError::Invalid(format!(
            "tensor `{name}` has dimensions {ne:?}, one of them 0; every dimension is at least 1"
        )));
    }
    let overflow = ne
        .iter()
        .try_fold(1u64, |n, &d| n.checked_mul(d))
        .is_none_or(|n| n > i64::MAX as u64);
    if overflow {
        return Err(HeaderError::Invalid(format!(
            "tensor `{name}` has dimensions {ne:?}, whose product overflows (more than 2^63 elements); a real tensor's elements fit in the file"
        )));
    }
    let type_id = c.u32(&what)?;
    let dtype = ggml_type(type_id).map_err(|found| {
        HeaderError::Invalid(format!(
            "tensor `{name}` is stored as {found}, which zoo cannot compute; zoo reads {}: re-quantize the original model to one of these (llama-quantize, e.g. Q4_K_M)",
            SUPPORTED
        ))
    })?;
    let block = dtype.block_size() as u64;
    let inner = ne.first().copied().unwrap_or(1);
    if inner % block != 0 {
        return Err(HeaderError::Invalid(format!(
            "tensor `{name}` of type {dtype:?} has rows of {inner} elements (dimensions {ne:?}); {dtype:?} stores blocks of {block}, so a row is a multiple of {block}"
        )));
    }
    let size = (elems / block)
        .checked_mul(dtype.type_size() as u64)
        .ok_or_else(|| {
            HeaderError::Invalid(format!(
                "tensor `{name}` has dimensions {ne:?}, whose size in bytes overflows"
            ))
        })?;
    let offset = c.u64(&what)?;
    Ok(TensorEntry {
        name,
        ne,
        dtype,
        offset,
        size,
    })
}

/// Every tensor aligned, inside the file, and no two sharing bytes.
pub(super) fn check_spans(
    len: u64,
    data_offset: u64,
    alignment: u64,
    tensors: &[TensorEntry],
) -> Result<(), HeaderError> {
    if tensors.is_empty() {
        return Ok(());
    }
    if data_offset > len {
        return Err(HeaderError::Truncated(format!(
            "the tensor data would start at byte {data_offset}, but the file ends at byte {len}"
        )));
    }
    let mut spans = Vec::with_capacity(tensors.len());
    for t in tensors {
        if t.offset % alignment != 0 {
            return Err(HeaderError::Invalid(format!(
                "tensor `{}` starts at offset {}, not a multiple of the file's alignment {alignment}; the directory is corrupt",
                t.name, t.offset
            )));
        }
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.size));
        match end {
            Some(end) if end <= len => spans.push((data_offset + t.offset, end, t.name)),
            _ => {
                return Err(HeaderError::Truncated(format!(
                    "tensor `{}` ({} bytes at offset {} of the data section) ends at byte {}, but the file has {len} bytes",
                    t.name,
                    t.size,
                    t.offset,
                    end.map(|e| e.to_string())
                        .unwrap_or_else(|| "past 2^64".into())
                )))
            }
        }
    }
    spans.sort_unstable();
    for w in spans.windows(2) {
        let ((s0, e0, a), (s1, e1, b)) = (w[0], w[1]);
        if s1 < e0 {
            return Err(HeaderError::Invalid(format!(
                "tensors `{a}` (bytes {s0}..{e0}) and `{b}` (bytes {s1}..{e1}) overlap; each tensor has bytes of its own: the directory is corrupt"
            )));
        }
    }
    Ok(())
}

/// The directory against the metadata, for any architecture: block indices below
/// `{arch}.block_count` and every block present; the embedding and the norms as wide
/// as `{arch}.embedding_length`.
pub(super) fn check_layout(b: &[u8], h: &Header) -> Result<(), HeaderError> {
    use super::gguf_values::{scalar, Scalar};
    let arch = match h.kv("general.architecture").and_then(|kv| scalar(b, kv)) {
        Some(Scalar::Str(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => return Ok(()),
    };
    let int = |suffix: &str| match h
        .kv(&format!("{arch}.{suffix}"))
        .and_then(|kv| scalar(b, kv))
    {
        Some(Scalar::Int(x)) => u64::try_from(x).ok(),
        _ => None,
    };
    if let Some(blocks) = int("block_count") {
        let mut seen = vec![false; blocks.min(1 << 12) as usize];
        for t in &h.tensors {
            let Some(rest) = t.name.strip_prefix("blk.") else {
                continue;
            };
            let Some(i) = rest.split('.').next().and_then(|i| i.parse::<u64>().ok()) else {
                continue;
            };
            match seen.get_mut(i as usize) {
                Some(s) => *s = true,
                None => {
                    return Err(HeaderError::Invalid(format!(
                        "tensor `{}` belongs to block {i}, but `{arch}.block_count` is {blocks} (blocks 0 to {}); the directory and the metadata disagree: convert the model again",
                        t.name,
                        blocks.saturating_sub(1)
                    )))
                }
            }
        }
        if !h.tensors.is_empty() {
            if let Some(i) = seen.iter().position(|s| !s) {
                return Err(HeaderError::Invalid(format!(
                    "block {i} has no tensors (`blk.{i}.*`) though `{arch}.block_count` is {blocks}: tensors are missing, the file is incomplete; fetch or convert it again"
                )));
            }
        }
    }
    if let Some(embd) = int("embedding_length") {
        for t in &h.tensors {
            let norm = t.name == "output_norm.weight"
                || (t.name.starts_with("blk.") && t.name.ends_with(".attn_norm.weight"));
            let wrong = match t.name {
                "token_embd.weight" | "output.weight" => t.ne.first() != Some(&embd),
                _ if norm => t.ne != [embd],
                _ => false,
            };
            if wrong {
                return Err(HeaderError::Invalid(format!(
                    "tensor `{}` has dimensions {:?} (innermost first), but `{arch}.embedding_length` is {embd}, so its {} should be {embd}; the tensor does not belong to this model: convert it again",
                    t.name,
                    t.ne,
                    if norm { "only dimension" } else { "first dimension" }
                )));
            }
        }
    }
    Ok(())
}
