//! Checkpoints on disk: what a path holds, decided by content rather than extension
//! (format sniffing, unsupported formats with how to convert them), and the two
//! sources an architecture loads from.
//!
//! - `gguf.rs`: [`GgufSource`], the memory-mapped file; `gguf_header.rs`,
//!   `gguf_directory.rs`, `gguf_values.rs`, `gguf_keys.rs`: zoo's bounded header
//!   reader (checks before allocating, then candle's `Content`); `gguf_metadata.rs`:
//!   typed access to its metadata (errors name the key);
//! - `safetensors.rs`: [`SafetensorsSource`], the directory (shards and index
//!   checked); `safetensors_check.rs`: one file's header, bounded and validated;
//!   `hf_config.rs`: its config.json as transformers 4.x and 5.x write it;
//!   `hf_checks.rs`: the fields zoo reads, checked for type, range and agreement.

mod gguf;
mod gguf_directory;
mod gguf_header;
mod gguf_keys;
mod gguf_metadata;
mod gguf_values;
mod hf_checks;
mod hf_config;
mod safetensors;
mod safetensors_check;

use std::fs::File;
use std::io::Read;
use std::path::Path;

pub use gguf::{parse_gguf, GgufSource};
pub use gguf_metadata::as_u64;
pub use hf_checks::MAX_CONTEXT;
pub use safetensors::SafetensorsSource;
pub use safetensors_check::parse_safetensors;

use crate::registry::ArchId;
use crate::{Error, Format, Result};

/// A checkpoint on disk, opened and sniffed, ready for an architecture's load function.
#[derive(Debug)]
pub enum ModelSource {
    Safetensors(SafetensorsSource),
    Gguf(GgufSource),
}

impl ModelSource {
    /// Opens `path`: a `.gguf` file, a safetensors file (its directory is used) or a
    /// model directory. The format is decided by content.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
        if meta.is_dir() {
            return SafetensorsSource::open_dir(path).map(ModelSource::Safetensors);
        }
        match sniff_file(path)? {
            Sniffed::Gguf => GgufSource::open(path).map(ModelSource::Gguf),
            Sniffed::Safetensors => {
                let dir = path
                    .parent()
                    .filter(|p| !p.as_os_str().is_empty())
                    .unwrap_or(Path::new("."));
                SafetensorsSource::open_dir(dir).map(ModelSource::Safetensors)
            }
        }
    }

    pub fn format(&self) -> Format {
        match self {
            ModelSource::Safetensors(_) => Format::Safetensors,
            ModelSource::Gguf(_) => Format::Gguf,
        }
    }

    /// The checkpoint's size on disk: the GGUF file, or the sum of the safetensors
    /// shards.
    pub fn checkpoint_bytes(&self) -> u64 {
        match self {
            ModelSource::Gguf(g) => g.file_size(),
            ModelSource::Safetensors(s) => s
                .weights
                .iter()
                .filter_map(|p| std::fs::metadata(p).ok())
                .map(|m| m.len())
                .sum(),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            ModelSource::Safetensors(s) => &s.dir,
            ModelSource::Gguf(g) => &g.path,
        }
    }

    /// The architecture strings the checkpoint declares, in the order detection tries them.
    pub fn architecture_ids(&self) -> Vec<(ArchId, String)> {
        match self {
            ModelSource::Safetensors(s) => {
                let mut ids = Vec::new();
                if let Some(a) = s.config.get("architectures").and_then(|v| v.as_array()) {
                    ids.extend(
                        a.iter()
                            .filter_map(|v| v.as_str())
                            .map(|v| (ArchId::HfArchitecture, v.to_string())),
                    );
                }
                if let Some(t) = s.config.get("model_type").and_then(|v| v.as_str()) {
                    ids.push((ArchId::HfModelType, t.to_string()));
                }
                ids
            }
            ModelSource::Gguf(g) => g
                .architecture()
                .map(|a| vec![(ArchId::Gguf, a.to_string())])
                .unwrap_or_default(),
        }
    }

    /// Checks what every architecture of the checkpoint's format needs before its
    /// load function runs: for GGUF, what llama.cpp requires of every model
    /// (`general.architecture`, `{arch}.block_count`, `embedding_length`,
    /// `context_length`) and `token_embd.weight`; for safetensors, `vocab_size`. `zoo inspect` and loading both call it, so that what
    /// inspect calls valid loads this far.
    pub fn check_loadable(&self) -> Result<()> {
        match self {
            ModelSource::Safetensors(s) => hf_checks::check_required(&s.config_path, &s.config),
            ModelSource::Gguf(g) => {
                for suffix in ["block_count", "embedding_length", "context_length"] {
                    let key = g.arch_key(suffix)?;
                    if g.get(&key).is_none() {
                        return Err(Error::GgufMetadata {
                            path: g.path.clone(),
                            key,
                            problem: "is missing, and every model needs it (the converter that wrote the file left it out: convert the model again with a recent llama.cpp)".into(),
                        });
                    }
                }
                if !g.has_tensor("token_embd.weight") {
                    return Err(Error::InvalidGguf {
                        path: g.path.clone(),
                        detail: "there is no tensor `token_embd.weight` (the token embedding every architecture reads): tensors are missing, fetch or convert the file again".into(),
                    });
                }
                Ok(())
            }
        }
    }

    pub fn as_safetensors(&self) -> Option<&SafetensorsSource> {
        match self {
            ModelSource::Safetensors(s) => Some(s),
            ModelSource::Gguf(_) => None,
        }
    }

    pub fn as_gguf(&self) -> Option<&GgufSource> {
        match self {
            ModelSource::Gguf(g) => Some(g),
            ModelSource::Safetensors(_) => None,
        }
    }
}

