//! The metadata keys zoo reads, checked when the file is opened (before candle's
//! values are built): each present key has the type llama.cpp writes and a value in a
//! sane range, the tokenizer arrays agree in length, token ids lie inside the
//! vocabulary, and the sizes agree with each other (heads divide the embedding, kv
//! heads divide heads). A missing key is not an error here: the architecture that
//! reads it says so at load.

use super::gguf_header::{type_name, Header, Kv};
use super::gguf_values::{array_scalars, scalar, Scalar};

/// What a key should hold.
#[derive(Clone, Copy)]
enum Kind {
    /// An integer in `min..=max`.
    Int(i128, i128),
    /// An integer in `min..=max`, or (per layer) an array of integers in `0..=max`.
    IntOrArray(i128, i128),
    /// A finite float greater than 0.
    Positive,
    Str,
    Bool,
}

use Kind::*;

/// `{arch}.` keys zoo's architectures read.
const ARCH_KEYS: &[(&str, Kind)] = &[
    ("context_length", Int(1, 1 << 24)),
    ("embedding_length", Int(1, 1 << 18)),
    ("block_count", Int(1, 1 << 12)),
    ("feed_forward_length", IntOrArray(0, 1 << 20)),
    ("attention.head_count", IntOrArray(1, 1 << 12)),
    ("attention.head_count_kv", IntOrArray(1, 1 << 12)),
    ("attention.key_length", Int(1, 1 << 16)),
    ("attention.value_length", Int(1, 1 << 16)),
    ("attention.sliding_window", Int(0, 1 << 24)),
    ("rope.dimension_count", Int(0, 1 << 16)),
    ("expert_count", Int(0, 1 << 16)),
    ("expert_used_count", Int(0, 1 << 16)),
    ("expert_feed_forward_length", Int(0, 1 << 20)),
    ("vocab_size", Int(1, 1 << 24)),
    ("attention.layer_norm_rms_epsilon", Positive),
    ("attention.layer_norm_epsilon", Positive),
    ("rope.freq_base", Positive),
    ("rope.scaling.factor", Positive),
    ("final_logit_softcapping", Positive),
    ("attn_logit_softcapping", Positive),
];

/// Keys outside `{arch}.` that zoo reads.
const OTHER_KEYS: &[(&str, Kind)] = &[
    ("general.architecture", Str),
    ("tokenizer.ggml.model", Str),
    ("tokenizer.ggml.pre", Str),
    ("tokenizer.chat_template", Str),
    ("tokenizer.ggml.add_bos_token", Bool),
    ("tokenizer.ggml.add_eos_token", Bool),
    ("tokenizer.ggml.add_space_prefix", Bool),
];

/// Token ids that must name a token of the vocabulary.
const TOKEN_IDS: &[&str] = &[
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.eot_token_id",
    "tokenizer.ggml.eom_token_id",
    "tokenizer.ggml.unknown_token_id",
];

/// A key whose value is wrong: the key and what is wrong with it.
pub(crate) type KeyError = (String, String);

const FIX: &str = "the metadata is corrupt or was written by a broken converter: convert the model again with a recent llama.cpp";

fn describe(b: &[u8], kv: &Kv) -> String {
    match kv.array {
        Some((et, n)) => format!("an array of {n} {}", type_name(et)),
        None => match scalar(b, kv) {
            Some(Scalar::Str(s)) => format!(
                "the string {:?}",
                String::from_utf8_lossy(&s[..s.len().min(40)])
            ),
            Some(Scalar::Int(x)) => format!("{} {x}", type_name(kv.ty)),
            Some(Scalar::Float(x)) => format!("{} {x}", type_name(kv.ty)),
            Some(Scalar::Bool(x)) => format!("the bool {x}"),
            None => format!("a {}", type_name(kv.ty)),
        },
    }
}

fn check_kind(b: &[u8], kv: &Kv, kind: Kind) -> Result<(), KeyError> {
    let bad = |expected: String| {
        Err((
            kv.key.to_string(),
            format!("should be {expected} but is {}; {FIX}", describe(b, kv)),
        ))
    };
    let value = scalar(b, kv);
    match kind {
        Int(lo, hi) | IntOrArray(lo, hi) => match value {
            Some(Scalar::Int(x)) if (lo..=hi).contains(&x) => Ok(()),
            None if matches!(kind, IntOrArray(..)) && kv.array.is_some() => {
                let (et, _) = kv.array.unwrap_or_default();
                let ok = matches!(et, 0..=5 | 10 | 11)
                    && array_scalars(b, kv)
                        .all(|v| matches!(v, Scalar::Int(x) if (0..=hi).contains(&x)));
                if ok {
                    Ok(())
                } else {
                    bad(format!("an integer from {lo} to {hi} (or one per layer)"))
                }
            }
            _ => bad(format!("an integer from {lo} to {hi}")),
        },
        Positive => match value {
            Some(Scalar::Float(x)) if x.is_finite() && x > 0.0 => Ok(()),
            _ => bad("a float greater than 0 (f32)".into()),
        },
        Str => match value {
            Some(Scalar::Str(_)) => Ok(()),
            _ => bad("a string".into()),
        },
        Bool => match value {
            Some(Scalar::Bool(_)) => Ok(()),
            _ => bad("a bool".into()),
        },
    }
}

