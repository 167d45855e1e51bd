//! Format sniffing: what a path holds, decided by content rather than extension.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;

use crate::registry::ArchId;
use crate::{Error, Format, Result};

/// A checkpoint on disk, opened and sniffed, ready for an architecture's load function.
#[derive(Debug)]
pub enum ModelSource {
    Safetensors(SafetensorsSource),
    Gguf(GgufSource),
}

/// A directory with config.json, `*.safetensors` and (usually) tokenizer.json.
#[derive(Debug)]
pub struct SafetensorsSource {
    pub dir: PathBuf,
    pub config_path: PathBuf,
    /// config.json as read.
    pub config: serde_json::Value,
    /// The weight files, in order (one, or the shards named by the index).
    pub weights: Vec<PathBuf>,
    pub tokenizer_json: Option<PathBuf>,
    pub tokenizer_config: Option<PathBuf>,
}

/// A GGUF file: its metadata and tensor directory, with the file memory-mapped.
#[derive(Debug)]
pub struct GgufSource {
    pub path: PathBuf,
    pub content: gguf_file::Content,
    mmap: Arc<memmap2::Mmap>,
    /// What the models need of the vocabulary once its arrays have moved to the
    /// tokenizer ([`GgufSource::split_vocabulary`]).
    vocabulary: Option<VocabularySummary>,
}

/// The vocabulary size (where `tokenizer.ggml.tokens` gave it) and the end-of-generation
/// ids, kept when the vocabulary arrays leave the metadata.
#[derive(Debug, Clone)]
pub(crate) struct VocabularySummary {
    pub(crate) size: Option<usize>,
    pub(crate) eos: Vec<u32>,
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

enum Sniffed {
    Gguf,
    Safetensors,
}

fn sniff_file(path: &Path) -> Result<Sniffed> {
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

const PYTORCH: &str = "PyTorch pickle (.bin/.pt/.pth)";
const HINT_PYTORCH: &str = "convert it to safetensors (transformers: `model.save_pretrained(dir, safe_serialization=True)`) or to GGUF (llama.cpp's convert_hf_to_gguf.py)";
const TENSORFLOW: &str = "TensorFlow/Keras (.pb/.h5)";
const HINT_TENSORFLOW: &str = "load it in transformers with `from_tf=True` and save it with `save_pretrained(dir, safe_serialization=True)`";
const ONNX: &str = "ONNX";
const HINT_ONNX: &str = "zoo runs safetensors and GGUF weights; export the original model to safetensors or GGUF instead";
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

impl SafetensorsSource {
    fn open_dir(dir: &Path) -> Result<Self> {
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            if let Some(gguf) = first_with_ext(dir, "gguf") {
                return Err(Error::MissingFile {
                    path: dir.to_path_buf(),
                    what: "config.json",
                    hint: format!(
                        "this directory holds a GGUF file; pass the file itself: {}",
                        gguf.display()
                    ),
                });
            }
            return Err(Error::MissingFile {
                path: dir.to_path_buf(),
                what: "config.json",
                hint: "a safetensors model directory needs the config.json that transformers writes beside the weights".into(),
            });
        }
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: config_path.clone(),
            what: "JSON file".into(),
            detail: e.to_string(),
            hint: "config.json must be the JSON that transformers writes".into(),
        })?;
        let weights = weight_files(dir)?;
        let tokenizer_json = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
        let tokenizer_config = Some(dir.join("tokenizer_config.json")).filter(|p| p.is_file());
        Ok(Self {
            dir: dir.to_path_buf(),
            config_path,
            config,
            weights,
            tokenizer_json,
            tokenizer_config,
        })
    }

    /// Deserialises config.json into an architecture's config type, turning a missing
    /// or mistyped field into an error that names it.
    pub fn parse_config<T: serde::de::DeserializeOwned>(&self, arch: &str) -> Result<T> {
        self.parse_config_value(arch, self.config.clone())
    }

    /// Memory-maps the weights for candle: f32 on CPU, bf16 on an accelerator.
    pub fn var_builder(
        &self,
        device: &candle_core::Device,
    ) -> Result<(candle_nn::VarBuilder<'static>, candle_core::DType)> {
        let dtype = if device.is_cpu() {
            candle_core::DType::F32
        } else {
            candle_core::DType::BF16
        };
        // SAFETY: the files are memory-mapped read-only; they must not change while loaded.
        let vb = unsafe {
            candle_nn::VarBuilder::from_mmaped_safetensors(&self.weights, dtype, device)?
        };
        Ok((vb, dtype))
    }
}

