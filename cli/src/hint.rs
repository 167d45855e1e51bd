//! Library errors told in the words of the command line: where a `zoo::Error` names a
//! library option (`LoadOptions::architecture`, `ChatTemplate::new`), the flag of `zoo`
//! that sets it is added.

/// `e` as an anyhow error, with the flag that answers it where there is one.
pub fn cli_error(e: zoo::Error) -> anyhow::Error {
    match flag_hint(&e) {
        Some(hint) => anyhow::anyhow!("{e}; on the command line: {hint}"),
        None => e.into(),
    }
}

/// What to type instead of the library option an error names.
fn flag_hint(e: &zoo::Error) -> Option<&'static str> {
    match e {
        zoo::Error::AmbiguousArchitecture { .. } => Some("choose one with `--arch NAME`"),
        zoo::Error::NoChatTemplate { .. } => {
            Some("use `zoo run` for plain completion, or give a template with `--template FILE`")
        }
        zoo::Error::TextTooShort { .. } => Some("set the window with `--ctx N`"),
        _ => None,
    }
}

/// [`cli_error`] on the error of a library result.
pub trait CliResult<T> {
    fn cli(self) -> anyhow::Result<T>;
}

impl<T> CliResult<T> for zoo::Result<T> {
    fn cli(self) -> anyhow::Result<T> {
        self.map_err(cli_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn library_options_get_their_flags() {
        let e = cli_error(zoo::Error::AmbiguousArchitecture {
            found: "llama".into(),
            claimed_by: vec!["a", "b"],
        })
        .to_string();
        assert!(e.contains("LoadOptions::architecture"), "{e}");
        assert!(
            e.ends_with("on the command line: choose one with `--arch NAME`"),
            "{e}"
        );
        let e = cli_error(zoo::Error::NoChatTemplate {
            path: "m.gguf".into(),
        })
        .to_string();
        assert!(
            e.contains("ChatTemplate::new") && e.contains("`--template FILE`"),
            "{e}"
        );
        let e = cli_error(zoo::Error::EmptyPrompt).to_string();
        assert!(!e.contains("command line"), "{e}");
    }
}
