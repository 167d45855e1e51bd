//! The SentencePiece-style tokenizer of GGUF files (`tokenizer.ggml.model = llama`), run
//! as llama.cpp runs it, straight on the vocabulary.
//!
//! The text (with a space prepended where `add_space_prefix`) has its spaces escaped as
//! `▁` and starts as one symbol per character; the adjacent pair whose concatenation is
//! the highest-scoring piece is merged (ties: leftmost first) until no pair makes a
//! piece; a symbol left without a piece becomes its `<0xXX>` byte tokens.
//!
//! zoo first rebuilt this as a `tokenizers` BPE with every split of every piece as a
//! merge: for Gemma 3's 262k pieces that is 515k merges, about 1.2 s to build and
//! 150 MiB at the peak. Here the pieces, their scores and one sorted index are all
//! there is (about 5 MiB for Gemma 3).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use crate::{Error, Result};

/// GGUF `tokenizer.ggml.token_type` values.
const NORMAL: u8 = 1;
const UNKNOWN: u8 = 2;
const CONTROL: u8 = 3;
const USER_DEFINED: u8 = 4;
const BYTE: u8 = 6;

/// Pieces matched as whole tokens in the raw text before the merges.
struct Specials {
    matcher: AhoCorasick,
    ids: Vec<u32>,
}

impl Specials {
    fn new(pieces: &Pieces, ids: Vec<u32>) -> Result<Option<Self>> {
        if ids.is_empty() {
            return Ok(None);
        }
        let matcher = AhoCorasickBuilder::new()
            .match_kind(MatchKind::LeftmostLongest)
            .build(ids.iter().map(|&id| pieces.get(id).as_bytes()))
            .map_err(|e| Error::Tokenizer(format!("special tokens: {e}")))?;
        Ok(Some(Self { matcher, ids }))
    }
}

/// Every piece in one string, and the ids sorted by their text for lookups: for
/// Gemma 3's 262k pieces about 4 MiB, where a `Vec<String>` and a `HashMap` of them
/// took about 35 MiB.
struct Pieces {
    text: String,
    /// Piece `id` is `text[starts[id]..starts[id + 1]]`.
    starts: Vec<u32>,
    /// Ids by piece text, equal texts by id.
    sorted: Vec<u32>,
}

impl Pieces {
    fn new(pieces: &[&str]) -> Result<Self> {
        let total: usize = pieces.iter().map(|p| p.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(Error::Tokenizer(format!(
                "the vocabulary's pieces take {total} bytes, more than 4 GiB"
            )));
        }
        let mut text = String::with_capacity(total);
        let mut starts = Vec::with_capacity(pieces.len() + 1);
        for p in pieces {
            starts.push(text.len() as u32);
            text.push_str(p);
        }
        starts.push(text.len() as u32);
        let mut this = Self {
            text,
            starts,
            sorted: (0..pieces.len() as u32).collect(),
        };
        let mut sorted = std::mem::take(&mut this.sorted);
        sorted.sort_unstable_by(|&a, &b| this.get(a).cmp(this.get(b)).then(a.cmp(&b)));
        this.sorted = sorted;
        Ok(this)
    }

    fn len(&self) -> usize {
        self.starts.len() - 1
    }

    fn get(&self, id: u32) -> &str {
        let i = id as usize;
        &self.text[self.starts[i] as usize..self.starts[i + 1] as usize]
    }

    /// The id of the piece `s`; of equal pieces the last, as llama.cpp's `token_to_id`
    /// (filled in id order) keeps.
    fn find(&self, s: &str) -> Option<u32> {
        let end = self.sorted.partition_point(|&id| self.get(id) <= s);
        let id = *self.sorted[..end].last()?;
        (self.get(id) == s).then_some(id)
    }
}

pub(crate) struct Spm {
    pieces: Pieces,
    scores: Vec<f32>,
    types: Vec<u8>,
    bytes: [Option<u32>; 256],
    unk: Option<u32>,
    add_space_prefix: bool,
    /// User-defined pieces: always matched, as llama.cpp does.
    user: Option<Specials>,
    /// Control, unknown and user-defined pieces: matched when special-token text is
    /// parsed.
    all: Option<Specials>,
}

impl std::fmt::Debug for Spm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spm")
            .field("pieces", &self.pieces.len())
            .field("add_space_prefix", &self.add_space_prefix)
            .finish_non_exhaustive()
    }
}

