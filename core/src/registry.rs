//! The registry of architectures.
//!
//! Each architecture submits one [`ArchEntry`] through [`inventory`]; the entry is
//! written by `#[register_model(...)]` from the facts in its attribute. Any crate
//! linked into the program can submit entries, so a downstream crate registers its
//! own architectures without touching zoo.
//!
//! Limits, as `inventory` states them: entries are collected before `main` runs, in
//! no particular order ([`entries`] sorts them by name), and a crate that only
//! submits entries must be linked: write `use their_crate as _;` if nothing else of
//! it is used.

use candle_core::Device;

use crate::{CausalLM, Error, ModelSource, Result};

/// The weight format an architecture's load function reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Format {
    /// config.json + `*.safetensors` (+ tokenizer.json).
    Safetensors,
    /// A single GGUF file with its metadata and tokenizer.
    Gguf,
}

impl Format {
    pub const fn as_str(self) -> &'static str {
        match self {
            Format::Safetensors => "safetensors",
            Format::Gguf => "gguf",
        }
    }
}

impl std::fmt::Display for Format {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Loads a model from a checkpoint onto a device.
pub type LoadFn = fn(&ModelSource, &Device) -> Result<Box<dyn CausalLM>>;

/// One registered architecture: const data only (names, strings, a `fn` pointer).
#[derive(Debug, Clone, Copy)]
pub struct ArchEntry {
    /// Registry name, unique: `llama`, `quantized-llama`.
    pub name: &'static str,
    /// One line saying what it is.
    pub description: &'static str,
    /// The format its load function reads.
    pub format: Format,
    /// config.json `architectures` strings it accepts (safetensors).
    pub hf_architectures: &'static [&'static str],
    /// config.json `model_type` strings it accepts (safetensors).
    pub model_types: &'static [&'static str],
    /// GGUF `general.architecture` strings it accepts (GGUF).
    pub gguf_architectures: &'static [&'static str],
    /// Where it was registered (`module_path!()`), for error messages.
    pub module: &'static str,
    /// Loads the model.
    pub load: LoadFn,
    /// For a string several entries accept (GGUF `llama` is Llama, Mistral and Mixtral):
    /// whether this entry claims the file, from its content. An entry without it is
    /// the fallback when no entry claims the file.
    pub detect: Option<fn(&ModelSource) -> bool>,
    /// Whether its models run several sequences in one step
    /// ([`crate::CausalLM::batched`]); the engine runs the others one at a time.
    pub batching: bool,
}

inventory::collect!(ArchEntry);

/// Implemented by `#[register_model]` for each registered model type.
pub trait Registered: CausalLM + Sized + 'static {
    /// The facts of the attribute.
    const ENTRY: ArchEntry;
    /// The attribute's load function, returning the concrete type.
    fn load_registered(source: &ModelSource, device: &Device) -> Result<Self>;
}

/// Boxes a registered model as the trait object the registry hands out.
pub fn boxed<M: Registered>(model: M) -> Box<dyn CausalLM> {
    Box::new(model)
}

/// A model type that any registry entry can be loaded into: the `Model` enum derived by
/// `model_enum!` (static dispatch for its own architectures), or `Box<dyn CausalLM>`.
pub trait FromRegistry: CausalLM + Sized {
    /// Loads `source` through `entry`.
    fn from_registry(
        entry: &'static ArchEntry,
        source: &ModelSource,
        device: &Device,
    ) -> Result<Self>;
}

impl FromRegistry for Box<dyn CausalLM> {
    fn from_registry(
        entry: &'static ArchEntry,
        source: &ModelSource,
        device: &Device,
    ) -> Result<Self> {
        (entry.load)(source, device)
    }
}

/// The error of an entry's load function called with a checkpoint of the other format
/// (only reachable by calling it directly: the registry picks entries by format).
pub fn format_mismatch(source: &ModelSource, arch: &str, want: Format) -> Error {
    Error::Config {
        path: source.path().to_path_buf(),
        what: format!("{want} checkpoint"),
        detail: format!(
            "architecture `{arch}` loads {want}, but this is {}",
            source.format()
        ),
        hint: "load it through the registry (zoo::load), which picks the entry for its format"
            .into(),
    }
}

/// Every registered architecture, sorted by name.
pub fn entries() -> Vec<&'static ArchEntry> {
    let mut v: Vec<&'static ArchEntry> = inventory::iter::<ArchEntry>.into_iter().collect();
    v.sort_by(|a, b| a.name.cmp(b.name).then(a.module.cmp(b.module)));
    v
}

