//! A safetensors checkpoint: a directory with config.json, the weights (one file or
//! the shards an index names) and usually tokenizer.json.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::{
    sniff_file, Sniffed, HINT_ONNX, HINT_PYTORCH, HINT_TENSORFLOW, ONNX, PYTORCH, TENSORFLOW,
};
use crate::{Error, Result};

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

impl SafetensorsSource {
    pub(crate) fn open_dir(dir: &Path) -> Result<Self> {
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
