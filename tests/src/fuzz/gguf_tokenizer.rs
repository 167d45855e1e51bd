//! Fuzz target `gguf_tokenizer`: a GGUF tokenizer built from metadata the bytes
//! describe, as zoo builds it from a file (`Tokenizer::from_gguf`: BPE for
//! `tokenizer.ggml.model = gpt2`, SentencePiece-style for `llama`), then a short text
//! encoded (with and without special-token parsing, with BOS) and ids decoded, whole
//! and streamed.
//!
//! The bytes are decoded with `arbitrary` into the metadata: the model, `pre`,
//! `tokens`, `scores`, `token_type`, `merges`, the bos/eos/unknown ids and the flags,
//! each sometimes absent, of the wrong type or of another length than `tokens`. The
//! metadata is written as a GGUF file (candle's writer) and opened as zoo opens a
//! checkpoint. Sizes are bounded ([`MAX_TOKENS`], [`MAX_MERGES`], [`MAX_PIECE`],
//! [`MAX_TEXT`], [`MAX_IDS`]) so one input cannot legitimately take seconds.

use arbitrary::{Result, Unstructured};
use candle_core::quantized::gguf_file::{self, Value};

/// Most vocabulary entries.
pub const MAX_TOKENS: usize = 300;
/// Most merges.
pub const MAX_MERGES: usize = 300;
/// Most characters of a piece built from arbitrary text.
pub const MAX_PIECE: usize = 12;
/// Most characters of the text encoded.
pub const MAX_TEXT: usize = 64;
/// Most ids decoded.
pub const MAX_IDS: usize = 32;

/// `tokenizer.ggml.pre` values zoo knows (and one it does not).
const PRES: &[&str] = &[
    "default",
    "gpt-2",
    "llama3",
    "llama-bpe",
    "qwen2",
    "qwen35",
    "starcoder",
    "smollm",
    "falcon",
    "deepseek-coder",
    "deepseek-llm",
    "tekken",
    "unknown-pre",
];

/// Pieces real vocabularies are made of: SentencePiece's space, GPT-2's byte-level
/// characters, byte pieces, special tokens, multi-byte characters.
const ATOMS: &[&str] = &[
    "\u{2581}",
    "\u{120}",
    "\u{10a}",
    "a",
    "b",
    "c",
    "e",
    "h",
    "t",
    " ",
    "\n",
    "'",
    "1",
    "<s>",
    "</s>",
    "<unk>",
    "<|im_start|>",
    "<|endoftext|>",
    "<0x0A>",
    "<0xE2>",
    "<0x82>",
    "<0xAC>",
    "\u{e9}",
    "\u{4e2d}",
    "\u{1f600}",
];

/// One input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut u) else {
        return;
    };
    let metadata: Vec<(&str, &Value)> = input.metadata.iter().map(|(k, v)| (*k, v)).collect();
    let mut bytes = std::io::Cursor::new(Vec::new());
    // Arrays of one type each, by construction, so writing cannot fail.
    gguf_file::write(&mut bytes, &metadata, &[]).expect("a GGUF of metadata only");
    let path = super::scratch_file("tokenizer.gguf", bytes.get_ref());
    let Ok(source) = zoo::GgufSource::open(&path) else {
        return;
    };
    let Ok(tk) = zoo::Tokenizer::from_gguf(&source) else {
        return;
    };
    let _ = tk.vocab_size();
    for parse_special in [false, true] {
        if let Ok(ids) = tk.encode(&input.text, parse_special) {
            let _ = tk.decode(&ids, false);
        }
    }
    let _ = tk.encode_prompt(&input.text);
    let _ = tk.encode_chat(&input.text, "<s>");
    for skip_special in [false, true] {
        let _ = tk.decode(&input.ids, skip_special);
        let mut stream = tk.stream(skip_special);
        for &id in &input.ids {
            let _ = stream.push(id);
        }
        let _ = stream.finish();
    }
    for &id in &input.ids {
        let _ = tk.id_to_token(id);
    }
}

