//! A safetensors file's header, checked before candle maps it: the 8-byte length
//! against the file and a sane limit, then the `safetensors` crate's own validation
//! (JSON, known dtypes, shape times dtype size equal to each tensor's byte range,
//! ranges back to back from 0 to the end of the file, no overflow). Where that
//! validation fails without naming the tensor, the header is read again to say which
//! tensor and how.

use std::path::Path;

use safetensors::{Dtype, SafeTensorError, SafeTensors};

use crate::{Error, Result};

/// A header longer than this is refused (the format's own cap is 100 MB; real
/// headers take a few hundred KiB: ~150 bytes per tensor). Parsing a JSON header can
/// take several times its size in memory, so the cap bounds memory too.
pub(crate) const MAX_HEADER: u64 = 16 << 20;

/// Headers up to this size are read a second time to say which tensor is wrong.
const DIAGNOSE_LIMIT: usize = 1 << 20;

/// A tensor of a checked file: name, dtype, shape.
pub(crate) type TensorMeta = (String, Dtype, Vec<usize>);

/// Checks a whole safetensors file held in memory, with every check zoo makes when it
/// opens a checkpoint; errors name the path `<memory>`. For fuzzing and tools.
pub fn parse_safetensors(bytes: &[u8]) -> Result<Vec<(String, String, Vec<usize>)>> {
    Ok(check_bytes(Path::new("<memory>"), bytes)?
        .into_iter()
        .map(|(n, d, s)| (n, format!("{d:?}"), s))
        .collect())
}

/// Maps and checks one safetensors file.
pub(crate) fn check_file(path: &Path) -> Result<Vec<TensorMeta>> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map of a model file, which must not change while zoo reads it.
    let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    check_bytes(path, &mmap)
}

pub(crate) fn check_bytes(path: &Path, b: &[u8]) -> Result<Vec<TensorMeta>> {
    let invalid = |detail: String| Error::InvalidSafetensors {
        path: path.to_path_buf(),
        detail,
    };
    let len = b.len() as u64;
    if len < 8 {
        return Err(invalid(format!(
            "the file has {len} bytes, fewer than the 8-byte header length every safetensors file starts with; the file is cut short: fetch it again"
        )));
    }
    let n = u64::from_le_bytes(b[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER {
        return Err(invalid(format!(
            "the header length field says {n} bytes, more than zoo's limit of {} MiB (real headers take a few hundred KiB){}; the length is corrupt",
            MAX_HEADER >> 20,
            if n > len - 8 { format!(" and more than the {} bytes the file holds after it", len - 8) } else { String::new() }
        )));
    }
    if n > len - 8 {
        return Err(invalid(format!(
            "the header length field says {n} bytes, but the file holds only {} bytes after it; the file is cut short or the length is corrupt: fetch it again",
            len - 8
        )));
    }
    let (_, metadata) = SafeTensors::read_metadata(b).map_err(|e| {
        let header = &b[8..8 + n as usize];
        invalid(describe(e, header, len - 8 - n))
    })?;
    let mut tensors: Vec<TensorMeta> = metadata
        .tensors()
        .into_iter()
        .map(|(name, info)| (name, info.dtype, info.shape.clone()))
        .collect();
    tensors.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(tensors)
}

/// What is wrong, in zoo's words, from the crate's error (and the header, read again
/// for the errors that do not name the tensor).
fn describe(e: SafeTensorError, header: &[u8], data_len: u64) -> String {
    use SafeTensorError as E;
    const REDO: &str = "the file is corrupt: save or convert the weights again (`save_pretrained(dir, safe_serialization=True)`)";
    match e {
        E::InvalidHeader(u) => format!("the header is not UTF-8 ({u}); {REDO}"),
        E::InvalidHeaderDeserialization(j) | E::JsonError(j) => format!(
            "the header is not the JSON safetensors expects ({j}): an object mapping each tensor name to its dtype, shape and data_offsets; {REDO}"
        ),
        E::MetadataIncompleteBuffer => match diagnose(header, data_len) {
            Some(d) => format!("{d}; {REDO}"),
            None => format!(
                "the tensors' byte ranges do not end where the file's {data_len} data bytes end (the file is cut short or has bytes no tensor owns); fetch it again"
            ),
        },
        other => match diagnose(header, data_len) {
            Some(d) => format!("{d}; {REDO}"),
            None => format!("{other}; {REDO}"),
        },
    }
}

/// The first tensor whose dtype, shape and data_offsets disagree, or whose range
/// leaves the file or meets another's.
fn diagnose(header: &[u8], data_len: u64) -> Option<String> {
    if header.len() > DIAGNOSE_LIMIT {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(header).ok()?;
    let mut spans = Vec::new();
    for (name, t) in v.as_object()? {
        if name == "__metadata__" {
            continue;
        }
        let dtype: Option<Dtype> = t
            .get("dtype")
            .and_then(|d| serde_json::from_value(d.clone()).ok());
        let shape: Option<Vec<u64>> = t
            .get("shape")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        let offsets: Option<[u64; 2]> = t
            .get("data_offsets")
            .and_then(|o| serde_json::from_value(o.clone()).ok());
        let (Some(dtype), Some(shape), Some([s, e])) = (dtype, shape, offsets) else {
            return Some(format!("tensor `{name}` lacks a known dtype, a shape of integers or two data_offsets: found {t}"));
        };
        let bytes = shape
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d))
            .and_then(|n| n.checked_mul(dtype.bitsize() as u64))
            .map(|bits| bits.div_ceil(8));
        let Some(bytes) = bytes else {
            return Some(format!(
                "tensor `{name}` has shape {shape:?}, whose size overflows"
            ));
        };
        if e < s {
            return Some(format!(
                "tensor `{name}` has data_offsets [{s}, {e}], which end before they start"
            ));
        }
        if e > data_len {
            return Some(format!("tensor `{name}` has data_offsets [{s}, {e}], past the end of the {data_len} data bytes the file holds (cut short?)"));
        }
        if e - s != bytes {
            return Some(format!("tensor `{name}` of dtype {dtype:?} and shape {shape:?} takes {bytes} bytes, but its data_offsets [{s}, {e}] hold {}", e - s));
        }
        spans.push((s, e, name.clone()));
    }
    spans.sort();
    let mut end = 0;
    let mut prev = "";
    for (s, e, name) in &spans {
        if *s < end {
            return Some(format!("tensors `{prev}` and `{name}` overlap (bytes {s}..{end} of the data belong to both)"));
        }
        if *s > end {
            return Some(format!("bytes {end}..{s} of the data belong to no tensor (before `{name}`); safetensors packs tensors back to back"));
        }
        end = *e;
        prev = name;
    }
    (end != data_len).then(|| {
        format!("the tensors' data ends at byte {end} of the data, but the file holds {data_len} data bytes")
    })
}
