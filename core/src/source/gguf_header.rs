//! zoo's own GGUF header reader. It walks the header over the mapped bytes and checks
//! every count, length, value type, dimension, tensor type and offset against the
//! file's length and sane limits *before* anything sized by the file is allocated
//! ([`scan`]: the result borrows the bytes); only a header that passed every check is
//! turned into candle's `gguf_file::Content` ([`build`]), which the rest of zoo and
//! candle's model code read.
//!
//! What is checked, and why each limit, is in docs/reliability.md. Versions 1, 2 and 3
//! (little-endian) are read, as candle reads them.

use std::collections::HashSet;

use super::gguf_directory::{check_spans, tensor_entry, TensorEntry};
use super::gguf_values::{scalar, Scalar};

/// At most this many tensors (real models: ~300 to ~2,000; per-expert MoE files
/// ~15,000): bounds the directory's memory (~100 B each) before the file is rejected.
pub(crate) const MAX_TENSORS: u64 = 1 << 16;
/// At most this many metadata keys (real files: 20 to 60).
pub(crate) const MAX_KEYS: u64 = 1 << 16;
/// A key or tensor name longer than this is corrupt (llama.cpp stops at 63 bytes).
pub(super) const MAX_NAME: u64 = 1 << 10;
/// llama.cpp's GGUF_MAX_STRING_LENGTH-like cap on one string value (a chat template
/// is ~10 KiB; this is generous).
pub(super) const MAX_STRING: u64 = 1 << 30;
/// At most this many elements in one array (the largest real ones, vocabularies and
/// merges, hold ~262k and ~500k).
pub(super) const MAX_ARRAY: u64 = 1 << 24;
/// Arrays of arrays at most this deep (no converter writes nested arrays).
const MAX_DEPTH: usize = 2;
/// What the parsed metadata may take in memory, estimated as candle holds it (32 B per
/// value plus string bytes): Gemma 3's 262k-token vocabulary takes ~32 MiB.
const METADATA_BUDGET: u64 = 256 << 20;
const DEFAULT_ALIGNMENT: u64 = 32;
/// `general.alignment` larger than this is corrupt (llama.cpp writes 32).
const MAX_ALIGNMENT: u64 = 1 << 16;

/// What is wrong with a header; the text says what was found, what was expected and,
/// where there is something to do, what.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum HeaderError {
    /// The header or a tensor reaches past the end of the file.
    Truncated(String),
    /// A field out of range, a malformed value, a tensor type zoo cannot compute.
    Invalid(String),
}

/// A metadata entry, borrowed from the file: the value is read only where needed.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kv<'a> {
    pub key: &'a str,
    /// GGUF value type id (0..=12).
    pub ty: u32,
    /// Where the value starts in the file.
    pub at: usize,
    /// For an array: element type id and length.
    pub array: Option<(u32, u64)>,
    /// GGUF v1 (lengths are u32).
    pub v1: bool,
}

/// A header that passed every check, borrowing the file's bytes.
#[derive(Debug)]
pub(crate) struct Header<'a> {
    pub version: u32,
    pub kvs: Vec<Kv<'a>>,
    pub tensors: Vec<TensorEntry<'a>>,
    pub data_offset: u64,
}

impl<'a> Header<'a> {
    pub fn kv(&self, key: &str) -> Option<&Kv<'a>> {
        self.kvs.iter().find(|k| k.key == key)
    }
}

pub(super) struct Cursor<'a> {
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
    pub(super) v1: bool,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> u64 {
        (self.b.len() - self.pos) as u64
    }

    pub(super) fn take(
        &mut self,
        n: u64,
        what: &dyn Fn() -> String,
    ) -> Result<&'a [u8], HeaderError> {
        if n > self.remaining() {
            return Err(HeaderError::Truncated(format!(
                "the header ends early: {} needs {n} bytes at byte {}, but the file ends at byte {}",
                what(),
                self.pos,
                self.b.len()
            )));
        }
        let s = &self.b[self.pos..self.pos + n as usize];
        self.pos += n as usize;
        Ok(s)
    }

    pub(super) fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, HeaderError> {
        let s = self.take(4, what)?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }

    pub(super) fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, HeaderError> {
        let s = self.take(8, what)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(s);
        Ok(u64::from_le_bytes(a))
    }

    /// A count or length: u32 in GGUF v1, u64 after.
    pub(super) fn len(&mut self, what: &dyn Fn() -> String) -> Result<u64, HeaderError> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    pub(super) fn prefix(&self) -> u64 {
        if self.v1 {
            4
        } else {
            8
        }
    }

    /// A length-prefixed string's bytes, at most `max` long.
    pub(super) fn string(
        &mut self,
        max: u64,
        what: &dyn Fn() -> String,
    ) -> Result<&'a [u8], HeaderError> {
        let at = self.pos;
        let n = self.len(what)?;
        if n > max {
            return Err(HeaderError::Invalid(format!(
                "{} at byte {at} declares a length of {n} bytes, more than the {max} a valid file uses{}",
                what(),
                beyond(n, self.b.len())
            )));
        }
        self.take(n, what)
    }

    /// A key or tensor name: UTF-8, 1 to MAX_NAME bytes.
    pub(super) fn name(&mut self, what: &dyn Fn() -> String) -> Result<&'a str, HeaderError> {
        let at = self.pos;
        let s = self.string(MAX_NAME, what)?;
        if s.is_empty() {
            return Err(HeaderError::Invalid(format!(
                "{} at byte {at} is empty; every key and tensor has a name",
                what()
            )));
        }
        std::str::from_utf8(s).map_err(|_| {
            HeaderError::Invalid(format!(
                "{} at byte {at} is not UTF-8 ({:?})",
                what(),
                String::from_utf8_lossy(s)
            ))
        })
    }
}

