//! A GGUF file: its metadata and tensor directory, with the file memory-mapped;
//! tensors copied out of the map piece by piece with their pages released.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;

use super::gguf_header::{self, HeaderError};
use super::{gguf_directory, gguf_keys, gguf_values};
use crate::{Error, Result};

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

/// Where a tensor's bytes lie in the file: start and length (saturating; `open`
/// checks the end against the file's size).
fn tensor_span(data_offset: u64, info: &gguf_file::TensorInfo) -> (u64, u64) {
    let dtype = info.ggml_dtype;
    let len = (info.shape.elem_count() / dtype.block_size() * dtype.type_size()) as u64;
    (data_offset.saturating_add(info.offset), len)
}

impl GgufSource {
    /// Memory-maps and parses a GGUF file with zoo's bounded header reader: every
    /// count, length, type, dimension and offset is checked against the file before
    /// anything is allocated from it (`gguf_header.rs`), the metadata zoo reads is
    /// checked (`gguf_keys.rs`), and every tensor lies inside the file, aligned, apart
    /// from the others (`gguf_directory.rs`).
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; zoo does not write to model files while they
        // are loaded, and documents that other programs must not either.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let content = parse(path, &mmap)?;
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

    /// A GGUF file held in memory (copied into an anonymous map), with every check
    /// [`GgufSource::open`] makes; its path reads `<memory>`. For fuzzing and tools.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let path = Path::new("<memory>");
        let content = parse(path, bytes)?;
        let mut map =
            memmap2::MmapMut::map_anon(bytes.len().max(1)).map_err(|e| Error::io(path, e))?;
        map[..bytes.len()].copy_from_slice(bytes);
        let mmap = map.make_read_only().map_err(|e| Error::io(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            content,
            mmap: Arc::new(mmap),
            vocabulary: None,
        })
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
        parse(&self.path, &self.mmap[..])
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

/// Parses and checks a GGUF header over the whole file's bytes (see
/// [`GgufSource::open`]) into candle's `Content`.
pub(crate) fn parse(path: &Path, bytes: &[u8]) -> Result<gguf_file::Content> {
    let header = gguf_header::scan(bytes).map_err(|e| header_error(path, e))?;
    gguf_keys::check_keys(bytes, &header).map_err(|(key, problem)| Error::GgufMetadata {
        path: path.to_path_buf(),
        key,
        problem,
    })?;
    gguf_directory::check_layout(bytes, &header).map_err(|e| header_error(path, e))?;
    Ok(gguf_values::build(bytes, &header))
}

/// Parses a whole GGUF file held in memory, with every check [`GgufSource::open`]
/// makes; errors name the path `<memory>`. For fuzzing and tools.
pub fn parse_gguf(bytes: &[u8]) -> Result<gguf_file::Content> {
    parse(Path::new("<memory>"), bytes)
}

fn header_error(path: &Path, e: HeaderError) -> Error {
    let path = path.to_path_buf();
    match e {
        HeaderError::Truncated(detail) => Error::TruncatedGguf { path, detail },
        HeaderError::Invalid(detail) => Error::InvalidGguf { path, detail },
    }
}
