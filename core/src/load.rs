//! Loading: open and sniff a path, pick its architecture through the registry, load
//! the weights and the tokenizer.

use std::path::{Path, PathBuf};

use candle_core::Device;

#[cfg(doc)]
use crate::Error;
use crate::{
    registry, ArchEntry, ChatTemplate, Format, FromRegistry, ModelSource, Result, Tokenizer,
};

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

/// A loaded model with its tokenizer and what the checkpoint told at load, so nothing
/// needs to open it again. `zoo::load` returns `Loaded<zoo::Model>`.
pub struct Loaded<M> {
    pub model: M,
    pub tokenizer: Tokenizer,
    /// The registry entry that loaded it.
    pub entry: &'static ArchEntry,
    /// The chat template the checkpoint ships (GGUF metadata, tokenizer_config.json or
    /// chat_template.jinja), or why there is none ([`Error::NoChatTemplate`], or the
    /// template's compile error).
    pub chat_template: Result<ChatTemplate>,
    /// The checkpoint: the GGUF file or the safetensors directory.
    pub path: PathBuf,
    pub format: Format,
    /// The checkpoint's size and what loading it cost in resident memory.
    pub memory: crate::LoadMemory,
}

impl<M> std::fmt::Debug for Loaded<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("architecture", &self.entry.name)
            .field("path", &self.path)
            .field("format", &self.format)
            .field("tokenizer", &self.tokenizer)
            .field("chat_template", &self.chat_template.is_ok())
            .finish()
    }
}

/// Loads the checkpoint at `path` (a `.gguf` file, or a directory with config.json,
/// `*.safetensors` and tokenizer.json) as `M`, detecting its format from content and
/// its architecture from its metadata. `zoo::load` is this with `M = zoo::Model`.
pub fn load_as<M: FromRegistry>(
    path: impl AsRef<Path>,
    options: &LoadOptions,
) -> Result<Loaded<M>> {
    let path = path.as_ref();
    let _span = tracing::info_span!("load", path = %path.display()).entered();
    let started = std::time::Instant::now();
    let rss_before = crate::memory::rss_bytes();
    let mut source = ModelSource::open(path)?;
    let checkpoint_bytes = source.checkpoint_bytes();
    let entry = match &options.architecture {
        Some(name) => registry::find(name)?,
        None => registry::detect(&source)?,
    };
    source.check_loadable()?;
    tracing::info!(
        architecture = entry.name,
        format = %source.format(),
        device = %crate::device_name(&options.device),
        "loading weights"
    );
    // Read before the vocabulary leaves the metadata: the template's special tokens
    // are looked up in it.
    let chat_template = ChatTemplate::for_source(&source);
    // The tokenizer is built while the weights load (Qwen2.5's 151k merges take about
    // as long as its weights), from the vocabulary moved out of the GGUF metadata:
    // dropped once the tokenizer is built, before the weights are all resident.
    let vocabulary = match &mut source {
        ModelSource::Gguf(g) => Some(g.split_vocabulary()),
        ModelSource::Safetensors(_) => None,
    };
    let (tokenizer, model) = std::thread::scope(|s| {
        let source = &source;
        let tokenizer = s.spawn(move || match vocabulary {
            Some(v) => {
                let t = Tokenizer::from_gguf(&v);
                drop(v);
                release_freed_heap();
                t
            }
            None => Tokenizer::for_source(source),
        });
        let model = M::from_registry(entry, source, &options.device);
        let tokenizer = tokenizer
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
        (tokenizer, model)
    });
    let (tokenizer, model) = (tokenizer?, model?);
    let memory = crate::LoadMemory {
        checkpoint_bytes,
        resident_growth_bytes: crate::memory::rss_bytes()
            .zip(rss_before)
            .map(|(after, before)| after.saturating_sub(before)),
        peak_rss_bytes: crate::memory::peak_rss_bytes(),
    };
    tracing::info!(elapsed_ms = started.elapsed().as_millis() as u64, %memory, "loaded");
    Ok(Loaded {
        model,
        tokenizer,
        entry,
        chat_template,
        path: source.path().to_path_buf(),
        format: source.format(),
        memory,
    })
}

/// Hands the heap's free pages back to the system. The parsed vocabulary is hundreds
/// of thousands of small allocations; freed, glibc keeps their pages for later small
/// allocations, which loading (a few large ones) never makes.
fn release_freed_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` only returns unused heap memory; it is thread-safe.
    unsafe {
        libc::malloc_trim(0);
    }
}