/// A candidate merge of two adjacent symbols.
#[derive(Debug, PartialEq)]
struct Bigram {
    left: usize,
    right: usize,
    score: f32,
    len: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first, then leftmost (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, other: &Self) -> Ordering {
        self.score
            .total_cmp(&other.score)
            .then_with(|| other.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// A run of the text: `start..start + len` bytes, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// `types` as GGUF gives them (1 where the file has none); `unk` the unknown token.
    pub(crate) fn new(
        pieces: &[&str],
        scores: Vec<f32>,
        types: Vec<u8>,
        unk: Option<u32>,
        add_space_prefix: bool,
    ) -> Result<Self> {
        if scores.len() != pieces.len() || types.len() != pieces.len() {
            return Err(Error::Tokenizer(format!(
                "{} tokens but {} scores and {} token types",
                pieces.len(),
                scores.len(),
                types.len()
            )));
        }
        let mut bytes = [None; 256];
        for (id, p) in pieces.iter().enumerate() {
            if types[id] == BYTE {
                if let Some(b) = p
                    .strip_prefix("<0x")
                    .and_then(|h| h.strip_suffix('>'))
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    bytes[b as usize] = Some(id as u32);
                }
            }
        }
        let pieces = Pieces::new(pieces)?;
        let ids_of = |wanted: &[u8]| -> Vec<u32> {
            (0..pieces.len() as u32)
                .filter(|&id| wanted.contains(&types[id as usize]) && !pieces.get(id).is_empty())
                .collect()
        };
        let user = Specials::new(&pieces, ids_of(&[USER_DEFINED]))?;
        let all = Specials::new(&pieces, ids_of(&[CONTROL, UNKNOWN, USER_DEFINED]))?;
        Ok(Self {
            pieces,
            scores,
            types,
            bytes,
            unk,
            add_space_prefix,
            user,
            all,
        })
    }

    pub(crate) fn vocab_size(&self) -> usize {
        self.pieces.len()
    }

    pub(crate) fn piece(&self, id: u32) -> Option<&str> {
        ((id as usize) < self.pieces.len()).then(|| self.pieces.get(id))
    }

    /// The ids of `text`: special pieces split out first (control ones only with
    /// `parse_special`), each run of text between them merged on its own, with the
    /// space prefix where it follows the start or a special piece.
    pub(crate) fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        let mut out = Vec::new();
        let specials = if parse_special { &self.all } else { &self.user };
        let mut after_special = true;
        let mut at = 0;
        if let Some(s) = specials {
            for m in s.matcher.find_iter(text) {
                if m.start() > at {
                    self.encode_run(&text[at..m.start()], after_special, &mut out)?;
                }
                out.push(s.ids[m.pattern().as_usize()]);
                after_special = true;
                at = m.end();
            }
        }
        if at < text.len() {
            self.encode_run(&text[at..], after_special, &mut out)?;
        }
        Ok(out)
    }

