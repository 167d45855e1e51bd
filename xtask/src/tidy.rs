//! Project rules, checked as tests: every Rust file opens with a `//!` doc comment
//! (UI test cases excepted), no test is ignored, no trailing whitespace.

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
}