/// The entry registered under `name`.
pub fn find(name: &str) -> Result<&'static ArchEntry> {
    let all = entries();
    let hits: Vec<_> = all.iter().copied().filter(|e| e.name == name).collect();
    match hits.as_slice() {
        [one] => Ok(one),
        [] => Err(unknown_name(name, all)),
        many => Err(Error::AmbiguousArchitecture {
            found: name.to_string(),
            claimed_by: many.iter().map(|e| e.module).collect(),
        }),
    }
}

/// The entry that loads `source`: for safetensors the first config.json
/// `architectures` string any entry claims, then `model_type`; for GGUF
/// `general.architecture`.
pub fn detect(source: &ModelSource) -> Result<&'static ArchEntry> {
    detect_in(source, &entries())
}

pub(crate) fn detect_in(
    source: &ModelSource,
    all: &[&'static ArchEntry],
) -> Result<&'static ArchEntry> {
    let format = source.format();
    let of_format: Vec<&'static ArchEntry> =
        all.iter().copied().filter(|e| e.format == format).collect();
    let ids = source.architecture_ids();
    let mut tried = Vec::new();
    for (kind, s) in &ids {
        let hits: Vec<&'static ArchEntry> = of_format
            .iter()
            .copied()
            .filter(|e| match kind {
                ArchId::HfArchitecture => e.hf_architectures.contains(&s.as_str()),
                ArchId::HfModelType => e.model_types.contains(&s.as_str()),
                ArchId::Gguf => e.gguf_architectures.contains(&s.as_str()),
            })
            .collect();
        let hits = if hits.len() > 1 {
            resolve_shared(source, hits)
        } else {
            hits
        };
        match hits.as_slice() {
            [one] => return Ok(one),
            [] => tried.push(s.clone()),
            many => {
                return Err(Error::AmbiguousArchitecture {
                    found: s.clone(),
                    claimed_by: many.iter().map(|e| e.name).collect(),
                })
            }
        }
    }
    Err(unknown(tried, &of_format, Some(format)))
}

/// Several entries accept the same string: those whose `detect` claims the file, else
/// those without `detect` (the fallback), else all of them (an ambiguity error).
fn resolve_shared(source: &ModelSource, hits: Vec<&'static ArchEntry>) -> Vec<&'static ArchEntry> {
    let claimed: Vec<_> = hits
        .iter()
        .copied()
        .filter(|e| e.detect.is_some_and(|d| d(source)))
        .collect();
    if !claimed.is_empty() {
        return claimed;
    }
    let fallback: Vec<_> = hits
        .iter()
        .copied()
        .filter(|e| e.detect.is_none())
        .collect();
    if fallback.is_empty() {
        hits
    } else {
        fallback
    }
}

fn unknown(
    found: Vec<String>,
    candidates: &[&'static ArchEntry],
    format: Option<crate::Format>,
) -> Error {
    let mut known: Vec<&'static str> = Vec::new();
    for e in candidates {
        let strings = match format {
            Some(crate::Format::Gguf) => e.gguf_architectures.to_vec(),
            Some(crate::Format::Safetensors) => e
                .hf_architectures
                .iter()
                .chain(e.model_types)
                .copied()
                .collect(),
            None => vec![e.name],
        };
        known.extend(strings);
    }
    let closest = found
        .iter()
        .flat_map(|f| {
            known.iter().map(move |k| {
                (
                    strsim::normalized_levenshtein(&f.to_lowercase(), &k.to_lowercase()),
                    *k,
                )
            })
        })
        .filter(|(score, _)| *score >= 0.5)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, k)| k);
    Error::UnknownArchitecture {
        found,
        registered: candidates.iter().map(|e| e.name).collect(),
        closest,
    }
}

/// The error for a registry name that no entry of `candidates` has.
pub fn unknown_name(name: &str, candidates: Vec<&'static ArchEntry>) -> Error {
    unknown(vec![name.to_string()], &candidates, None)
}

/// Which architecture string a checkpoint declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchId {
    /// An entry of config.json `architectures`.
    HfArchitecture,
    /// config.json `model_type`.
    HfModelType,
    /// GGUF `general.architecture`.
    Gguf,
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

