//! Values of a checked GGUF header: the ggml tensor types (candle's, and the names of
//! the others for errors), scalar values read in place for the checks, and the
//! conversion of a checked header into candle's `gguf_file::Content`.

use std::collections::HashMap;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::GgmlDType;

use super::gguf_header::{Cursor, Header, Kv, MAX_ARRAY, MAX_STRING};

/// The tensor types candle computes, as the error lists them.
pub(super) const SUPPORTED: &str =
    "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q8_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K and Q8_K";

/// A ggml type id as candle's type, or the name of the type it is (for the error).
pub(super) fn ggml_type(id: u32) -> Result<GgmlDType, String> {
    use GgmlDType as G;
    Ok(match id {
        0 => G::F32,
        1 => G::F16,
        2 => G::Q4_0,
        3 => G::Q4_1,
        6 => G::Q5_0,
        7 => G::Q5_1,
        8 => G::Q8_0,
        9 => G::Q8_1,
        10 => G::Q2K,
        11 => G::Q3K,
        12 => G::Q4K,
        13 => G::Q5K,
        14 => G::Q6K,
        15 => G::Q8K,
        30 => G::BF16,
        _ => {
            const OTHERS: [(u32, &str); 22] = [
                (4, "Q4_2 (removed from ggml)"),
                (5, "Q4_3 (removed from ggml)"),
                (16, "IQ2_XXS"),
                (17, "IQ2_XS"),
                (18, "IQ3_XXS"),
                (19, "IQ1_S"),
                (20, "IQ4_NL"),
                (21, "IQ3_S"),
                (22, "IQ2_S"),
                (23, "IQ4_XS"),
                (24, "I8"),
                (25, "I16"),
                (26, "I32"),
                (27, "I64"),
                (28, "F64"),
                (29, "IQ1_M"),
                (31, "Q4_0_4_4 (removed from ggml)"),
                (32, "Q4_0_4_8 (removed from ggml)"),
                (33, "Q4_0_8_8 (removed from ggml)"),
                (34, "TQ1_0"),
                (35, "TQ2_0"),
                (39, "MXFP4"),
            ];
            return Err(match OTHERS.iter().find(|(i, _)| *i == id) {
                Some((_, n)) => format!("ggml type {n} (id {id})"),
                None => format!("ggml type id {id}, which no ggml version defines"),
            });
        }
    })
}

/// A scalar metadata value, read from the file for the checks.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Scalar<'a> {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(&'a [u8]),
}

fn read_scalar<'a>(c: &mut Cursor<'a>, ty: u32) -> Option<Scalar<'a>> {
    let none = &String::new;
    let bytes = |c: &mut Cursor<'a>, n| c.take(n, none).ok();
    Some(match ty {
        0 => Scalar::Int(bytes(c, 1)?[0] as i128),
        1 => Scalar::Int(bytes(c, 1)?[0] as i8 as i128),
        2 => Scalar::Int(u16::from_le_bytes(bytes(c, 2)?.try_into().ok()?) as i128),
        3 => Scalar::Int(i16::from_le_bytes(bytes(c, 2)?.try_into().ok()?) as i128),
        4 => Scalar::Int(u32::from_le_bytes(bytes(c, 4)?.try_into().ok()?) as i128),
        5 => Scalar::Int(i32::from_le_bytes(bytes(c, 4)?.try_into().ok()?) as i128),
        10 => Scalar::Int(u64::from_le_bytes(bytes(c, 8)?.try_into().ok()?) as i128),
        11 => Scalar::Int(i64::from_le_bytes(bytes(c, 8)?.try_into().ok()?) as i128),
        6 => Scalar::Float(f32::from_le_bytes(bytes(c, 4)?.try_into().ok()?) as f64),
        12 => Scalar::Float(f64::from_le_bytes(bytes(c, 8)?.try_into().ok()?)),
        7 => Scalar::Bool(bytes(c, 1)?[0] == 1),
        8 => Scalar::Str(c.string(MAX_STRING, none).ok()?),
        _ => return None,
    })
}

/// The value of a scalar entry (`None` for an array).
pub(crate) fn scalar<'a>(b: &'a [u8], kv: &Kv) -> Option<Scalar<'a>> {
    let mut c = Cursor {
        b,
        pos: kv.at,
        v1: kv.v1,
    };
    read_scalar(&mut c, kv.ty)
}

/// The elements of an array entry of scalars, lazily (the header was checked).
pub(crate) fn array_scalars<'a>(b: &'a [u8], kv: &Kv) -> impl Iterator<Item = Scalar<'a>> + 'a {
    let v1 = kv.v1;
    let (et, n) = kv.array.unwrap_or((0, 0));
    let mut c = Cursor {
        b,
        pos: kv.at + 4 + if v1 { 4 } else { 8 },
        v1,
    };
    (0..n).map_while(move |_| read_scalar(&mut c, et))
}

/// Builds candle's `Content` from a header that passed [`scan`].
pub(crate) fn build(b: &[u8], h: &Header) -> gguf_file::Content {
    let v1 = h.version == 1;
    let mut metadata = HashMap::with_capacity(h.kvs.len());
    for kv in &h.kvs {
        let mut c = Cursor { b, pos: kv.at, v1 };
        metadata.insert(kv.key.to_string(), read_value(&mut c, kv.ty));
    }
    let tensor_infos = h
        .tensors
        .iter()
        .map(|t| {
            let dims: Vec<usize> = t.ne.iter().rev().map(|&d| d as usize).collect();
            let info = gguf_file::TensorInfo {
                ggml_dtype: t.dtype,
                shape: candle_core::Shape::from(dims),
                offset: t.offset,
            };
            (t.name.to_string(), info)
        })
        .collect();
    gguf_file::Content {
        magic: match h.version {
            1 => gguf_file::VersionedMagic::GgufV1,
            2 => gguf_file::VersionedMagic::GgufV2,
            _ => gguf_file::VersionedMagic::GgufV3,
        },
        metadata,
        tensor_infos,
        tensor_data_offset: h.data_offset,
    }
}

/// One value of a checked header (strings as candle reads them: trailing NULs dropped,
/// invalid UTF-8 replaced).
fn read_value(c: &mut Cursor, ty: u32) -> Value {
    if ty == 9 {
        let none = &String::new;
        let et = c.u32(none).unwrap_or(0);
        let n = c.len(none).unwrap_or(0);
        let mut v = Vec::with_capacity(n.min(MAX_ARRAY) as usize);
        for _ in 0..n {
            v.push(read_value(c, et));
        }
        return Value::Array(v);
    }
    match read_scalar(c, ty) {
        Some(Scalar::Int(x)) => match ty {
            0 => Value::U8(x as u8),
            1 => Value::I8(x as i8),
            2 => Value::U16(x as u16),
            3 => Value::I16(x as i16),
            4 => Value::U32(x as u32),
            5 => Value::I32(x as i32),
            10 => Value::U64(x as u64),
            _ => Value::I64(x as i64),
        },
        Some(Scalar::Float(x)) if ty == 6 => Value::F32(x as f32),
        Some(Scalar::Float(x)) => Value::F64(x),
        Some(Scalar::Bool(x)) => Value::Bool(x),
        Some(Scalar::Str(s)) => {
            let end = s.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
            Value::String(String::from_utf8_lossy(&s[..end]).into_owned())
        }
        None => Value::U8(0),
    }
}