/// ", and the file has only N bytes" when a length is beyond the file.
fn beyond(n: u64, len: usize) -> String {
    if n > len as u64 {
        format!(" (the whole file has {len} bytes)")
    } else {
        String::new()
    }
}

const TYPE_NAMES: [&str; 13] = [
    "u8", "i8", "u16", "i16", "u32", "i32", "f32", "bool", "string", "array", "u64", "i64", "f64",
];

/// The name of a GGUF value type id.
pub(crate) fn type_name(ty: u32) -> &'static str {
    TYPE_NAMES.get(ty as usize).copied().unwrap_or("unknown")
}

/// Bytes one value of a fixed-size type takes; `None` for strings and arrays.
fn fixed_size(ty: u32) -> Option<u64> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

/// Walks one value, checking it, charging its in-memory cost to `budget`.
fn skip_value(
    c: &mut Cursor,
    ty: u32,
    depth: usize,
    budget: &mut u64,
    what: &dyn Fn() -> String,
) -> Result<(), HeaderError> {
    *budget = budget.saturating_add(32);
    match ty {
        7 => {
            let at = c.pos;
            let b = c.take(1, what)?[0];
            if b > 1 {
                return Err(HeaderError::Invalid(format!(
                    "{} at byte {at} is a bool of value {b}; a GGUF bool is 0 or 1",
                    what()
                )));
            }
        }
        8 => {
            let s = c.string(MAX_STRING, what)?;
            *budget = budget.saturating_add(s.len() as u64);
        }
        9 => {
            if depth >= MAX_DEPTH {
                return Err(HeaderError::Invalid(format!(
                    "{} nests arrays {} deep; zoo reads arrays nested at most {MAX_DEPTH} deep (no converter writes nested arrays)",
                    what(),
                    depth + 1
                )));
            }
            let at = c.pos;
            let et = c.u32(what)?;
            if et as usize >= TYPE_NAMES.len() {
                return Err(HeaderError::Invalid(format!(
                    "{} at byte {at} is an array of value type {et}; GGUF value types are 0 to 12",
                    what()
                )));
            }
            let n = c.len(what)?;
            if n > MAX_ARRAY {
                return Err(HeaderError::Invalid(format!(
                    "{} at byte {at} declares an array of {n} elements, more than the {MAX_ARRAY} a valid file uses{}",
                    what(),
                    beyond(n, c.b.len())
                )));
            }
            let min = fixed_size(et).unwrap_or(if et == 8 { c.prefix() } else { 4 + c.prefix() });
            if n.saturating_mul(min) > c.remaining() {
                return Err(HeaderError::Truncated(format!(
                    "the header ends early: {} declares an array of {n} {} values, which needs at least {} bytes, but only {} remain",
                    what(),
                    type_name(et),
                    n.saturating_mul(min),
                    c.remaining()
                )));
            }
            match fixed_size(et) {
                Some(size) if et != 7 => {
                    c.take(n * size, what)?;
                    *budget = budget.saturating_add(n.saturating_mul(32));
                }
                _ => {
                    for _ in 0..n {
                        skip_value(c, et, depth + 1, budget, what)?;
                    }
                }
            }
        }
        t => match fixed_size(t) {
            Some(size) => {
                c.take(size, what)?;
            }
            None => {
                return Err(HeaderError::Invalid(format!(
                    "{} has value type {t}; GGUF value types are 0 to 12 (u8 ... f64)",
                    what()
                )))
            }
        },
    }
    if *budget > METADATA_BUDGET {
        return Err(HeaderError::Invalid(format!(
            "the metadata would take more than {} MiB in memory (at {}); real vocabularies take ~32 MiB",
            METADATA_BUDGET >> 20,
            what()
        )));
    }
    Ok(())
}