    fn encode_run(&self, run: &str, after_special: bool, out: &mut Vec<u32>) -> Result<()> {
        let mut text = String::with_capacity(run.len() + 3);
        if self.add_space_prefix && after_special {
            text.push('▁');
        }
        for c in run.chars() {
            text.push(if c == ' ' { '▁' } else { c });
        }
        let mut symbols: Vec<Symbol> = text
            .char_indices()
            .map(|(start, c)| Symbol {
                start,
                len: c.len_utf8(),
                prev: None,
                next: None,
            })
            .collect();
        let n = symbols.len();
        for (i, s) in symbols.iter_mut().enumerate() {
            s.prev = i.checked_sub(1);
            s.next = (i + 1 < n).then_some(i + 1);
        }
        let mut queue = BinaryHeap::new();
        let bigram = |symbols: &[Symbol], left: Option<usize>, right: Option<usize>| {
            let (l, r) = (left?, right?);
            let start = symbols[l].start;
            let len = symbols[l].len + symbols[r].len;
            let id = self.pieces.find(&text[start..start + len])?;
            Some(Bigram {
                left: l,
                right: r,
                score: self.scores[id as usize],
                len,
            })
        };
        for i in 1..n {
            queue.extend(bigram(&symbols, Some(i - 1), Some(i)));
        }
        while let Some(b) = queue.pop() {
            let (l, r) = (symbols[b.left], symbols[b.right]);
            // One side already merged into something else: stale.
            if l.len == 0 || r.len == 0 || l.len + r.len != b.len {
                continue;
            }
            symbols[b.left].len += r.len;
            symbols[b.right].len = 0;
            symbols[b.left].next = r.next;
            if let Some(next) = r.next {
                symbols[next].prev = Some(b.left);
            }
            queue.extend(bigram(&symbols, l.prev, Some(b.left)));
            queue.extend(bigram(&symbols, Some(b.left), symbols[b.left].next));
        }
        let mut i = (n > 0).then_some(0);
        while let Some(at) = i {
            let s = symbols[at];
            let piece = &text[s.start..s.start + s.len];
            match self.pieces.find(piece) {
                Some(id) => out.push(id),
                None => {
                    for &byte in piece.as_bytes() {
                        out.push(self.byte_token(byte)?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// `<0xXX>`, else the byte as a one-character piece, else the unknown token.
    fn byte_token(&self, byte: u8) -> Result<u32> {
        self.bytes[byte as usize]
            .or_else(|| {
                std::str::from_utf8(&[byte])
                    .ok()
                    .and_then(|s| self.pieces.find(s))
            })
            .or(self.unk)
            .ok_or_else(|| {
                Error::Tokenizer(format!(
                    "byte 0x{byte:02X} has no token (<0x{byte:02X}>) and the vocabulary no unknown token"
                ))
            })
    }

    /// The text of `ids`: `▁` back to spaces, byte tokens joined into characters
    /// (U+FFFD where they do not form one), control and unknown tokens left out with
    /// `skip_special`, unused ones always (as llama.cpp renders them); one leading space
    /// dropped where the encoder adds the prefix.
    pub(crate) fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        for &id in ids {
            let i = id as usize;
            let piece = self.piece(id).ok_or_else(|| {
                Error::Tokenizer(format!(
                    "token id {id} is outside the vocabulary of {} pieces",
                    self.pieces.len()
                ))
            })?;
            match self.types[i] {
                NORMAL => bytes.extend_from_slice(piece.replace('▁', " ").as_bytes()),
                BYTE => match self.bytes.iter().position(|&b| b == Some(id)) {
                    Some(b) => bytes.push(b as u8),
                    None => bytes.extend_from_slice(piece.as_bytes()),
                },
                USER_DEFINED => bytes.extend_from_slice(piece.as_bytes()),
                CONTROL | UNKNOWN if !skip_special => bytes.extend_from_slice(piece.as_bytes()),
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&bytes);
        Ok(match text.strip_prefix(' ') {
            Some(rest) if self.add_space_prefix => rest.to_string(),
            _ => text.into_owned(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab(add_space_prefix: bool) -> Spm {
        let mut pieces: Vec<(&str, f32, u8)> = vec![
            ("<unk>", 0.0, UNKNOWN),
            ("<s>", 0.0, CONTROL),
            ("<ctl>", 0.0, CONTROL),
            ("<user>", 0.0, USER_DEFINED),
            ("▁", -1.0, NORMAL),
            ("a", -2.0, NORMAL),
            ("b", -2.0, NORMAL),
            ("ab", -1.5, NORMAL),
            ("▁a", -0.5, NORMAL),
            ("ba", -0.4, NORMAL),
            ("▁ab", -0.1, NORMAL),
        ];
        let hex: Vec<String> = (0..=255u32).map(|b| format!("<0x{b:02X}>")).collect();
        pieces.extend(hex.iter().map(|h| (h.as_str(), 0.0, BYTE)));
        Spm::new(
            &pieces.iter().map(|p| p.0).collect::<Vec<_>>(),
            pieces.iter().map(|p| p.1).collect(),
            pieces.iter().map(|p| p.2).collect(),
            Some(0),
            add_space_prefix,
        )
        .unwrap()
    }

    fn ids(s: &Spm, text: &str, parse_special: bool) -> Vec<String> {
        s.encode(text, parse_special)
            .unwrap()
            .into_iter()
            .map(|id| s.piece(id).unwrap().to_string())
            .collect()
    }

    #[test]
    fn merges_by_score_then_leftmost() {
        let s = vocab(true);
        // "▁aba": ba (-0.4) before ▁a (-0.5), ab (-1.5) stale by then.
        assert_eq!(ids(&s, "aba", false), ["▁a", "ba"].map(String::from));
        // "▁ab": ▁a first (-0.5 beats ab -1.5), then ▁a+b = ▁ab.
        assert_eq!(ids(&s, "ab", false), ["▁ab"].map(String::from));
        let s = vocab(false);
        assert_eq!(ids(&s, "ab", false), ["ab"].map(String::from));
    }

    #[test]
    fn equal_pieces_resolve_to_the_last_as_in_llama_cpp() {
        let p = Pieces::new(&["b", "a", "c", "a", "ab"]).unwrap();
        assert_eq!(p.find("a"), Some(3));
        assert_eq!(p.find("ab"), Some(4));
        assert_eq!(p.find("b"), Some(0));
        assert_eq!(p.find("aa"), None);
        assert_eq!(p.find(""), None);
        assert_eq!(p.find("d"), None);
    }

    #[test]
    fn characters_without_a_piece_become_bytes() {
        let s = vocab(false);
        assert_eq!(
            ids(&s, "aé", false),
            ["a", "<0xC3>", "<0xA9>"].map(String::from)
        );
        assert_eq!(
            s.decode(&s.encode("aé b", false).unwrap(), false).unwrap(),
            "aé b"
        );
    }

    #[test]
    fn special_pieces_split_the_text_and_reset_the_space_prefix() {
        let s = vocab(true);
        assert_eq!(
            ids(&s, "a<ctl>a", true),
            ["▁a", "<ctl>", "▁a"].map(String::from)
        );
        // Control text stays text without parse_special; user-defined pieces always match.
        assert!(ids(&s, "a<ctl>", false).len() > 2);
        assert_eq!(
            ids(&s, "<user>b", false),
            ["<user>", "▁", "b"].map(String::from)
        );
    }

    #[test]
    fn decode_drops_the_prefix_space_and_optionally_control_tokens() {
        let s = vocab(true);
        let e = s.encode("<s>ab a", true).unwrap();
        assert_eq!(s.decode(&e, false).unwrap(), "<s> ab a");
        assert_eq!(s.decode(&e, true).unwrap(), "ab a");
        assert!(s.decode(&[9999], false).is_err());
    }
}
