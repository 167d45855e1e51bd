//! A GGUF file as editable parts, written byte by byte: read from a committed valid
//! fixture, one thing broken, written again. Any field can be set to a value no
//! converter would write (counts, lengths, types, offsets), which candle's and
//! gguf-rs-lib's writers refuse to do.

use std::path::Path;

use candle_core::quantized::gguf_file;

/// A metadata value as bytes: a scalar (type id and little-endian bytes), a string
/// (bytes, length written before them) or an array (element type id, elements).
#[derive(Debug, Clone)]
pub enum Val {
    Raw(u32, Vec<u8>),
    Str(Vec<u8>),
    /// Element type id, elements; `len` overrides the written length.
    Arr(u32, Vec<Val>, Option<u64>),
}

impl Val {
    pub fn u32(x: u32) -> Val {
        Val::Raw(4, x.to_le_bytes().to_vec())
    }
    pub fn f32(x: f32) -> Val {
        Val::Raw(6, x.to_le_bytes().to_vec())
    }
    pub fn str(s: &str) -> Val {
        Val::Str(s.as_bytes().to_vec())
    }
    pub fn bool_byte(b: u8) -> Val {
        Val::Raw(7, vec![b])
    }

    /// The GGUF value type id.
    pub fn ty(&self) -> u32 {
        match self {
            Val::Raw(t, _) => *t,
            Val::Str(_) => 8,
            Val::Arr(..) => 9,
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        match self {
            Val::Raw(_, b) => out.extend(b),
            Val::Str(s) => {
                out.extend((s.len() as u64).to_le_bytes());
                out.extend(s);
            }
            Val::Arr(et, items, len) => {
                out.extend(et.to_le_bytes());
                out.extend(len.unwrap_or(items.len() as u64).to_le_bytes());
                for v in items {
                    v.write(out);
                }
            }
        }
    }

    fn from_candle(v: &gguf_file::Value) -> Val {
        use gguf_file::Value as V;
        match v {
            V::U8(x) => Val::Raw(0, vec![*x]),
            V::I8(x) => Val::Raw(1, vec![*x as u8]),
            V::U16(x) => Val::Raw(2, x.to_le_bytes().to_vec()),
            V::I16(x) => Val::Raw(3, x.to_le_bytes().to_vec()),
            V::U32(x) => Val::Raw(4, x.to_le_bytes().to_vec()),
            V::I32(x) => Val::Raw(5, x.to_le_bytes().to_vec()),
            V::F32(x) => Val::Raw(6, x.to_le_bytes().to_vec()),
            V::Bool(x) => Val::Raw(7, vec![*x as u8]),
            V::String(s) => Val::str(s),
            V::U64(x) => Val::Raw(10, x.to_le_bytes().to_vec()),
            V::I64(x) => Val::Raw(11, x.to_le_bytes().to_vec()),
            V::F64(x) => Val::Raw(12, x.to_le_bytes().to_vec()),
            V::Array(items) => {
                let items: Vec<Val> = items.iter().map(Val::from_candle).collect();
                Val::Arr(items.first().map_or(4, |v| v.ty()), items, None)
            }
        }
    }
}

/// One tensor: name, dimensions (innermost first), ggml type id, its bytes, and an
/// offset to write instead of the one its place gives.
#[derive(Debug, Clone)]
pub struct RawTensor {
    pub name: Vec<u8>,
    pub ne: Vec<u64>,
    pub ty: u32,
    pub data: Vec<u8>,
    pub offset: Option<u64>,
}

/// A whole GGUF file.
#[derive(Debug, Clone)]
pub struct GgufParts {
    pub magic: [u8; 4],
    pub version: u32,
    /// Counts to write instead of the real ones.
    pub tensor_count: Option<u64>,
    pub kv_count: Option<u64>,
    pub kvs: Vec<(Vec<u8>, Val)>,
    pub tensors: Vec<RawTensor>,
    /// The alignment the data is laid out with (32 unless a test changes it).
    pub alignment: u64,
}

fn ggml_id(t: candle_core::quantized::GgmlDType) -> u32 {
    use candle_core::quantized::GgmlDType as G;
    match t {
        G::F32 => 0,
        G::F16 => 1,
        G::Q4_0 => 2,
        G::Q4_1 => 3,
        G::Q5_0 => 6,
        G::Q5_1 => 7,
        G::Q8_0 => 8,
        G::Q8_1 => 9,
        G::Q2K => 10,
        G::Q3K => 11,
        G::Q4K => 12,
        G::Q5K => 13,
        G::Q6K => 14,
        G::Q8K => 15,
        G::BF16 => 30,
    }
}

impl GgufParts {
    /// Reads a valid GGUF file (a committed fixture) into parts, in file order.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let bytes = std::fs::read(path)?;
        let content = gguf_file::Content::read(&mut std::io::Cursor::new(&bytes))?;
        // Metadata keys in file order: candle keeps a HashMap, so find each key's
        // position in the bytes (a key is written as its length and its text).
        let mut kvs: Vec<(usize, Vec<u8>, Val)> = content
            .metadata
            .iter()
            .map(|(k, v)| {
                let mut needle = (k.len() as u64).to_le_bytes().to_vec();
                needle.extend(k.as_bytes());
                let at = bytes.windows(needle.len()).position(|w| *w == needle[..]);
                (
                    at.unwrap_or(usize::MAX),
                    k.as_bytes().to_vec(),
                    Val::from_candle(v),
                )
            })
            .collect();
        kvs.sort_by_key(|(at, ..)| *at);
        let mut tensors: Vec<RawTensor> = content
            .tensor_infos
            .iter()
            .map(|(name, info)| {
                let t = info.ggml_dtype;
                let size = info.shape.elem_count() / t.block_size() * t.type_size();
                let start = (content.tensor_data_offset + info.offset) as usize;
                let mut ne: Vec<u64> = info.shape.dims().iter().map(|&d| d as u64).collect();
                ne.reverse();
                RawTensor {
                    name: name.as_bytes().to_vec(),
                    ne,
                    ty: ggml_id(t),
                    data: bytes[start..start + size].to_vec(),
                    offset: Some(info.offset),
                }
            })
            .collect();
        tensors.sort_by_key(|t| t.offset);
        for t in &mut tensors {
            t.offset = None;
        }
        Ok(Self {
            magic: *b"GGUF",
            version: 3,
            tensor_count: None,
            kv_count: None,
            kvs: kvs.into_iter().map(|(_, k, v)| (k, v)).collect(),
            tensors,
            alignment: 32,
        })
    }

