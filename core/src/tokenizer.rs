//! Tokenizers: tokenizer.json through `tokenizers`, and the tokenizer embedded in a
//! GGUF file (`tokenizer.ggml.*`): byte-level BPE vocabularies rebuilt as a
//! `tokenizers` pipeline that matches llama.cpp, SentencePiece-style ones run by
//! [`crate::spm`] as llama.cpp runs them.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, PreTokenizerWrapper, SplitDelimiterBehavior};

use crate::source::as_u64;
use crate::source::GgufSource;
use crate::{Error, ModelSource, Result};
mod document;
mod stream;

pub use stream::{Detokenizer, TokenStream};

/// Where a tokenizer came from and which algorithm it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenizerKind {
    /// A tokenizer.json read by `tokenizers`.
    HfJson,
    /// GGUF `tokenizer.ggml.model = gpt2`: byte-level BPE, with the named pre-tokenizer.
    GgufBpe { pre: String },
    /// GGUF `tokenizer.ggml.model = llama`: SentencePiece-style (score-ordered merges of
    /// characters, `▁` for spaces, byte fallback).
    GgufSpm { add_space_prefix: bool },
}

impl std::fmt::Display for TokenizerKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TokenizerKind::HfJson => f.write_str("tokenizer.json"),
            TokenizerKind::GgufBpe { pre } => write!(f, "gguf bpe (gpt2, pre-tokenizer {pre})"),
            TokenizerKind::GgufSpm { add_space_prefix } => {
                write!(
                    f,
                    "gguf sentencepiece (llama, add_space_prefix {add_space_prefix})"
                )
            }
        }
    }
}

/// What runs the tokenizer. One per tokenizer, behind an `Arc`: the variants' sizes
/// do not matter.
#[allow(clippy::large_enum_variant)]
enum Backend {
    /// One `tokenizers` instance (a second, for encoding special-token text as plain
    /// text, would double the memory); the lock guards the switch between the two
    /// encodings.
    Hf(std::sync::Mutex<tokenizers::Tokenizer>),
    /// GGUF SentencePiece-style vocabularies, run as llama.cpp does.
    Spm(crate::spm::Spm),
}

/// A tokenizer with the BOS policy of its model.
#[derive(Clone)]
pub struct Tokenizer {
    /// Clones share it.
    backend: std::sync::Arc<Backend>,
    kind: TokenizerKind,
    bos_id: Option<u32>,
    add_bos: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.vocab_size())
            .field("bos_id", &self.bos_id)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

/// The pre-tokenizer regexes llama.cpp applies for each `tokenizer.ggml.pre`, in
/// order (from llama.cpp's `llm_tokenizer_bpe`).
fn bpe_pre_regexes(pre: &str) -> Option<&'static [&'static str]> {
    const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
    const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "default" => &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"],
        "gpt-2" | "gpt2" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" => &[GPT2],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => &[r"\p{N}", GPT2],
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral" | "dbrx" | "smaug-bpe"
        | "chatglm-bpe" => &[LLAMA3],
        "qwen2" | "stablelm2" | "deepseek-r1-qwen" | "megrez" | "hunyuan" | "solar-open"
        | "grok-2" => &[QWEN2],
        "qwen35" => &[QWEN35],
        "falcon" => &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"],
        "deepseek-coder" => &[
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
            r"\p{N}",
        ],
        "deepseek-llm" => &[
            r"[\r\n]",
            concat!(
                r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}",
                r"\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}",
                r"\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}",
                r"\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}",
                r"\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}",
                r"\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}",
                r"\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}",
                r"\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}",
                r"\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}",
                r"\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}",
                r"\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}",
                r"\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}",
                r"\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
            ),
            r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
            r"\s+$",
            r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
            r"\p{N}+",
        ],
        _ => return None,
    })
}

