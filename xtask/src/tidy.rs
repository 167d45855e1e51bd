//! Project rules, checked as tests: every Rust file opens with a `//!` doc comment
//! (UI test cases excepted), no test is ignored, no trailing whitespace, no file outside
//! the tests over 500 lines, and ARCHITECTURE.md's invariants about model files: an
//! architecture file never reaches into a sibling, and no shared code of zoo-models
//! names an architecture.

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if p.is_dir() {
                if !matches!(name, "target" | ".git" | "node_modules") && !name.starts_with('.') {
                    rust_files(&p, out);
                }
            } else if name.ends_with(".rs") {
                out.push(p);
            }
        }
    }

    fn files() -> Vec<PathBuf> {
        let mut v = Vec::new();
        rust_files(&crate::root(), &mut v);
        assert!(v.len() > 10, "tidy found only {} files", v.len());
        v
    }

    #[test]
    fn every_file_opens_with_a_doc_comment() {
        let bad: Vec<_> = files()
            .into_iter()
            .filter(|p| !p.components().any(|c| c.as_os_str() == "ui"))
            .filter(|p| !std::fs::read_to_string(p).unwrap().starts_with("//!"))
            .collect();
        assert!(
            bad.is_empty(),
            "files without a leading `//!` doc comment: {bad:#?}"
        );
    }

    #[test]
    fn no_ignored_tests() {
        let needle = ["#[", "ignore"].concat();
        let bad: Vec<_> = files()
            .into_iter()
            .filter(|p| std::fs::read_to_string(p).unwrap().contains(&needle))
            .collect();
        assert!(bad.is_empty(), "ignored tests hide failures: {bad:#?}");
    }

    #[test]
    fn no_trailing_whitespace() {
        let mut bad = Vec::new();
        for p in files() {
            for (i, line) in std::fs::read_to_string(&p).unwrap().lines().enumerate() {
                if line.ends_with(' ') || line.ends_with('\t') {
                    bad.push(format!("{}:{}", p.display(), i + 1));
                }
            }
        }
        assert!(bad.is_empty(), "trailing whitespace: {bad:#?}");
    }

    /// insta in check mode fails on a missing snapshot but not on an orphaned one: a
    /// snapshot whose test or fixture is gone must be deleted, not kept as if reviewed.
    #[test]
    fn no_orphaned_snapshots() {
        let tests = crate::root().join("tests/tests");
        let mut orphans = Vec::new();
        let conformance = tests.join("snapshots/conformance");
        for e in std::fs::read_dir(&conformance).unwrap() {
            let name = e.unwrap().file_name().to_string_lossy().into_owned();
            let Some((arch, variant)) = name.strip_suffix(".snap").and_then(|n| n.split_once("__"))
            else {
                orphans.push(name);
                continue;
            };
            let fixture = crate::root()
                .join("tests/fixtures")
                .join(arch)
                .join(variant);
            if !fixture.join("spec.json").exists() && !fixture.is_dir() {
                orphans.push(format!(
                    "conformance/{name} (no tests/fixtures/{arch}/{variant})"
                ));
            }
        }
        for e in std::fs::read_dir(tests.join("snapshots")).unwrap() {
            let e = e.unwrap();
            if e.path().is_dir() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((module, snap)) = name.strip_suffix(".snap").and_then(|n| n.split_once("__"))
            else {
                orphans.push(format!(
                    "{name} (not a reviewed snapshot; delete .snap.new/.pending-snap files)"
                ));
                continue;
            };
            let source =
                std::fs::read_to_string(tests.join(format!("{module}.rs"))).unwrap_or_default();
            if !source.contains(snap) {
                orphans.push(format!(
                    "{name} (nothing in tests/tests/{module}.rs names `{snap}`)"
                ));
            }
        }
        assert!(
            orphans.is_empty(),
            "orphaned snapshots, delete them: {orphans:#?}"
        );
    }

    /// Rust files of the workspace's crates, tests and fixtures excepted.
    fn library_files() -> Vec<PathBuf> {
        let root = crate::root();
        files()
            .into_iter()
            .filter(|p| {
                let rel = p.strip_prefix(&root).unwrap();
                !rel.starts_with("tests") && !rel.components().any(|c| c.as_os_str() == "tests")
            })
            .collect()
    }

    #[test]
    fn no_file_outside_tests_over_500_lines() {
        let bad: Vec<String> = library_files()
            .into_iter()
            .filter_map(|p| {
                let n = std::fs::read_to_string(&p).unwrap().lines().count();
                (n > 500).then(|| format!("{} ({n} lines)", p.display()))
            })
            .collect();
        assert!(
            bad.is_empty(),
            "one job per file: split these by job (ARCHITECTURE.md): {bad:#?}"
        );
    }

    #[test]
    fn architecture_files_do_not_reach_into_siblings() {
        let dir = crate::root().join("models/src/arch");
        let mut bad = Vec::new();
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let text = std::fs::read_to_string(e.path()).unwrap();
            if text.contains("super::") || text.contains("crate::arch::") {
                bad.push(e.path().display().to_string());
            }
        }
        assert!(
            bad.is_empty(),
            "an architecture file uses a sibling; move what they share to models/src (adapters, detect, decoders): {bad:#?}"
        );
    }

    /// The shared decoders and adapters take every architecture fact from the file
    /// that builds on them: no string literal in them is an architecture's name or one
    /// of its declared strings.
    #[test]
    fn shared_model_code_names_no_architecture() {
        let root = crate::root();
        let facts = crate::codegen::read_arch_facts(&root.join("models/src/arch")).unwrap();
        let mut names: Vec<String> = Vec::new();
        for f in &facts {
            names.push(f.name.clone());
            names.extend(f.gguf_architectures.iter().cloned());
            names.extend(f.model_types.iter().cloned());
            names.extend(f.hf_architectures.iter().cloned());
        }
        let mut shared = Vec::new();
        rust_files(&root.join("models/src"), &mut shared);
        let mut bad = Vec::new();
        for p in shared
            .iter()
            .filter(|p| !p.starts_with(root.join("models/src/arch")))
        {
            if p.ends_with("models/src/arch.rs") {
                continue;
            }
            let text = std::fs::read_to_string(p).unwrap();
            let code: String = text
                .lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect::<Vec<_>>()
                .join("\n");
            for n in &names {
                if code.contains(&format!("\"{n}\"")) {
                    bad.push(format!("{} names \"{n}\"", p.display()));
                }
            }
        }
        assert!(
            bad.is_empty(),
            "shared model code decides by an architecture's name; let the architecture's file pass the fact: {bad:#?}"
        );
    }
}