const fn any_shared(a: &[&str], b: &[&str]) -> bool {
    let mut i = 0;
    while i < a.len() {
        let mut j = 0;
        while j < b.len() {
            if str_eq(a[i], b[j]) {
                return true;
            }
            j += 1;
        }
        i += 1;
    }
    false
}

/// Compile-time check used by the derived `Model` enum: no two entries share a name
/// or claim the same HF/GGUF architecture string.
pub const fn assert_distinct(a: &ArchEntry, b: &ArchEntry, message: &'static str) {
    // Sharing a string is allowed when one of the two tells the files apart (`detect`).
    let told_apart = a.detect.is_some() || b.detect.is_some();
    if str_eq(a.name, b.name)
        || (!told_apart
            && (any_shared(a.hf_architectures, b.hf_architectures)
                || any_shared(a.model_types, b.model_types)
                || any_shared(a.gguf_architectures, b.gguf_architectures)))
    {
        panic!("{}", message);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never(_: &ModelSource, _: &Device) -> Result<Box<dyn CausalLM>> {
        unreachable!("not loaded in these tests")
    }

    const A: ArchEntry = ArchEntry {
        name: "alpha",
        description: "",
        format: Format::Gguf,
        hf_architectures: &[],
        model_types: &[],
        gguf_architectures: &["alpha"],
        module: "a",
        load: never,
        detect: None,
        batching: false,
    };

    fn yes(_: &ModelSource) -> bool {
        true
    }
    fn no(_: &ModelSource) -> bool {
        false
    }

    #[test]
    fn a_shared_string_goes_to_the_entry_that_claims_the_file() {
        let dir = std::env::temp_dir().join(format!("zoo-registry-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("x.gguf");
        // A minimal GGUF: magic, version 3, no tensors, one key general.architecture.
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(0u64.to_le_bytes());
        b.extend(1u64.to_le_bytes());
        let key = b"general.architecture";
        b.extend((key.len() as u64).to_le_bytes());
        b.extend(key);
        b.extend(8u32.to_le_bytes());
        b.extend(5u64.to_le_bytes());
        b.extend(b"alpha");
        std::fs::write(&path, b).unwrap();
        let source = ModelSource::open(&path).unwrap();

        const FALLBACK: ArchEntry = ArchEntry {
            name: "fallback",
            ..A
        };
        const CLAIMS: ArchEntry = ArchEntry {
            name: "claims",
            detect: Some(yes),
            ..A
        };
        const DECLINES: ArchEntry = ArchEntry {
            name: "declines",
            detect: Some(no),
            ..A
        };
        let pick = |all: &[&'static ArchEntry]| detect_in(&source, all).map(|e| e.name);
        assert_eq!(pick(&[&FALLBACK, &CLAIMS]).unwrap(), "claims");
        assert_eq!(pick(&[&FALLBACK, &DECLINES]).unwrap(), "fallback");
        const CLAIMS2: ArchEntry = ArchEntry {
            name: "claims2",
            ..CLAIMS
        };
        let err = pick(&[&CLAIMS, &CLAIMS2]).unwrap_err().to_string();
        assert!(
            err.contains("claims, claims2") && err.contains("LoadOptions::architecture"),
            "{err}"
        );
        const DECLINES2: ArchEntry = ArchEntry {
            name: "declines2",
            ..DECLINES
        };
        assert!(pick(&[&DECLINES, &DECLINES2]).is_err());
        // The const check lets two entries share a string only when one can tell.
        assert_distinct(&FALLBACK, &CLAIMS, "");
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn str_eq_is_exact() {
        assert!(str_eq("llama", "llama"));
        assert!(!str_eq("llama", "llama2"));
        assert!(!str_eq("llamb", "llama"));
        assert!(any_shared(&["x", "y"], &["z", "y"]));
        assert!(!any_shared(&["x"], &[]));
    }

    #[test]
    fn unknown_architecture_names_the_closest() {
        let e = unknown(vec!["alpah".into()], &[&A], Some(Format::Gguf));
        let msg = e.to_string();
        assert!(msg.contains("`alpah`"), "{msg}");
        assert!(msg.contains("registered: alpha"), "{msg}");
        assert!(msg.contains("did you mean `alpha`?"), "{msg}");
        let far = unknown(vec!["zzzzzzzz".into()], &[&A], Some(Format::Gguf)).to_string();
        assert!(!far.contains("did you mean"), "{far}");
    }
}