fn first_with_ext(dir: &Path, ext: &str) -> Option<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some(ext))
        .collect();
    v.sort();
    v.into_iter().next()
}

fn weight_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let index = dir.join("model.safetensors.index.json");
    let files = if index.is_file() {
        let text = std::fs::read_to_string(&index).map_err(|e| Error::io(&index, e))?;
        let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| Error::Config {
            path: index.clone(),
            what: "safetensors index".into(),
            detail: e.to_string(),
            hint: "the index must be JSON with a `weight_map`".into(),
        })?;
        let map = v
            .get("weight_map")
            .and_then(|m| m.as_object())
            .ok_or_else(|| Error::Config {
                path: index.clone(),
                what: "safetensors index".into(),
                detail: "no `weight_map` object".into(),
                hint: "the index must map every tensor name to its shard file".into(),
            })?;
        let mut files: Vec<PathBuf> = map
            .values()
            .filter_map(|f| f.as_str())
            .map(|f| dir.join(f))
            .collect();
        files.sort();
        files.dedup();
        files
    } else {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("safetensors"))
            .collect();
        files.sort();
        files
    };
    if files.is_empty() {
        for (name, format, hint) in [
            ("pytorch_model.bin", PYTORCH, HINT_PYTORCH),
            ("model.pt", PYTORCH, HINT_PYTORCH),
            ("tf_model.h5", TENSORFLOW, HINT_TENSORFLOW),
            ("model.onnx", ONNX, HINT_ONNX),
        ] {
            if dir.join(name).is_file() {
                return Err(Error::UnsupportedFormat {
                    path: dir.join(name),
                    format,
                    hint,
                });
            }
        }
        return Err(Error::MissingFile {
            path: dir.to_path_buf(),
            what: "*.safetensors weights",
            hint: "put model.safetensors (or the shards and model.safetensors.index.json) beside config.json".into(),
        });
    }
    for f in &files {
        if !f.is_file() {
            return Err(Error::MissingFile {
                path: f.clone(),
                what: "weight shard named by model.safetensors.index.json",
                hint: "copy every shard the index names into the directory".into(),
            });
        }
        if !matches!(sniff_file(f)?, Sniffed::Safetensors) {
            return Err(Error::UnknownFormat {
                path: f.clone(),
                found: "a file named .safetensors without a safetensors header".into(),
            });
        }
    }
    Ok(files)
}

/// Where a tensor's bytes lie in the file: start and length (saturating; `open`
/// checks the end against the file's size).
fn tensor_span(data_offset: u64, info: &gguf_file::TensorInfo) -> (u64, u64) {
    let dtype = info.ggml_dtype;
    let len = (info.shape.elem_count() / dtype.block_size() * dtype.type_size()) as u64;
    (data_offset.saturating_add(info.offset), len)
}

