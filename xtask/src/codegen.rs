//! `cargo xtask codegen [--check]`: every file written from the architecture files'
//! `#[register_model]` attributes (and what the conformance suite measured), so that
//! no list of architectures is kept by hand. With `--check` nothing is written and a
//! stale file is an error (CI).
//!
//! - `models/src/arch.rs`: the modules and the `model_enum!` invocation ([`arch_rs`]);
//! - README.md's architecture table, docs/adding-an-architecture.md's table of what
//!   each file builds on, docs/conformance.md's table of measured differences
//!   ([`docs`]).

mod arch_rs;
mod attrs;
mod docs;

use std::path::Path;

use anyhow::{bail, Context, Result};

pub use arch_rs::registered_models;
#[cfg(test)]
pub use attrs::read_all as read_arch_facts;

/// Writes (or, with `check`, compares) every generated file.
pub fn generate(check: bool) -> Result<()> {
    let root = crate::root();
    let mut stale = Vec::new();
    let mut put = |path: &Path, text: String| -> Result<()> {
        let current = std::fs::read_to_string(path).unwrap_or_default();
        if current == text {
            return Ok(());
        }
        if check {
            stale.push(path.display().to_string());
            return Ok(());
        }
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("xtask: wrote {}", path.display());
        Ok(())
    };
    let arch_rs = root.join("models/src/arch.rs");
    put(&arch_rs, arch_rs::render(&root.join("models/src/arch"))?)?;
    for (path, text) in docs::render(&root)? {
        put(&path, text)?;
    }
    if !stale.is_empty() {
        bail!(
            "stale generated files: {}; run `cargo xtask codegen` and commit",
            stale.join(", ")
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_is_fresh() {
        if let Err(e) = super::generate(true) {
            panic!("{e}");
        }
    }
}
