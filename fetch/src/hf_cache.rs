//! Models already downloaded into the local Hugging Face hub cache, found by
//! `org/name[@revision]` without touching the network.
//!
//! The layout (huggingface_hub's): `<root>/models--<org>--<name>/refs/<branch or tag>`
//! holds a commit hash, `snapshots/<commit>/` holds the repository's files (links into
//! `blobs/`). The root is `$HF_HUB_CACHE`, else `$HUGGINGFACE_HUB_CACHE`, else
//! `$HF_HOME/hub`, else `$XDG_CACHE_HOME/huggingface/hub`, else
//! `~/.cache/huggingface/hub`: where `huggingface-cli download` and transformers put
//! models.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// `org/name`, with an optional `@revision` (a branch, a tag or a commit hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubModel {
    pub repo: String,
    pub revision: Option<String>,
}

impl HubModel {
    /// Parses `org/name[@revision]`; `None` for anything else (a path, a known model's
    /// name), so callers can try other readings first.
    pub fn parse(spec: &str) -> Option<Self> {
        let (repo, revision) = match spec.split_once('@') {
            Some((r, rev)) => (r, Some(rev)),
            None => (spec, None),
        };
        let (org, name) = repo.split_once('/')?;
        let part_ok = |p: &str| {
            !p.is_empty()
                && p != "."
                && p != ".."
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !part_ok(org)
            || !part_ok(name)
            || revision.is_some_and(|r| {
                r.is_empty() || r.starts_with('/') || r.contains(['\\', ' ']) || r.contains("..")
            })
        {
            return None;
        }
        Some(Self {
            repo: repo.to_string(),
            revision: revision.map(str::to_string),
        })
    }

    /// The folder huggingface_hub keeps this repository in under the cache root.
    pub fn folder_name(&self) -> String {
        format!("models--{}", self.repo.replace('/', "--"))
    }
}

/// The hub cache's root directory, from the environment as huggingface_hub reads it.
pub fn cache_root() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return d;
    }
    if let Some(d) = var("HF_HOME") {
        return d.join("hub");
    }
    let base = var("XDG_CACHE_HOME").unwrap_or_else(|| {
        var("HOME")
            .unwrap_or_else(|| PathBuf::from("."))
            .join(".cache")
    });
    base.join("huggingface").join("hub")
}

