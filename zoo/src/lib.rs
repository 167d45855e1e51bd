//! zoo: every LLM architecture one file.
//!
//! ```no_run
//! use std::ops::ControlFlow;
//! let mut loaded = zoo::load("model.gguf", &zoo::LoadOptions::default())?;
//! let ids = loaded.tokenizer.encode_prompt("Once upon a time")?;
//! let out = zoo::generate(&mut *loaded.model, &loaded.tokenizer, &ids, &Default::default(), |piece| {
//!     print!("{piece}");
//!     ControlFlow::Continue(())
//! })?;
//! eprintln!("{:.1} tok/s", out.stats.decode_tokens_per_s());
//! # Ok::<(), zoo::Error>(())
//! ```
//!
//! Architectures are registered with [`register_model`]; a crate of your own can
//! register more (see the `zoo-extra-arch` example crate) and [`load`] finds them.

pub use zoo_core::*;
pub use zoo_macros::{model_enum, register_model};
pub use zoo_models::{Arch, Model};

/// The architecture files of zoo-models.
pub use zoo_models::arch as models;

// Keep zoo-models linked so its registry entries are collected.
#[doc(hidden)]
pub use zoo_models as __models;