impl GgufSource {
    /// Memory-maps and parses a GGUF file, checking that every tensor lies inside it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; zoo does not write to model files while they
        // are loaded, and documents that other programs must not either.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let mut cursor = std::io::Cursor::new(&mmap[..]);
        let content =
            gguf_file::Content::read(&mut cursor).map_err(|e| gguf_read_error(path, e))?;
        let len = mmap.len() as u64;
        let mut infos: Vec<(&String, &gguf_file::TensorInfo)> =
            content.tensor_infos.iter().collect();
        infos.sort_by_key(|(_, i)| i.offset);
        for (name, info) in infos {
            let elems = info.shape.elem_count();
            let block = info.ggml_dtype.block_size();
            if elems % block != 0 {
                return Err(Error::InvalidGguf {
                    path: path.to_path_buf(),
                    detail: format!("tensor `{name}` has {elems} elements, not a multiple of the {:?} block size {block}", info.ggml_dtype),
                });
            }
            let (start, size) = tensor_span(content.tensor_data_offset, info);
            let end = start.saturating_add(size);
            if end > len {
                return Err(Error::TruncatedGguf {
                    path: path.to_path_buf(),
                    detail: format!(
                        "tensor `{name}` ends at byte {end} but the file has {len} bytes"
                    ),
                });
            }
        }
        let source = Self {
            path: path.to_path_buf(),
            content,
            mmap: Arc::new(mmap),
            vocabulary: None,
        };
        // The header is parsed: its pages (several MiB for a large vocabulary) need
        // not stay resident.
        source.release_range(0, source.content.tensor_data_offset as usize);
        Ok(source)
    }

    /// Moves the tokenizer's metadata (with the large per-token arrays) into a source
    /// of its own, for building the tokenizer, and keeps here only what the models
    /// read of it (vocabulary size, end-of-generation ids). The tokenizer drops the
    /// arrays once built, while the weights are still loading: the parsed vocabulary
    /// (32 MiB for Gemma 3's 262k pieces, as candle's `Value`s) and the weights are
    /// then never resident together.
    pub fn split_vocabulary(&mut self) -> GgufSource {
        const ARRAYS: [&str; 4] = [
            "tokenizer.ggml.tokens",
            "tokenizer.ggml.scores",
            "tokenizer.ggml.token_type",
            "tokenizer.ggml.merges",
        ];
        let size = match self.get("tokenizer.ggml.tokens") {
            Some(gguf_file::Value::Array(a)) => Some(a.len()),
            _ => None,
        };
        let eos = self.eos_token_ids().unwrap_or_default();
        let mut metadata: std::collections::HashMap<String, gguf_file::Value> = self
            .content
            .metadata
            .iter()
            .filter(|(k, _)| k.starts_with("tokenizer.") && !ARRAYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for key in ARRAYS {
            if let Some(v) = self.content.metadata.remove(key) {
                metadata.insert(key.to_string(), v);
            }
        }
        self.vocabulary = Some(VocabularySummary { size, eos });
        GgufSource {
            path: self.path.clone(),
            content: gguf_file::Content {
                magic: self.content.magic,
                metadata,
                tensor_infos: Default::default(),
                tensor_data_offset: self.content.tensor_data_offset,
            },
            mmap: self.mmap.clone(),
            vocabulary: None,
        }
    }

    /// The summary kept by [`GgufSource::split_vocabulary`], if it ran.
    pub(crate) fn vocabulary(&self) -> Option<&VocabularySummary> {
        self.vocabulary.as_ref()
    }

    /// A reader over the mapped file, for `from_gguf(content, reader, device)`.
    pub fn reader(&self) -> std::io::Cursor<&[u8]> {
        std::io::Cursor::new(&self.mmap[..])
    }

    /// A fresh copy of the parsed header, for loaders that take the content by value
    /// (candle's `from_gguf`). Parsing again from the mapped file costs milliseconds.
    pub fn content_owned(&self) -> Result<gguf_file::Content> {
        gguf_file::Content::read(&mut self.reader()).map_err(|e| gguf_read_error(&self.path, e))
    }

    /// Whether the file has a tensor of this name.
    pub fn has_tensor(&self, name: &str) -> bool {
        self.content.tensor_infos.contains_key(name)
    }

    /// Reads one tensor (still quantized) onto `device`; a missing tensor is an
    /// [`Error::InvalidGguf`] that names it.
    pub fn tensor(
        &self,
        name: &str,
        device: &candle_core::Device,
    ) -> Result<candle_core::quantized::QTensor> {
        if !self.has_tensor(name) {
            return Err(Error::InvalidGguf {
                path: self.path.clone(),
                detail: format!(
                    "no tensor `{name}` (architecture `{}`); the file may come from a newer or different converter",
                    self.architecture().unwrap_or("?")
                ),
            });
        }
        // Straight from the map: candle's reader path reads the bytes into a buffer
        // and then copies them into blocks, both alive at once (Gemma 3's 178 MiB
        // embedding briefly took 356 MiB, most of the process's peak).
        let info = &self.content.tensor_infos[name];
        let dtype = info.ggml_dtype;
        // `open` checked that every tensor is whole blocks inside the file.
        let (start, len) = tensor_span(self.content.tensor_data_offset, info);
        let (start, len) = (start as usize, len as usize);
        let bytes = &self.mmap[start..start + len];
        // Blocks are read in place by candle: their fields need (at most 4-byte)
        // alignment, which GGUF's 32-byte tensor alignment gives.
        let tensor = if (bytes.as_ptr() as usize).is_multiple_of(8) {
            let dims = info.shape.dims().to_vec();
            if device.is_cpu() {
                if let Some(t) = self.copy_blocks(dtype, start, bytes, &dims) {
                    return t;
                }
            }
            candle_core::quantized::ggml_file::qtensor_from_ggml(dtype, bytes, dims, device)?
        } else {
            // A file written with an odd alignment: candle's reader copies.
            self.content.tensor(&mut self.reader(), name, device)?
        };
        self.release_range(start, len);
        Ok(tensor)
    }

    /// A CPU tensor of a quantized format, copied out of the map a few MiB at a time,
    /// each piece's file pages released as soon as it is copied: the map and the copy
    /// of a large tensor (Gemma 3's 178 MiB embedding) are never resident together.
    /// `None` for formats left to candle (f32, f16: small tensors here).
    fn copy_blocks(
        &self,
        dtype: candle_core::quantized::GgmlDType,
        start: usize,
        bytes: &[u8],
        dims: &[usize],
    ) -> Option<Result<candle_core::quantized::QTensor>> {
        use candle_core::quantized::k_quants::*;
        use candle_core::quantized::{GgmlDType as G, GgmlType, QStorage, QTensor};

        fn copy<T: GgmlType + Send + Sync + 'static>(
            src: &GgufSource,
            start: usize,
            bytes: &[u8],
            dims: &[usize],
        ) -> Result<QTensor> {
            const PIECE: usize = 8 << 20;
            let n = bytes.len() / std::mem::size_of::<T>();
            let mut blocks: Vec<T> = Vec::with_capacity(n);
            let dst = blocks.as_mut_ptr() as *mut u8;
            let mut done = 0;
            while done < n * std::mem::size_of::<T>() {
                let len = PIECE.min(n * std::mem::size_of::<T>() - done);
                // SAFETY: `blocks` has room for `n` blocks, `bytes` holds them; GGUF
                // blocks are plain data, any bytes are a valid value.
                unsafe {
                    std::ptr::copy_nonoverlapping(bytes.as_ptr().add(done), dst.add(done), len)
                };
                src.release_range(start + done, len);
                done += len;
            }
            // SAFETY: every byte of the `n` blocks was written above.
            unsafe { blocks.set_len(n) };
            Ok(QTensor::new(
                QStorage::Cpu(Box::new(blocks)),
                dims.to_vec(),
            )?)
        }

        Some(match dtype {
            G::Q4_0 => copy::<BlockQ4_0>(self, start, bytes, dims),
            G::Q4_1 => copy::<BlockQ4_1>(self, start, bytes, dims),
            G::Q5_0 => copy::<BlockQ5_0>(self, start, bytes, dims),
            G::Q5_1 => copy::<BlockQ5_1>(self, start, bytes, dims),
            G::Q8_0 => copy::<BlockQ8_0>(self, start, bytes, dims),
            G::Q2K => copy::<BlockQ2K>(self, start, bytes, dims),
            G::Q3K => copy::<BlockQ3K>(self, start, bytes, dims),
            G::Q4K => copy::<BlockQ4K>(self, start, bytes, dims),
            G::Q5K => copy::<BlockQ5K>(self, start, bytes, dims),
            G::Q6K => copy::<BlockQ6K>(self, start, bytes, dims),
            _ => return None,
        })
    }

    /// Drops the resident file pages of `offset..offset + len` once they have been
    /// copied out or parsed: the weights would otherwise count twice (map and copy)
    /// towards the peak RSS. A later read faults them in again from the file.
    #[cfg(unix)]
    fn release_range(&self, offset: usize, len: usize) {
        if offset.saturating_add(len) <= self.mmap.len() {
            // SAFETY: the map is a read-only file mapping: MADV_DONTNEED only discards
            // resident pages, and every later access reads the same bytes from the file.
            let _ = unsafe {
                self.mmap
                    .unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, len)
            };
        }
    }

    #[cfg(not(unix))]
    fn release_range(&self, _offset: usize, _len: usize) {}

    /// The size of the file in bytes.
    pub fn file_size(&self) -> u64 {
        self.mmap.len() as u64
    }

    /// `general.architecture`.
    pub fn architecture(&self) -> Option<&str> {
        self.content
            .metadata
            .get("general.architecture")
            .and_then(|v| v.to_string().ok())
            .map(|s| s.as_str())
    }
}