/// Resolves `model` in the cache at `root` to what `zoo::load` opens: the snapshot
/// directory of a safetensors model, or the one `.gguf` file of a GGUF repository.
pub fn resolve(root: &Path, model: &HubModel) -> Result<PathBuf> {
    let repo_dir = root.join(model.folder_name());
    if !repo_dir.is_dir() {
        return Err(Error::HubCache {
            model: model.repo.clone(),
            detail: format!("{} does not exist", repo_dir.display()),
            hint: format!(
                "download it first (e.g. `huggingface-cli download {}`) or set HF_HUB_CACHE / HF_HOME to the cache that has it",
                model.repo
            ),
        });
    }
    let revision = model.revision.as_deref().unwrap_or("main");
    let commit = commit_of(&repo_dir, model, revision)?;
    let snapshot = repo_dir.join("snapshots").join(&commit);
    if !snapshot.is_dir() {
        return Err(Error::HubCache {
            model: model.repo.clone(),
            detail: format!(
                "revision `{revision}` is commit {commit}, but {} does not exist",
                snapshot.display()
            ),
            hint: "the download was interrupted: download the model again".into(),
        });
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&snapshot)
        .map_err(|source| Error::Io {
            action: "list",
            path: snapshot.clone(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    // A link whose blob is missing is a download that did not finish.
    if let Some(broken) = files.iter().find(|f| !f.exists()) {
        return Err(Error::HubCache {
            model: model.repo.clone(),
            detail: format!("{} points to a blob that is missing", broken.display()),
            hint: "the download was interrupted: download the model again".into(),
        });
    }
    let is = |f: &PathBuf, ext: &str| f.extension().is_some_and(|e| e == ext);
    if files.iter().any(|f| is(f, "safetensors")) {
        return Ok(snapshot);
    }
    let ggufs: Vec<&PathBuf> = files.iter().filter(|f| is(f, "gguf")).collect();
    match ggufs.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(Error::HubCache {
            model: model.repo.clone(),
            detail: format!(
                "snapshot {} has neither .safetensors nor .gguf files",
                snapshot.display()
            ),
            hint: "download the model's weights (not only its config)".into(),
        }),
        many => Err(Error::HubCache {
            model: model.repo.clone(),
            detail: format!(
                "snapshot {} has {} .gguf files: {}",
                snapshot.display(),
                many.len(),
                many.iter()
                    .filter_map(|f| f.file_name())
                    .map(|n| n.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            hint: "pass the path of the one to run with --model".into(),
        }),
    }
}

/// The commit a revision names: a ref file's content, or the revision itself when it
/// is a commit hash that has a snapshot.
fn commit_of(repo_dir: &Path, model: &HubModel, revision: &str) -> Result<String> {
    let is_hash = revision.len() == 40 && revision.chars().all(|c| c.is_ascii_hexdigit());
    if is_hash && repo_dir.join("snapshots").join(revision).is_dir() {
        return Ok(revision.to_string());
    }
    let ref_file = repo_dir.join("refs").join(revision);
    match std::fs::read_to_string(&ref_file) {
        Ok(text) => {
            let commit = text.trim();
            if commit.is_empty() || commit.contains(['/', '\\']) || commit.contains("..") {
                return Err(Error::HubCache {
                    model: model.repo.clone(),
                    detail: format!("{} holds `{commit}`, not a commit hash", ref_file.display()),
                    hint: "download the model again".into(),
                });
            }
            Ok(commit.to_string())
        }
        Err(_) => {
            let mut known: Vec<String> = list(&repo_dir.join("refs"));
            known.extend(list(&repo_dir.join("snapshots")));
            Err(Error::HubCache {
                model: model.repo.clone(),
                detail: format!("no revision `{revision}` in the cache"),
                hint: if known.is_empty() {
                    "download the model again".into()
                } else {
                    format!("use one of: {}", known.join(", "))
                },
            })
        }
    }
}

fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[cfg(test)]
mod tests {
    use super::*;

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// A cache with `org/model` at COMMIT (ref `main`), its files linked to blobs.
    fn cache(files: &[&str]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let repo = root.path().join("models--org--model");
        let snap = repo.join("snapshots").join(COMMIT);
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("refs")).unwrap();
        std::fs::write(repo.join("refs/main"), COMMIT).unwrap();
        for (i, f) in files.iter().enumerate() {
            let blob = repo.join("blobs").join(format!("blob{i}"));
            std::fs::write(&blob, b"x").unwrap();
            std::os::unix::fs::symlink(&blob, snap.join(f)).unwrap();
        }
        root
    }

    fn hub(spec: &str) -> HubModel {
        HubModel::parse(spec).unwrap()
    }

    #[test]
    fn parses_repo_and_revision() {
        assert_eq!(
            hub("Qwen/Qwen2.5-0.5B@v1.0"),
            HubModel {
                repo: "Qwen/Qwen2.5-0.5B".into(),
                revision: Some("v1.0".into())
            }
        );
        assert_eq!(hub("a/b").revision, None);
        for not in ["smollm2", "a/b/c", "/abs", "a/", "../x", "a/b@", "a b/c"] {
            assert_eq!(HubModel::parse(not), None, "{not}");
        }
    }

    #[test]
    fn safetensors_snapshot_is_the_directory() {
        let root = cache(&["config.json", "model.safetensors"]);
        let got = resolve(root.path(), &hub("org/model")).unwrap();
        assert!(got.ends_with(format!("snapshots/{COMMIT}")), "{got:?}");
        // The same by commit hash.
        assert_eq!(
            resolve(root.path(), &hub(&format!("org/model@{COMMIT}"))).unwrap(),
            got
        );
    }

    #[test]
    fn one_gguf_is_the_file_several_are_an_error() {
        let root = cache(&["model-q4.gguf"]);
        let got = resolve(root.path(), &hub("org/model")).unwrap();
        assert!(got.ends_with("model-q4.gguf"), "{got:?}");
        let root = cache(&["a.gguf", "b.gguf"]);
        let e = resolve(root.path(), &hub("org/model"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("2 .gguf files: a.gguf, b.gguf"), "{e}");
    }

    #[test]
    fn missing_model_revision_and_blob_are_errors_that_say_what_to_do() {
        let root = cache(&["model.safetensors"]);
        let e = resolve(root.path(), &hub("org/other"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("models--org--other") && e.contains("download"),
            "{e}"
        );
        let e = resolve(root.path(), &hub("org/model@v9"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("no revision `v9`") && e.contains("main"), "{e}");
        let blob = root.path().join("models--org--model/blobs/blob0");
        std::fs::remove_file(blob).unwrap();
        let e = resolve(root.path(), &hub("org/model"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("blob that is missing"), "{e}");
    }
}
