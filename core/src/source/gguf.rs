//! A GGUF file: its metadata and tensor directory, with the file memory-mapped;
//! tensors copied out of the map piece by piece with their pages released.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::quantized::gguf_file;

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
    /// Memory-maps and parses a GGUF file, checking that every tensor lies inside it.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; zoo does not write to model files while they
        // are loaded, and documents that other programs must not either.
        let mmap = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let content = read_header(path, &mmap)?;
        let len = mmap.len() as u64;
        let mut infos: Vec<(&String, &gguf_file::TensorInfo)> =
            content.tensor_infos.iter().collect();
        infos.sort_by_key(|(_, i)| i.offset);
        for (name, info) in infos {
            // The product of the dimensions is checked before anything multiplies them
            // (four dimensions of 2^40 wrap to 0 elements in a release build).
            let elems = info
                .shape
                .dims()
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .filter(|&n| n.checked_mul(info.ggml_dtype.type_size()).is_some())
                .ok_or_else(|| Error::InvalidGguf {
                    path: path.to_path_buf(),
                    detail: format!(
                        "tensor `{name}` has dimensions {:?}, whose product overflows; a real tensor's elements fit in the file",
                        info.shape.dims()
                    ),
                })?;
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
        read_header(&self.path, &self.mmap[..])
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

/// candle's header parser, which panics on some malformed headers (`general.alignment`
/// of 0 divides by zero): a panic is turned into [`Error::InvalidGguf`].
fn read_header(path: &Path, bytes: &[u8]) -> Result<gguf_file::Content> {
    let parsed =
        std::panic::catch_unwind(|| gguf_file::Content::read(&mut std::io::Cursor::new(bytes)));
    match parsed {
        Ok(r) => r.map_err(|e| gguf_read_error(path, e)),
        Err(panic) => {
            let why = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Error::InvalidGguf {
                path: path.to_path_buf(),
                detail: format!("the header is malformed (the GGUF reader failed: {why}); check `general.alignment` (a non-zero multiple of 8) and the header's counts, or re-convert the file"),
            })
        }
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
