//! Fuzz target `config_json`: the bytes as a safetensors checkpoint's config.json,
//! through the same path `zoo::load` takes: read as UTF-8 JSON, the registry's claim
//! (`architectures`, then `model_type`, the entries' `detect`), then every registered
//! safetensors entry's load function (normalisation of transformers 4.x/5.x keys,
//! the architecture's config type, the model's facts), each stopping at its first
//! weight: the checkpoint has no weight files, so nothing is read from disk and no
//! tensor is loaded.
//!
//! What a load function allocates from config.json before its first weight (rotary
//! tables sized by `max_position_embeddings`, caches sized by layer counts) is what
//! this target is for: a hostile config must be refused, not obeyed.

use std::path::PathBuf;

use zoo::registry::{self, Format};
use zoo::{Device, ModelSource, SafetensorsSource};

/// A directory that does not exist: generation_config.json and the tokenizer files
/// are absent, as in a checkpoint that ships only config.json.
const DIR: &str = "/nonexistent/zoo-fuzz-config";

/// One input.
pub fn run(data: &[u8]) {
    // As SafetensorsSource::open_dir reads it: text, then JSON.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(config) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let dir = PathBuf::from(DIR);
    let source = ModelSource::Safetensors(SafetensorsSource::from_config(dir, config));
    let _ = registry::detect(&source);
    let s = source.as_safetensors().expect("built as safetensors");
    for default in [None, Some(10_000.0)] {
        let _ = s.normalised_config(default);
        let _ = s.rope_theta(default);
    }
    let _ = s.rope_scaling();
    let _ = s.model_info("fuzz", None, &Device::Cpu);
    for entry in registry::entries() {
        if entry.format != Format::Safetensors {
            continue;
        }
        if let Some(detect) = entry.detect {
            detect(&source);
        }
        let _ = (entry.load)(&source, &Device::Cpu);
    }
}
