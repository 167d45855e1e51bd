//! A safetensors checkpoint: a directory with config.json, the weights (one file or
//! the shards an index names) and usually tokenizer.json.

use std::path::{Path, PathBuf};

use super::{HINT_ONNX, HINT_PYTORCH, HINT_TENSORFLOW, ONNX, PYTORCH, TENSORFLOW};
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
    /// Parameter count and dtypes with tensor counts, from the checked headers.
    summary: (u64, Vec<(String, usize)>),
}

impl SafetensorsSource {
    /// A checkpoint of `config` alone, without weight files or tokenizer: what
    /// detection and config normalisation read (the `config_json` fuzz target).
    pub fn from_config(dir: PathBuf, config: serde_json::Value) -> Self {
        Self {
            config_path: dir.join("config.json"),
            dir,
            config,
            weights: Vec::new(),
            tokenizer_json: None,
            tokenizer_config: None,
            summary: (0, Vec::new()),
        }
    }

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
        super::hf_checks::check_config(&config_path, &config)?;
        let (weights, index) = weight_files(dir)?;
        let summary = check_shards(&weights, index.as_ref())?;
        let tokenizer_json = Some(dir.join("tokenizer.json")).filter(|p| p.is_file());
        let tokenizer_config = Some(dir.join("tokenizer_config.json")).filter(|p| p.is_file());
        Ok(Self {
            dir: dir.to_path_buf(),
            config_path,
            config,
            weights,
            tokenizer_json,
            tokenizer_config,
            summary,
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

/// The index's path and its `weight_map` (tensor name to shard file name).
type Index = (PathBuf, Vec<(String, String)>);

fn weight_files(dir: &Path) -> Result<(Vec<PathBuf>, Option<Index>)> {
    let index = dir.join("model.safetensors.index.json");
    let mut weight_map = None;
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
        let mut entries = Vec::with_capacity(map.len());
        for (tensor, file) in map {
            let name = file
                .as_str()
                .filter(|f| !f.is_empty() && !f.contains(['/', '\\']) && *f != "." && *f != "..");
            let Some(name) = name else {
                return Err(Error::Config {
                    path: index.clone(),
                    what: "safetensors index".into(),
                    detail: format!("`weight_map` maps `{tensor}` to {file}, not the file name of a shard in this directory"),
                    hint: "each value of `weight_map` is a shard's file name, like \"model-00001-of-00002.safetensors\"".into(),
                });
            };
            entries.push((tensor.clone(), name.to_string()));
        }
        let mut files: Vec<PathBuf> = entries.iter().map(|(_, f)| dir.join(f)).collect();
        weight_map = Some((index.clone(), entries));
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
    }
    Ok((files, weight_map))
}

/// Checks every shard's header (`safetensors_check.rs`), that no tensor is in two
/// shards and that every tensor the index names is in the shard it names; returns
/// the parameter count and the dtypes with their tensor counts.
fn check_shards(files: &[PathBuf], index: Option<&Index>) -> Result<(u64, Vec<(String, usize)>)> {
    let mut params = 0u64;
    let mut types: std::collections::BTreeMap<String, usize> = Default::default();
    let mut owner: std::collections::HashMap<String, &Path> = Default::default();
    for f in files {
        for (name, dtype, shape) in super::safetensors_check::check_file(f)? {
            params = params.saturating_add(shape.iter().map(|&d| d as u64).product::<u64>());
            *types.entry(format!("{dtype:?}")).or_default() += 1;
            if let Some(other) = owner.insert(name.clone(), f) {
                return Err(Error::InvalidSafetensors {
                    path: f.clone(),
                    detail: format!("tensor `{name}` is also in {}; each tensor is in one shard: remove the stray file", other.display()),
                });
            }
        }
    }
    if let Some((index, map)) = index {
        for (tensor, file) in map {
            let found = owner
                .get(tensor)
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str());
            if found != Some(file.as_str()) {
                return Err(Error::Config {
                    path: index.clone(),
                    what: "safetensors index".into(),
                    detail: format!(
                        "`weight_map` puts tensor `{tensor}` in {file}, but {}",
                        match found {
                            Some(f) => format!("it is in {f}"),
                            None => "no shard holds it".into(),
                        }
                    ),
                    hint: "the index and the shards come from different downloads: fetch the checkpoint again".into(),
                });
            }
        }
    }
    Ok((params, types.into_iter().collect()))
}

impl SafetensorsSource {
    /// Parameter count and the dtypes with their tensor counts, read from the
    /// safetensors headers when the directory was opened (no weights are read).
    pub fn tensor_summary(&self) -> Result<(u64, Vec<(String, usize)>)> {
        Ok(self.summary.clone())
    }
}
