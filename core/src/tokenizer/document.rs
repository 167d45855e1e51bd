//! Whole documents as llama.cpp's `common_tokenize(text, add_special = true,
//! parse_special = false)` gives them, which is what `llama-perplexity` scores
//! ([`crate::perplexity`]): the BOS the model adds, then the text with special-token
//! text taken as plain text. A child of the tokenizer module for its private backend.

use super::{lock, Backend, Tokenizer, TokenizerKind};
use crate::{Error, Result};

impl Tokenizer {
    /// The ids of a whole document as llama.cpp's `common_tokenize(text, add_special =
    /// true, parse_special = false)` gives them, which is what `llama-perplexity`
    /// scores: the BOS where the model adds one, then the text with special-token text
    /// taken as plain text (a document is data, not a prompt). A tokenizer.json's
    /// post-processor adds what it adds.
    pub fn encode_document(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_bos(text, false)
    }

    /// The BOS id the model puts before a text, if it puts one: llama.cpp's
    /// `llama_vocab_get_add_bos` and `llama_vocab_bos` for a GGUF vocabulary; for a
    /// tokenizer.json, the id its post-processor puts before the text (found by
    /// encoding one character with and without special tokens).
    pub fn added_bos(&self) -> Result<Option<u32>> {
        match (&self.kind, &*self.backend) {
            (TokenizerKind::HfJson, Backend::Hf(tk)) => {
                let mut tk = lock(tk);
                tk.set_encode_special_tokens(true);
                let with = tk.encode("a", true).map_err(Error::tokenizer)?;
                let without = tk.encode("a", false).map_err(Error::tokenizer)?;
                let (with, without) = (with.get_ids(), without.get_ids());
                Ok((with.len() > without.len() && with[1..].starts_with(without)).then(|| with[0]))
            }
            _ => Ok(if self.add_bos { self.bos_id } else { None }),
        }
    }
}