fn int(b: &[u8], kv: Option<&Kv>) -> Option<i128> {
    match scalar(b, kv?) {
        Some(Scalar::Int(x)) => Some(x),
        _ => None,
    }
}

/// Checks every key zoo reads that the header holds (see the module doc).
pub(crate) fn check_keys(b: &[u8], h: &Header) -> Result<(), KeyError> {
    for (key, kind) in OTHER_KEYS {
        if let Some(kv) = h.kv(key) {
            check_kind(b, kv, *kind)?;
        }
    }
    let arch = match h.kv("general.architecture").and_then(|kv| scalar(b, kv)) {
        Some(Scalar::Str(s)) => String::from_utf8_lossy(s).into_owned(),
        _ => String::new(),
    };
    let key = |suffix: &str| format!("{arch}.{suffix}");
    if !arch.is_empty() {
        for (suffix, kind) in ARCH_KEYS {
            if let Some(kv) = h.kv(&key(suffix)) {
                check_kind(b, kv, *kind)?;
            }
        }
        let get = |suffix: &str| int(b, h.kv(&key(suffix)));
        if let (Some(embd), Some(heads)) = (get("embedding_length"), get("attention.head_count")) {
            if get("attention.key_length").is_none() && embd % heads != 0 {
                return Err((
                    key("embedding_length"),
                    format!("is {embd}, not a multiple of `{}` = {heads} (and no `{}` gives the head size); {FIX}", key("attention.head_count"), key("attention.key_length")),
                ));
            }
            if let Some(kv_heads) = get("attention.head_count_kv") {
                if heads % kv_heads != 0 {
                    return Err((
                        key("attention.head_count_kv"),
                        format!("is {kv_heads}, which does not divide `{}` = {heads}: every kv head serves the same number of query heads; {FIX}", key("attention.head_count")),
                    ));
                }
            }
        }
        if let (Some(used), Some(experts)) = (get("expert_used_count"), get("expert_count")) {
            if experts > 0 && used > experts {
                return Err((
                    key("expert_used_count"),
                    format!(
                        "is {used}, more than `{}` = {experts}; {FIX}",
                        key("expert_count")
                    ),
                ));
            }
        }
    }
    check_vocabulary(b, h)
}

/// The tokenizer arrays: element types, equal lengths, ids inside the vocabulary.
fn check_vocabulary(b: &[u8], h: &Header) -> Result<(), KeyError> {
    let arrays: [(&str, &[u32], &str); 4] = [
        ("tokenizer.ggml.tokens", &[8], "an array of strings"),
        ("tokenizer.ggml.scores", &[6, 12], "an array of f32"),
        (
            "tokenizer.ggml.token_type",
            &[0, 1, 2, 3, 4, 5, 10, 11],
            "an array of integers (i32)",
        ),
        ("tokenizer.ggml.merges", &[8], "an array of strings"),
    ];
    let mut n_tokens = None;
    for (key, types, expected) in arrays {
        let Some(kv) = h.kv(key) else { continue };
        let len = match kv.array {
            Some((et, n)) if types.contains(&et) => n,
            _ => {
                return Err((
                    key.into(),
                    format!("should be {expected} but is {}; {FIX}", describe(b, kv)),
                ))
            }
        };
        if key == "tokenizer.ggml.tokens" {
            if len == 0 {
                return Err((
                    key.into(),
                    format!("is empty; a vocabulary has tokens; {FIX}"),
                ));
            }
            n_tokens = Some(len);
        } else if key != "tokenizer.ggml.merges" {
            if let Some(n) = n_tokens.filter(|&n| n != len) {
                return Err((
                    key.into(),
                    format!("has {len} entries but `tokenizer.ggml.tokens` has {n}: there is one per token; {FIX}"),
                ));
            }
        }
    }
    for key in TOKEN_IDS {
        let Some(kv) = h.kv(key) else { continue };
        check_kind(b, kv, Int(0, u32::MAX as i128))?;
        if let (Some(id), Some(n)) = (int(b, Some(kv)), n_tokens) {
            if id >= n as i128 {
                return Err((
                    key.to_string(),
                    format!(
                        "is {id}, but the vocabulary has {n} tokens (ids 0 to {}); {FIX}",
                        n - 1
                    ),
                ));
            }
        }
    }
    Ok(())
}