impl Tokenizer {
    /// The tokenizer of a checkpoint: tokenizer.json beside safetensors weights, or
    /// the one embedded in a GGUF file.
    pub fn for_source(source: &ModelSource) -> Result<Self> {
        match source {
            ModelSource::Safetensors(s) => match &s.tokenizer_json {
                Some(p) => Self::from_file(p),
                None => Err(Error::MissingFile {
                    path: s.dir.clone(),
                    what: "tokenizer.json",
                    hint: "save the tokenizer beside the weights (transformers: `tokenizer.save_pretrained(dir)`)".into(),
                }),
            },
            ModelSource::Gguf(g) => Self::from_gguf(g),
        }
    }

    /// A tokenizer.json file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let tk = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| Error::Tokenizer(format!("cannot read {}: {e}", path.display())))?;
        Ok(Self::from_parts(tk, TokenizerKind::HfJson, None, false))
    }

    /// The tokenizer embedded in a GGUF file.
    pub fn from_gguf(g: &GgufSource) -> Result<Self> {
        let model = g.str_opt("tokenizer.ggml.model")?.ok_or_else(|| Error::GgufMetadata {
            path: g.path.clone(),
            key: "tokenizer.ggml.model".into(),
            problem: "is missing, so the file carries no tokenizer; pass a directory with tokenizer.json instead".into(),
        })?;
        match model {
            "gpt2" => Self::gguf_bpe(g),
            "llama" => Self::gguf_spm(g),
            other => Err(Error::Tokenizer(format!(
                "GGUF tokenizer model `{other}` is not supported yet (supported: gpt2, llama); use the model's tokenizer.json"
            ))),
        }
    }

    fn gguf_bpe(g: &GgufSource) -> Result<Self> {
        let pre = g
            .str_opt("tokenizer.ggml.pre")?
            .unwrap_or("default")
            .to_string();
        let regexes = bpe_pre_regexes(&pre).ok_or_else(|| {
            Error::Tokenizer(format!(
                "GGUF BPE pre-tokenizer `{pre}` is not supported yet; please report it with the model's name"
            ))
        })?;
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let merges = g.str_array("tokenizer.ggml.merges")?;
        let types = token_types(g, tokens.len());
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.to_string(), i as u32))
            .collect();
        let merges: Vec<(String, String)> = merges
            .iter()
            .map(|m| {
                let (a, b) = m.split_once(' ').ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "GGUF merge `{m}` is not two tokens separated by a space"
                    ))
                })?;
                // `tokenizers` refuses such a merge too, but may index past its buffer
                // first (a merged text longer than every token panics: found by the
                // `gguf_tokenizer` fuzz target).
                if let Some(t) = [a, b, &format!("{a}{b}")]
                    .into_iter()
                    .find(|t| !vocab.contains_key(*t))
                {
                    return Err(Error::Tokenizer(format!(
                        "GGUF merge `{m}` needs `{t}`, which is not in tokenizer.ggml.tokens; the file's merges and tokens do not belong together"
                    )));
                }
                Ok((a.to_string(), b.to_string()))
            })
            .collect::<Result<_>>()?;
        let ignore_merges = matches!(
            pre.as_str(),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "pixtral"
        );
        let bpe = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .ignore_merges(ignore_merges)
            .build()
            .map_err(Error::tokenizer)?;
        let mut tk = tokenizers::Tokenizer::new(bpe);
        let mut pres: Vec<PreTokenizerWrapper> = regexes
            .iter()
            .map(|re| {
                Split::new(
                    SplitPattern::Regex(re.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map(PreTokenizerWrapper::Split)
                .map_err(Error::tokenizer)
            })
            .collect::<Result<_>>()?;
        pres.push(PreTokenizerWrapper::ByteLevel(ByteLevel::new(
            false, false, false,
        )));
        tk.with_pre_tokenizer(Some(Sequence::new(pres)));
        tk.with_decoder(Some(ByteLevelDecoder::default()));
        add_gguf_added_tokens(&mut tk, &tokens, &types)?;
        let bos_id = g.u64_opt("tokenizer.ggml.bos_token_id")?.map(|v| v as u32);
        // llama.cpp's default for BPE vocabularies is not to add BOS unless the file says so.
        let add_bos = g.bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(false);
        Ok(Self::from_parts(
            tk,
            TokenizerKind::GgufBpe { pre },
            bos_id,
            add_bos,
        ))
    }

    /// SentencePiece-style vocabularies as llama.cpp runs them (see [`crate::spm`]).
    fn gguf_spm(g: &GgufSource) -> Result<Self> {
        let tokens = g.str_array("tokenizer.ggml.tokens")?;
        let scores: Vec<f32> = match g.get("tokenizer.ggml.scores") {
            Some(Value::Array(a)) => a
                .iter()
                .map(|v| match v {
                    Value::F32(x) => Ok(*x),
                    other => Err(Error::Tokenizer(format!(
                        "tokenizer.ggml.scores holds {:?}, not f32",
                        other.value_type()
                    ))),
                })
                .collect::<Result<_>>()?,
            _ => {
                return Err(Error::GgufMetadata {
                    path: g.path.clone(),
                    key: "tokenizer.ggml.scores".into(),
                    problem: "is missing; a SentencePiece-style vocabulary needs the piece scores"
                        .into(),
                })
            }
        };
        let types = token_types(g, tokens.len())
            .into_iter()
            .map(|t| u8::try_from(t).unwrap_or(0))
            .collect();
        let add_space_prefix = g
            .bool_opt("tokenizer.ggml.add_space_prefix")?
            .unwrap_or(true);
        let unk = g
            .u64_opt("tokenizer.ggml.unknown_token_id")?
            .filter(|&id| (id as usize) < tokens.len())
            .map(|id| id as u32);
        let spm = crate::spm::Spm::new(&tokens, scores, types, unk, add_space_prefix)?;
        let bos_id = g.u64_opt("tokenizer.ggml.bos_token_id")?.map(|v| v as u32);
        // llama.cpp's default for SentencePiece vocabularies is to add BOS.
        let add_bos = g.bool_opt("tokenizer.ggml.add_bos_token")?.unwrap_or(true);
        Ok(Self {
            backend: std::sync::Arc::new(Backend::Spm(spm)),
            kind: TokenizerKind::GgufSpm { add_space_prefix },
            bos_id,
            add_bos,
        })
    }

    fn from_parts(
        tk: tokenizers::Tokenizer,
        kind: TokenizerKind,
        bos_id: Option<u32>,
        add_bos: bool,
    ) -> Self {
        Self {
            backend: std::sync::Arc::new(Backend::Hf(std::sync::Mutex::new(tk))),
            kind,
            bos_id,
            add_bos,
        }
    }

    pub fn kind(&self) -> &TokenizerKind {
        &self.kind
    }

    /// The vocabulary size, added tokens included.
    pub fn vocab_size(&self) -> usize {
        match &*self.backend {
            Backend::Hf(tk) => lock(tk).get_vocab_size(true),
            Backend::Spm(spm) => spm.vocab_size(),
        }
    }

    /// The ids of `text` alone: no BOS, no post-processing. With `parse_special`,
    /// special-token text (`<|im_start|>`) becomes the special token; without, it is
    /// tokenized as text, like llama.cpp's `llama-tokenize` default.
    pub fn encode(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        match &*self.backend {
            Backend::Hf(tk) => {
                let mut tk = lock(tk);
                tk.set_encode_special_tokens(!parse_special);
                let enc = tk.encode(text, false).map_err(Error::tokenizer)?;
                Ok(enc.get_ids().to_vec())
            }
            Backend::Spm(spm) => spm.encode(text, parse_special),
        }
    }

    /// The ids of a prompt as the model expects it: BOS where the model adds one,
    /// special-token text parsed.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with_bos(text, true)
    }

    /// BOS where the model adds one (a tokenizer.json: what its post-processor adds),
    /// then `text`, special-token text parsed or taken as plain text.
    fn encode_with_bos(&self, text: &str, parse_special: bool) -> Result<Vec<u32>> {
        match (&self.kind, &*self.backend) {
            (TokenizerKind::HfJson, Backend::Hf(tk)) => {
                let mut tk = lock(tk);
                tk.set_encode_special_tokens(!parse_special);
                let enc = tk.encode(text, true).map_err(Error::tokenizer)?;
                Ok(enc.get_ids().to_vec())
            }
            _ => {
                let mut ids = Vec::new();
                if self.add_bos {
                    ids.extend(self.bos_id);
                }
                ids.extend(self.encode(text, parse_special)?);
                Ok(ids)
            }
        }
    }

    /// The ids of a rendered chat template: special-token text parsed, BOS added where
    /// the model adds one unless the template already wrote it (`template_bos`).
    pub fn encode_chat(&self, rendered: &str, template_bos: &str) -> Result<Vec<u32>> {
        let mut ids = Vec::new();
        let writes_bos = !template_bos.is_empty() && rendered.starts_with(template_bos);
        if self.add_bos && !writes_bos {
            ids.extend(self.bos_id);
        }
        ids.extend(self.encode(rendered, true)?);
        Ok(ids)
    }

    /// Decodes `ids` to text; `skip_special` leaves out control tokens.
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        match &*self.backend {
            Backend::Hf(tk) => lock(tk).decode(ids, skip_special).map_err(Error::tokenizer),
            Backend::Spm(spm) => spm.decode(ids, skip_special),
        }
    }

    /// The text of one token as the vocabulary spells it.
    pub fn id_to_token(&self, id: u32) -> Option<String> {
        match &*self.backend {
            Backend::Hf(tk) => lock(tk).id_to_token(id),
            Backend::Spm(spm) => spm.piece(id).map(str::to_string),
        }
    }

    /// A streaming detokenizer over this tokenizer.
    pub fn stream(&self, skip_special: bool) -> TokenStream<'_> {
        self.stream_after(&[], skip_special)
    }

    /// A streaming detokenizer that continues `context` (e.g. the prompt): its first
    /// piece has the leading space it has after the context, which decoding it alone
    /// would strip (SentencePiece drops the space of a first token).
    pub fn stream_after(&self, context: &[u32], skip_special: bool) -> TokenStream<'_> {
        TokenStream {
            tokenizer: self,
            state: Detokenizer::after(context, skip_special),
        }
    }
}