    /// Sets `key` (replacing its value where it is, else appended).
    pub fn set(&mut self, key: &str, v: Val) -> &mut Self {
        match self.kvs.iter_mut().find(|(k, _)| k == key.as_bytes()) {
            Some((_, old)) => *old = v,
            None => self.kvs.push((key.as_bytes().to_vec(), v)),
        }
        self
    }

    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.kvs.retain(|(k, _)| k != key.as_bytes());
        self
    }

    pub fn get(&self, key: &str) -> Option<&Val> {
        self.kvs
            .iter()
            .find(|(k, _)| k == key.as_bytes())
            .map(|(_, v)| v)
    }

    pub fn tensor(&mut self, name: &str) -> &mut RawTensor {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name.as_bytes())
            .unwrap_or_else(|| panic!("the fixture has no tensor {name}"))
    }

    pub fn remove_tensors(&mut self, f: impl Fn(&str) -> bool) -> &mut Self {
        self.tensors
            .retain(|t| !f(&String::from_utf8_lossy(&t.name)));
        self
    }

    /// The file's bytes: each tensor's data at the next aligned offset (its written
    /// offset may be overridden), the data section after the aligned header.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        out.extend(self.magic);
        out.extend(self.version.to_le_bytes());
        let count = |n: u64, out: &mut Vec<u8>| out.extend(n.to_le_bytes());
        count(
            self.tensor_count.unwrap_or(self.tensors.len() as u64),
            &mut out,
        );
        count(self.kv_count.unwrap_or(self.kvs.len() as u64), &mut out);
        for (k, v) in &self.kvs {
            out.extend((k.len() as u64).to_le_bytes());
            out.extend(k);
            out.extend(v.ty().to_le_bytes());
            v.write(&mut out);
        }
        let align = |n: u64| n.div_ceil(self.alignment.max(1)) * self.alignment.max(1);
        let mut places = Vec::new();
        let mut next = 0u64;
        for t in &self.tensors {
            out.extend((t.name.len() as u64).to_le_bytes());
            out.extend(&t.name);
            out.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                out.extend(d.to_le_bytes());
            }
            out.extend(t.ty.to_le_bytes());
            out.extend(t.offset.unwrap_or(next).to_le_bytes());
            places.push(next);
            next = align(next + t.data.len() as u64);
        }
        let data_start = align(out.len() as u64) as usize;
        out.resize(data_start, 0);
        for (t, at) in self.tensors.iter().zip(places) {
            out.resize(data_start + at as usize, 0);
            out.extend(&t.data);
        }
        out
    }
}