fn gguf_read_error(path: &Path, e: candle_core::Error) -> Error {
    let text = e.to_string();
    let eof = matches!(&e, candle_core::Error::Io(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
        || text.contains("remaining")
        || text.contains("failed to fill whole buffer");
    if eof {
        Error::TruncatedGguf {
            path: path.to_path_buf(),
            detail: format!("the header ends early ({text})"),
        }
    } else {
        Error::InvalidGguf {
            path: path.to_path_buf(),
            detail: text,
        }
    }
}

impl SafetensorsSource {
    /// Parameter count and the dtypes with their tensor counts, read from the
    /// safetensors headers (no weights are read).
    pub fn tensor_summary(&self) -> Result<(u64, Vec<(String, usize)>)> {
        let mut params = 0u64;
        let mut types: std::collections::BTreeMap<String, usize> = Default::default();
        for f in &self.weights {
            let mut file = File::open(f).map_err(|e| Error::io(f, e))?;
            let mut len = [0u8; 8];
            file.read_exact(&mut len).map_err(|e| Error::io(f, e))?;
            let n = u64::from_le_bytes(len);
            let size = file.metadata().map_err(|e| Error::io(f, e))?.len();
            if n.saturating_add(8) > size {
                return Err(Error::UnknownFormat {
                    path: f.clone(),
                    found: format!("a safetensors header of {n} bytes in a file of {size} bytes"),
                });
            }
            let mut header = vec![0u8; n as usize];
            file.read_exact(&mut header).map_err(|e| Error::io(f, e))?;
            let v: serde_json::Value =
                serde_json::from_slice(&header).map_err(|e| Error::UnknownFormat {
                    path: f.clone(),
                    found: format!("a safetensors header that is not JSON ({e})"),
                })?;
            for (name, t) in v.as_object().into_iter().flatten() {
                if name == "__metadata__" {
                    continue;
                }
                let shape: Vec<u64> = t
                    .get("shape")
                    .and_then(|s| s.as_array())
                    .into_iter()
                    .flatten()
                    .filter_map(|d| d.as_u64())
                    .collect();
                params += shape.iter().product::<u64>();
                let dtype = t
                    .get("dtype")
                    .and_then(|d| d.as_str())
                    .unwrap_or("?")
                    .to_string();
                *types.entry(dtype).or_default() += 1;
            }
        }
        Ok((params, types.into_iter().collect()))
    }
}
