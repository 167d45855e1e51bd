//! Loading: open and sniff a path, pick its architecture through the registry, load
//! the weights and the tokenizer.

use std::path::Path;

use candle_core::Device;

use crate::{registry, ArchEntry, CausalLM, ModelSource, Result, Tokenizer};

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub device: Device,
    /// A registry name to use instead of detecting the architecture.
    pub architecture: Option<String>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            device: Device::Cpu,
            architecture: None,
        }
    }
}

/// A loaded model with its tokenizer.
pub struct Loaded {
    pub model: Box<dyn CausalLM>,
    pub tokenizer: Tokenizer,
    /// The registry entry that loaded it.
    pub entry: &'static ArchEntry,
}

impl std::fmt::Debug for Loaded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("architecture", &self.entry.name)
            .field("tokenizer", &self.tokenizer)
            .finish()
    }
}

/// Loads the checkpoint at `path` (a `.gguf` file, or a directory with config.json,
/// `*.safetensors` and tokenizer.json), detecting its format from content and its
/// architecture from its metadata.
pub fn load(path: impl AsRef<Path>, options: &LoadOptions) -> Result<Loaded> {
    let path = path.as_ref();
    let _span = tracing::info_span!("load", path = %path.display()).entered();
    let started = std::time::Instant::now();
    let source = ModelSource::open(path)?;
    let entry = match &options.architecture {
        Some(name) => registry::find(name)?,
        None => registry::detect(&source)?,
    };
    tracing::info!(architecture = entry.name, format = %source.format(), "loading weights");
    let tokenizer = Tokenizer::for_source(&source)?;
    let model = (entry.load)(&source, &options.device)?;
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "loaded");
    Ok(Loaded {
        model,
        tokenizer,
        entry,
    })
}
