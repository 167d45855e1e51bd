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
    // The tokenizer is built while the weights load: Gemma 3's 262k-piece vocabulary
    // takes about a second to turn into merges, as long as its weights take to read.
    let (tokenizer, model) = std::thread::scope(|s| {
        let tokenizer = s.spawn(|| Tokenizer::for_source(&source));
        let model = (entry.load)(&source, &options.device);
        let tokenizer = tokenizer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (tokenizer, model)
    });
    let (tokenizer, model) = (tokenizer?, model?);
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, "loaded");
    Ok(Loaded {
        model,
        tokenizer,
        entry,
    })
}

/// Fixes the number of CPU threads candle uses to the number it would pick, once.
///
/// Unless `RAYON_NUM_THREADS` is set, candle counts the physical cores anew on every
/// f32 matrix product by reading and parsing `/proc/cpuinfo`: a few hundred reads per
/// second in decoding (two attention products per layer per token), about 12 % of
/// SmolLM2's decode time. With the variable set the lookup is an environment read.
/// The `zoo` binary calls this first thing in `main`.
///
/// # Safety
/// It may set an environment variable: call it before the program starts threads
/// (see [`std::env::set_var`]).
pub unsafe fn pin_thread_count() {
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let n = candle_core::utils::get_num_threads();
        // SAFETY: the caller guarantees no other thread reads the environment now.
        unsafe { std::env::set_var("RAYON_NUM_THREADS", n.to_string()) };
    }
}