pub(crate) enum Sniffed {
    Gguf,
    Safetensors,
}

pub(crate) fn sniff_file(path: &Path) -> Result<Sniffed> {
    let mut f = File::open(path).map_err(|e| Error::io(path, e))?;
    let len = f.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = [0u8; 16];
    let n = read_up_to(&mut f, &mut head).map_err(|e| Error::io(path, e))?;
    let head = &head[..n];
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .map(|e| e.to_ascii_lowercase())
        .unwrap_or_default();
    let unsupported = |format, hint| Error::UnsupportedFormat {
        path: path.to_path_buf(),
        format,
        hint,
    };
    if head.starts_with(b"GGUF") {
        return Ok(Sniffed::Gguf);
    }
    if n >= 9 {
        let header_len = u64::from_le_bytes(head[..8].try_into().expect("8 bytes"));
        if head[8] == b'{' && header_len.saturating_add(8) <= len {
            return Ok(Sniffed::Safetensors);
        }
    }
    // Named safetensors: its header's checks say what is wrong with it.
    if ext == "safetensors" {
        return Ok(Sniffed::Safetensors);
    }
    // Older llama.cpp files: 'ggml', 'ggmf', 'ggjt' written as little-endian u32.
    if [b"lmgg", b"fmgg", b"tjgg"]
        .iter()
        .any(|m| head.starts_with(*m))
    {
        return Err(unsupported(GGML_LEGACY, HINT_GGML));
    }
    if head.starts_with(b"PK\x03\x04") && matches!(ext.as_str(), "pt" | "pth" | "bin" | "ckpt") {
        return Err(unsupported(PYTORCH, HINT_PYTORCH));
    }
    if head.first() == Some(&0x80) && matches!(head.get(1), Some(2..=5)) {
        return Err(unsupported(PYTORCH, HINT_PYTORCH));
    }
    if head.starts_with(b"\x89HDF") {
        return Err(unsupported(TENSORFLOW, HINT_TENSORFLOW));
    }
    match ext.as_str() {
        "pt" | "pth" | "bin" | "ckpt" => return Err(unsupported(PYTORCH, HINT_PYTORCH)),
        "pb" | "h5" => return Err(unsupported(TENSORFLOW, HINT_TENSORFLOW)),
        "onnx" => return Err(unsupported(ONNX, HINT_ONNX)),
        _ => {}
    }
    Err(Error::UnknownFormat {
        path: path.to_path_buf(),
        found: describe_bytes(head, len),
    })
}

pub(crate) const PYTORCH: &str = "PyTorch pickle (.bin/.pt/.pth)";
pub(crate) const HINT_PYTORCH: &str = "convert it to safetensors (transformers: `model.save_pretrained(dir, safe_serialization=True)`) or to GGUF (llama.cpp's convert_hf_to_gguf.py)";
pub(crate) const TENSORFLOW: &str = "TensorFlow/Keras (.pb/.h5)";
pub(crate) const HINT_TENSORFLOW: &str = "load it in transformers with `from_tf=True` and save it with `save_pretrained(dir, safe_serialization=True)`";
pub(crate) const ONNX: &str = "ONNX";
pub(crate) const HINT_ONNX: &str = "zoo runs safetensors and GGUF weights; export the original model to safetensors or GGUF instead";
const GGML_LEGACY: &str = "legacy GGML (pre-GGUF llama.cpp)";
const HINT_GGML: &str = "convert it to GGUF with llama.cpp's convert_llama_ggml_to_gguf.py, or fetch a GGUF build of the model";

fn describe_bytes(head: &[u8], len: u64) -> String {
    if head.is_empty() {
        return "an empty file".into();
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let text: String = head
        .iter()
        .take(8)
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        })
        .collect();
    format!("{len} bytes starting with {} ({text:?})", hex.join(" "))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}