/// Walks and checks the whole header (see the module doc); allocates only in
/// proportion to bytes already checked, within the MAX_* limits.
pub(crate) fn scan(b: &[u8]) -> Result<Header<'_>, HeaderError> {
    if b.len() < 4 || &b[..4] != b"GGUF" {
        return Err(HeaderError::Invalid(format!(
            "the file does not start with the magic `GGUF` (found {:?})",
            String::from_utf8_lossy(&b[..b.len().min(4)])
        )));
    }
    let mut c = Cursor {
        b,
        pos: 4,
        v1: false,
    };
    let version = c.u32(&|| "the version".into())?;
    if !(1..=3).contains(&version) {
        let hint = if (1..=3).contains(&version.swap_bytes()) {
            " (this is a big-endian file; convert the model again without --bigendian)"
        } else {
            ""
        };
        return Err(HeaderError::Invalid(format!(
            "version {version}; zoo reads little-endian GGUF versions 1, 2 and 3{hint}"
        )));
    }
    c.v1 = version == 1;
    let tensor_count = c.len(&|| "the tensor count".into())?;
    let key_count = c.len(&|| "the metadata key count".into())?;
    for (n, max, what) in [
        (tensor_count, MAX_TENSORS, "tensors"),
        (key_count, MAX_KEYS, "metadata keys"),
    ] {
        if n > max {
            return Err(HeaderError::Invalid(format!(
                "the header declares {n} {what}, more than the {max} zoo accepts (real models have a few thousand at most); the count is corrupt"
            )));
        }
    }
    // Each key takes at least a length, one byte, a type and a one-byte value; each
    // tensor a length, one byte, n_dims, a type and an offset.
    let min_kv = c.prefix() + 1 + 4 + 1;
    let min_tensor = c.prefix() + 1 + 4 + 4 + 8;
    let needed = key_count * min_kv + tensor_count * min_tensor;
    if needed > c.remaining() {
        return Err(HeaderError::Truncated(format!(
            "the header ends early: it declares {key_count} metadata keys and {tensor_count} tensors, which need at least {needed} bytes, but only {} remain",
            c.remaining()
        )));
    }
    let mut budget = 0u64;
    let mut kvs = Vec::new();
    let mut keys = HashSet::new();
    for i in 0..key_count {
        let key = c.name(&|| format!("the name of metadata key #{i}"))?;
        if !keys.insert(key) {
            return Err(HeaderError::Invalid(format!(
                "metadata key `{key}` appears twice; each key appears once"
            )));
        }
        let what = || format!("metadata key `{key}`");
        let ty = c.u32(&what)?;
        let at = c.pos;
        let array = if ty == 9 && c.remaining() >= 4 + c.prefix() {
            let mut peek = Cursor {
                b,
                pos: at,
                v1: c.v1,
            };
            Some((peek.u32(&what)?, peek.len(&what)?))
        } else {
            None
        };
        skip_value(&mut c, ty, 0, &mut budget, &what)?;
        kvs.push(Kv {
            key,
            ty,
            at,
            array,
            v1: c.v1,
        });
    }
    let alignment = alignment(b, &kvs)?;
    let mut tensors = Vec::new();
    let mut names = HashSet::new();
    for i in 0..tensor_count {
        tensors.push(tensor_entry(&mut c, i, &mut names)?);
    }
    let data_offset = (c.pos as u64).div_ceil(alignment) * alignment;
    check_spans(b.len() as u64, data_offset, alignment, &tensors)?;
    Ok(Header {
        version,
        kvs,
        tensors,
        data_offset,
    })
}

/// `general.alignment`: absent (32), or an integer that is a non-zero power of two, as
/// llama.cpp requires.
fn alignment(b: &[u8], kvs: &[Kv]) -> Result<u64, HeaderError> {
    let Some(kv) = kvs.iter().find(|k| k.key == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    let a = match scalar(b, kv) {
        Some(Scalar::Int(a)) => a,
        _ => {
            return Err(HeaderError::Invalid(format!(
                "`general.alignment` is a {}; it should be an integer (llama.cpp writes u32 32)",
                type_name(kv.ty)
            )))
        }
    };
    if a <= 0 || a as u64 > MAX_ALIGNMENT || !(a as u64).is_power_of_two() {
        return Err(HeaderError::Invalid(format!(
            "`general.alignment` is {a}; it should be a power of two from 1 to {MAX_ALIGNMENT} (llama.cpp writes 32): the file is corrupt, convert it again"
        )));
    }
    Ok(a as u64)
}
