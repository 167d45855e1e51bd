//! Typed access to GGUF metadata, with errors that name the key.

use candle_core::quantized::gguf_file::Value;

use super::GgufSource;
use crate::{Error, Result};

/// llama.cpp's end-of-generation token texts, used the way llama.cpp uses them: a
/// control token with one of these texts ends generation even when the metadata
/// names only one eos id.
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "<|end_of_text|>",
    "<｜end▁of▁sentence｜>",
];

impl GgufSource {
    fn missing(&self, key: &str, problem: impl Into<String>) -> Error {
        Error::GgufMetadata {
            path: self.path.clone(),
            key: key.to_string(),
            problem: problem.into(),
        }
    }

    /// The raw value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.content.metadata.get(key)
    }

    fn need(&self, key: &str) -> Result<&Value> {
        self.get(key)
            .ok_or_else(|| self.missing(key, "is missing (the converter that wrote this file left it out; convert again with a recent llama.cpp)"))
    }

    /// `key` as an integer (any integer width), required.
    pub fn u64(&self, key: &str) -> Result<u64> {
        let v = self.need(key)?;
        as_u64(v).ok_or_else(|| {
            self.missing(
                key,
                format!("should be an integer but is {:?}", v.value_type()),
            )
        })
    }

    /// `key` as an integer, if present.
    pub fn u64_opt(&self, key: &str) -> Result<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.u64(key).map(Some),
        }
    }

    /// `key` as a float (f32 or f64), required.
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.need(key)?;
        match v {
            Value::F32(x) => Ok(*x as f64),
            Value::F64(x) => Ok(*x),
            _ => Err(self.missing(
                key,
                format!("should be a float but is {:?}", v.value_type()),
            )),
        }
    }

    /// `key` as a float, if present.
    pub fn f64_opt(&self, key: &str) -> Result<Option<f64>> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.f64(key).map(Some),
        }
    }

    /// `key` as a string, if present.
    pub fn str_opt(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(v) => Err(self.missing(
                key,
                format!("should be a string but is {:?}", v.value_type()),
            )),
        }
    }

    /// `key` as a bool, if present.
    pub fn bool_opt(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => {
                Err(self.missing(key, format!("should be a bool but is {:?}", v.value_type())))
            }
        }
    }

    /// `key` as an array, required.
    pub fn array(&self, key: &str) -> Result<&[Value]> {
        match self.need(key)? {
            Value::Array(a) => Ok(a.as_slice()),
            v => Err(self.missing(
                key,
                format!("should be an array but is {:?}", v.value_type()),
            )),
        }
    }

    /// `key` as an array of strings, required.
    pub fn str_array(&self, key: &str) -> Result<Vec<&str>> {
        self.array(key)?
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.as_str()),
                other => Err(self.missing(
                    key,
                    format!("should hold strings but holds {:?}", other.value_type()),
                )),
            })
            .collect()
    }

    /// `{general.architecture}.{suffix}`, the per-architecture keys llama.cpp writes.
    pub fn arch_key(&self, suffix: &str) -> Result<String> {
        let arch = self
            .architecture()
            .ok_or_else(|| self.missing("general.architecture", "is missing"))?;
        Ok(format!("{arch}.{suffix}"))
    }

    /// `{arch}.context_length`.
    pub fn context_length(&self) -> Result<usize> {
        Ok(self.u64(&self.arch_key("context_length")?)? as usize)
    }

    /// The vocabulary size: the length of `tokenizer.ggml.tokens`, else `{arch}.vocab_size`.
    pub fn vocab_size(&self) -> Result<usize> {
        if let Some(size) = self.vocabulary().and_then(|v| v.size) {
            return Ok(size);
        }
        if let Some(Value::Array(a)) = self.get("tokenizer.ggml.tokens") {
            return Ok(a.len());
        }
        Ok(self.u64(&self.arch_key("vocab_size")?)? as usize)
    }

    /// The end-of-generation ids, as llama.cpp collects them: `eos`, `eot`, `eom`
    /// and control tokens whose text marks an end of turn.
    pub fn eos_token_ids(&self) -> Result<Vec<u32>> {
        let mut ids = self.vocabulary().map(|v| v.eos.clone()).unwrap_or_default();
        for key in [
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.eot_token_id",
            "tokenizer.ggml.eom_token_id",
        ] {
            if let Some(id) = self.u64_opt(key)? {
                ids.push(id as u32);
            }
        }
        if let (Some(Value::Array(tokens)), Some(Value::Array(types))) = (
            self.get("tokenizer.ggml.tokens"),
            self.get("tokenizer.ggml.token_type"),
        ) {
            for (i, (tok, ty)) in tokens.iter().zip(types).enumerate() {
                let control = as_u64(ty) == Some(3);
                if let Value::String(t) = tok {
                    if control && EOG_TEXTS.contains(&t.as_str()) {
                        ids.push(i as u32);
                    }
                }
            }
        }
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            return Err(self.missing(
                "tokenizer.ggml.eos_token_id",
                "is missing and no end-of-turn token was found",
            ));
        }
        Ok(ids)
    }

    /// Parameter count and the quantization types with their tensor counts.
    pub fn tensor_summary(&self) -> (u64, Vec<(String, usize)>) {
        let mut params = 0u64;
        let mut types: std::collections::BTreeMap<String, usize> = Default::default();
        for info in self.content.tensor_infos.values() {
            params += info.shape.elem_count() as u64;
            *types.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
        }
        (params, types.into_iter().collect())
    }
}

/// Any integer GGUF value as u64 (negative values are rejected).
pub fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U8(x) => Some(*x as u64),
        Value::U16(x) => Some(*x as u64),
        Value::U32(x) => Some(*x as u64),
        Value::U64(x) => Some(*x),
        Value::I8(x) => u64::try_from(*x).ok(),
        Value::I16(x) => u64::try_from(*x).ok(),
        Value::I32(x) => u64::try_from(*x).ok(),
        Value::I64(x) => u64::try_from(*x).ok(),
        _ => None,
    }
}
