//! zoo: every LLM architecture one file.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! let mut loaded = zoo::load("model.gguf", &zoo::LoadOptions::default())?;
//! let ids = loaded.tokenizer.encode_prompt("Once upon a time")?;
//! let out = zoo::generate(&mut loaded.model, &loaded.tokenizer, &ids, &Default::default(), |piece| {
//!     print!("{piece}");
//!     ControlFlow::Continue(())
//! })?;
//! eprintln!("{:.1} tok/s", out.stats.decode_tokens_per_s());
//! # Ok::<(), zoo::Error>(())
//! ```
//!
//! Architectures are registered with [`register_model`]; a crate of your own can
//! register more (see the `zoo-extra-arch` example crate) and [`load`] finds them.
//! [`load`] returns the [`Model`] enum derived from the registered types: zoo's own
//! architectures as variants (static dispatch), another crate's as `Model::External`.

pub use zoo_core::*;
pub use zoo_macros::{model_enum, register_model};
pub use zoo_models::{Arch, Model};

/// A loaded [`Model`] with its tokenizer and what the checkpoint told at load.
pub type Loaded = zoo_core::Loaded<Model>;

/// Loads the checkpoint at `path` (a `.gguf` file, or a directory with config.json,
/// `*.safetensors` and tokenizer.json), detecting its format from content and its
/// architecture from its metadata, as the derived [`Model`].
pub fn load(path: impl AsRef<std::path::Path>, options: &LoadOptions) -> Result<Loaded> {
    zoo_core::load_as(path, options)
}

/// The architecture files of zoo-models.
pub use zoo_models::arch as models;

// Keep zoo-models linked so its registry entries are collected.
#[doc(hidden)]
pub use zoo_models as __models;