/// The metadata, the text to encode and the ids to decode.
struct Input {
    metadata: Vec<(&'static str, Value)>,
    text: String,
    ids: Vec<u32>,
}

impl Input {
    fn arbitrary(u: &mut Unstructured) -> Result<Self> {
        let mut metadata = Vec::new();
        let model = match u.int_in_range(0..=9u8)? {
            0..=4 => Some(Value::String("gpt2".into())),
            5..=8 => Some(Value::String("llama".into())),
            _ => absent_or_other(u)?,
        };
        metadata.extend(model.map(|v| ("tokenizer.ggml.model", v)));
        let n = u.int_in_range(0..=MAX_TOKENS)?;
        let tokens: Vec<String> = (0..n).map(|_| piece(u)).collect::<Result<_>>()?;
        let tokens_value = if u.ratio(1, 16)? {
            absent_or_other(u)?
        } else {
            Some(Value::Array(
                tokens.iter().cloned().map(Value::String).collect(),
            ))
        };
        metadata.extend(tokens_value.map(|v| ("tokenizer.ggml.tokens", v)));
        let len = |u: &mut Unstructured| -> Result<usize> {
            Ok(if u.ratio(1, 8)? {
                u.int_in_range(0..=MAX_TOKENS)?
            } else {
                n
            })
        };
        let scores = match u.int_in_range(0..=7u8)? {
            0 => None,
            1 => absent_or_other(u)?,
            _ => {
                let m = len(u)?;
                Some(Value::Array(
                    (0..m).map(|i| score(u, i)).collect::<Result<Vec<_>>>()?,
                ))
            }
        };
        metadata.extend(scores.map(|v| ("tokenizer.ggml.scores", v)));
        let types = match u.int_in_range(0..=7u8)? {
            0 => None,
            1 => absent_or_other(u)?,
            _ => {
                let m = len(u)?;
                let wide = u.ratio(1, 8)?;
                Some(Value::Array(
                    (0..m)
                        .map(|_| {
                            Ok(if wide {
                                Value::I32(u.arbitrary()?)
                            } else {
                                Value::I32(u.int_in_range(0..=7)?)
                            })
                        })
                        .collect::<Result<Vec<_>>>()?,
                ))
            }
        };
        metadata.extend(types.map(|v| ("tokenizer.ggml.token_type", v)));
        let merges = match u.int_in_range(0..=7u8)? {
            0 => None,
            1 => absent_or_other(u)?,
            _ => {
                let m = u.int_in_range(0..=MAX_MERGES)?;
                let mut merges = Vec::with_capacity(m);
                for _ in 0..m {
                    let merge = if !tokens.is_empty() && !u.ratio(1, 8)? {
                        let a = u.choose(&tokens)?;
                        let b = u.choose(&tokens)?;
                        format!("{a} {b}")
                    } else {
                        piece(u)?
                    };
                    merges.push(Value::String(merge));
                }
                Some(Value::Array(merges))
            }
        };
        metadata.extend(merges.map(|v| ("tokenizer.ggml.merges", v)));
        let pre = match u.int_in_range(0..=7u8)? {
            0 => None,
            1 => absent_or_other(u)?,
            _ => Some(Value::String(u.choose(PRES)?.to_string())),
        };
        metadata.extend(pre.map(|v| ("tokenizer.ggml.pre", v)));
        for key in [
            "tokenizer.ggml.bos_token_id",
            "tokenizer.ggml.eos_token_id",
            "tokenizer.ggml.unknown_token_id",
            "tokenizer.ggml.padding_token_id",
        ] {
            let id = match u.int_in_range(0..=7u8)? {
                0 | 1 => None,
                2 => absent_or_other(u)?,
                3 => Some(Value::U32(u.arbitrary()?)),
                _ => Some(Value::U32(u.int_in_range(0..=n as u32 + 2)?)),
            };
            metadata.extend(id.map(|v| (key, v)));
        }
        for key in [
            "tokenizer.ggml.add_bos_token",
            "tokenizer.ggml.add_eos_token",
            "tokenizer.ggml.add_space_prefix",
        ] {
            let flag = match u.int_in_range(0..=3u8)? {
                0 => None,
                1 => absent_or_other(u)?,
                _ => Some(Value::Bool(u.arbitrary()?)),
            };
            metadata.extend(flag.map(|v| (key, v)));
        }
        let text = if !tokens.is_empty() && u.ratio(1, 2)? {
            let k = u.int_in_range(1..=8)?;
            (0..k)
                .map(|_| u.choose(&tokens).cloned())
                .collect::<Result<Vec<_>>>()?
                .concat()
        } else {
            bounded_string(u, MAX_TEXT)?
        };
        let k = u.int_in_range(0..=MAX_IDS)?;
        let ids = (0..k)
            .map(|_| {
                Ok(if u.ratio(1, 8)? {
                    u.arbitrary()?
                } else {
                    u.int_in_range(0..=n as u32 + 2)?
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            metadata,
            text,
            ids,
        })
    }
}

/// A vocabulary piece: atoms of real vocabularies, a byte piece, or arbitrary text.
fn piece(u: &mut Unstructured) -> Result<String> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => format!("<0x{:02X}>", u.arbitrary::<u8>()?),
        1 => bounded_string(u, MAX_PIECE)?,
        _ => {
            let k = u.int_in_range(1..=3)?;
            (0..k)
                .map(|_| u.choose(ATOMS).copied())
                .collect::<Result<Vec<_>>>()?
                .concat()
        }
    })
}

/// A score: mostly ordinary negative log-probabilities, sometimes any f32 (NaN,
/// infinities, subnormals).
fn score(u: &mut Unstructured, i: usize) -> Result<Value> {
    Ok(Value::F32(if u.ratio(1, 8)? {
        f32::from_bits(u.arbitrary()?)
    } else {
        -(i as f32) - f32::from(u.int_in_range(0..=3u8)?)
    }))
}

/// A value of a type no tokenizer key has (or `None`: the key is absent).
fn absent_or_other(u: &mut Unstructured) -> Result<Option<Value>> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => None,
        1 => Some(Value::U8(u.arbitrary()?)),
        2 => Some(Value::I64(u.arbitrary()?)),
        3 => Some(Value::F64(u.arbitrary()?)),
        4 => Some(Value::String(bounded_string(u, MAX_PIECE)?)),
        _ => Some(Value::Array(
            (0..u.int_in_range(0..=4)?)
                .map(|_| Ok(Value::U32(u.arbitrary()?)))
                .collect::<Result<_>>()?,
        )),
    })
}

/// Arbitrary text of at most `max` characters.
fn bounded_string(u: &mut Unstructured, max: usize) -> Result<String> {
    let s: String = u.arbitrary()?;
    Ok(s.chars().take(max).collect())
}
