//! Streaming detokenization: token ids to text pieces as they come.

use super::Tokenizer;
use crate::Result;

/// Turns tokens into text pieces as they come, with the spaces decoding the whole
/// sequence would give and never half a UTF-8 character.
///
/// Each step decodes a short window (the last emitted token(s) plus the new ones) and
/// emits only what the new tokens added: decoding a token alone would lose its
/// leading space with SentencePiece and split multi-byte characters with byte-level BPE.
pub struct TokenStream<'a> {
    pub(super) tokenizer: &'a Tokenizer,
    pub(super) state: Detokenizer,
}

impl TokenStream<'_> {
    /// Adds a token; returns the text it completes, if any.
    pub fn push(&mut self, id: u32) -> Result<Option<String>> {
        self.state.push(self.tokenizer, id)
    }

    /// What is left when the stream ends (an incomplete character is emitted as U+FFFD).
    pub fn finish(&mut self) -> Result<Option<String>> {
        self.state.finish(self.tokenizer)
    }
}

/// [`TokenStream`]'s state without the borrow of its tokenizer, for a holder that keeps
/// the tokenizer elsewhere (the engine's sequences): pass the tokenizer to each call.
#[derive(Debug, Clone)]
pub struct Detokenizer {
    ids: Vec<u32>,
    /// Start of the decode window.
    prefix: usize,
    /// End of what has been emitted.
    read: usize,
    skip_special: bool,
}

impl Detokenizer {
    /// As [`Tokenizer::stream_after`].
    pub fn after(context: &[u32], skip_special: bool) -> Self {
        let ids = context.last().map(|&t| vec![t]).unwrap_or_default();
        let n = ids.len();
        Self {
            ids,
            prefix: 0,
            read: n,
            skip_special,
        }
    }

    /// As [`TokenStream::push`].
    pub fn push(&mut self, tokenizer: &Tokenizer, id: u32) -> Result<Option<String>> {
        self.ids.push(id);
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        if now.len() > before.len() && !now.ends_with('\u{FFFD}') && now.starts_with(&before) {
            let piece = now[before.len()..].to_string();
            self.prefix = self.read;
            self.read = self.ids.len();
            Ok(Some(piece))
        } else {
            Ok(None)
        }
    }

    /// As [`TokenStream::finish`].
    pub fn finish(&mut self, tokenizer: &Tokenizer) -> Result<Option<String>> {
        let before = tokenizer.decode(&self.ids[self.prefix..self.read], self.skip_special)?;
        let now = tokenizer.decode(&self.ids[self.prefix..], self.skip_special)?;
        self.prefix = self.ids.len();
        self.read = self.ids.len();
        if now.len() > before.len() && now.starts_with(&before) {
            Ok(Some(now[before.len()..].to_string()))
        } else {
            Ok(None)
        }
    }
}