/// The `tokenizers` instance; a panic elsewhere while it was held leaves it usable (no
/// method leaves it half-changed).
fn lock(
    tk: &std::sync::Mutex<tokenizers::Tokenizer>,
) -> std::sync::MutexGuard<'_, tokenizers::Tokenizer> {
    tk.lock().unwrap_or_else(|e| e.into_inner())
}

/// `tokenizer.ggml.token_type`: 1 normal, 2 unknown, 3 control, 4 user-defined,
/// 5 unused, 6 byte (all normal where the key is absent).
fn token_types(g: &GgufSource, n: usize) -> Vec<u64> {
    match g.get("tokenizer.ggml.token_type") {
        Some(Value::Array(a)) => a.iter().map(|v| as_u64(v).unwrap_or(1)).collect(),
        _ => vec![1; n],
    }
}

/// Control tokens (type 3) become special tokens; user-defined tokens (type 4) are
/// always matched as whole tokens in the raw text, as llama.cpp does.
fn add_gguf_added_tokens(
    tk: &mut tokenizers::Tokenizer,
    tokens: &[&str],
    types: &[u64],
) -> Result<()> {
    let mut specials = Vec::new();
    let mut user = Vec::new();
    for (t, ty) in tokens.iter().zip(types) {
        match ty {
            3 => specials.push(AddedToken::from(t.to_string(), true).normalized(false)),
            4 => user.push(AddedToken::from(t.to_string(), false).normalized(false)),
            _ => {}
        }
    }
    tk.add_special_tokens(specials).map_err(Error::tokenizer)?;
    tk.add_tokens(user).map_err(Error::tokenizer)?;
    Ok(())
}
