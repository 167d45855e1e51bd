//! The one error type of zoo-core: every failure says what was expected, what was
//! found, and what to do.

use std::path::PathBuf;

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong while loading or running a model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a model zoo can read: expected a GGUF file (magic `GGUF`), a safetensors file or a directory with config.json and *.safetensors; found {found}")]
    UnknownFormat { path: PathBuf, found: String },

    #[error("{path} is a {format} checkpoint, which zoo does not load; {hint}")]
    UnsupportedFormat {
        path: PathBuf,
        format: &'static str,
        hint: &'static str,
    },

    #[error("{path} is a truncated GGUF file: {detail}; the file was probably cut short while copying or downloading, fetch it again")]
    TruncatedGguf { path: PathBuf, detail: String },

    #[error("{path} is not a valid GGUF file: {detail}")]
    InvalidGguf { path: PathBuf, detail: String },

    #[error("{path} is not a valid safetensors file: {detail}")]
    InvalidSafetensors { path: PathBuf, detail: String },

    #[error("GGUF metadata key `{key}` {problem} in {path}")]
    GgufMetadata {
        path: PathBuf,
        key: String,
        problem: String,
    },

    #[error("{path} is not a valid {what}: {detail}; {hint}")]
    Config {
        path: PathBuf,
        what: String,
        detail: String,
        hint: String,
    },

    #[error("{path} has no {what}; {hint}")]
    MissingFile {
        path: PathBuf,
        what: &'static str,
        hint: String,
    },

    #[error("{}", unknown_arch_message(.found, .registered, .closest))]
    UnknownArchitecture {
        /// The architecture strings the checkpoint declares.
        found: Vec<String>,
        /// The registered names of the architectures of the checkpoint's format.
        registered: Vec<&'static str>,
        /// The registered architecture closest in spelling, if any is close.
        closest: Option<&'static str>,
    },

    #[error("architecture `{found}` is claimed by {} registered models ({}) and the file does not tell which; choose one with `LoadOptions::architecture`", .claimed_by.len(), .claimed_by.join(", "))]
    AmbiguousArchitecture {
        found: String,
        claimed_by: Vec<&'static str>,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("{} has no chat template (GGUF `tokenizer.chat_template` or `chat_template` in tokenizer_config.json); this is likely a base model: prompt it for plain completion, or give a template with `ChatTemplate::new`", .path.display())]
    NoChatTemplate { path: std::path::PathBuf },

    #[error("chat template: {0}")]
    ChatTemplate(String),

    #[error("chat template: rendering was stopped at {found}, past the bound of {bound}; a chat template needs far less, so this one loops, recurses or grows without end (a broken or hostile template: fix it, or give one with `ChatTemplate::new` / `--template`)")]
    ChatTemplateBudget {
        /// What ran out: instructions, nesting or output.
        found: String,
        /// The bound it ran past.
        bound: String,
    },

    #[error("the prompt has {prompt_tokens} tokens but the model's context holds {context_length}; shorten the prompt (or ask for fewer tokens)")]
    PromptTooLong {
        prompt_tokens: usize,
        context_length: usize,
    },

    #[error("the prompt is empty: generation needs at least one token")]
    EmptyPrompt,

    #[error("invalid sampling parameter: {0}")]
    Sampling(String),

    #[error("the engine's queue is full ({waiting} waiting); retry later")]
    EngineBusy { waiting: usize },

    #[error("the prompt of {prompt_tokens} tokens needs {needed} KV blocks; the engine's KV budget holds {blocks}: raise the budget (`EngineConfig::kv_budget`) or shorten the prompt")]
    KvBudget {
        prompt_tokens: usize,
        needed: usize,
        blocks: usize,
    },

    #[error("engine: {0}")]
    Engine(String),

    #[error("the text tokenizes to {tokens} tokens, but perplexity over windows of {ctx} tokens needs at least {} (two windows, as llama-perplexity requires): give a longer text or a smaller context", 2 * .ctx)]
    TextTooShort { tokens: usize, ctx: usize },

    #[error("perplexity: {0}")]
    Perplexity(String),

    #[error("`{found}` is not a device: expected {expected}")]
    InvalidDevice {
        found: String,
        expected: &'static str,
    },

    #[error("device `{device}` asked for, but this zoo was built without the `{feature}` feature; build with `{build}` (docs/gpu.md), or choose `--device cpu`")]
    DeviceNotCompiled {
        device: String,
        feature: &'static str,
        build: String,
    },

    #[error("device `{device}` does not answer: {detail}; check the driver and the ordinal (`nvidia-smi -L`), or choose `--device cpu`")]
    DeviceUnavailable { device: String, detail: String },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

fn unknown_arch_message(
    found: &[String],
    registered: &[&'static str],
    closest: &Option<&'static str>,
) -> String {
    let found = if found.is_empty() {
        "no architecture at all (no `architectures`/`model_type` in config.json, or no `general.architecture` in the GGUF)".to_string()
    } else {
        format!(
            "architecture {}",
            found
                .iter()
                .map(|s| format!("`{s}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let mut msg = format!(
        "unknown {found}; registered: {}",
        if registered.is_empty() {
            "none".to_string()
        } else {
            registered.join(", ")
        }
    );
    if let Some(c) = closest {
        msg.push_str(&format!("; did you mean `{c}`?"));
    }
    msg.push_str("; to add one, see docs/adding-an-architecture.md");
    msg
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn tokenizer(e: impl std::fmt::Display) -> Self {
        Error::Tokenizer(e.to_string())
    }
}
