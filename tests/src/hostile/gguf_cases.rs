//! Bad GGUF files, each the tiny quantized-llama q8_0 fixture with one thing broken:
//! every header field out of range, metadata of the wrong type for the keys zoo
//! reads, tensors missing, of the wrong shape or type, offsets misaligned,
//! overlapping or past the end.

use std::path::Path;

use super::gguf_writer::{GgufParts, Val};
use super::{fixtures, Case, Kind};

/// Where in `bytes` the value of metadata key `key` starts (after its type).
fn value_at(bytes: &[u8], key: &str) -> usize {
    let mut needle = (key.len() as u64).to_le_bytes().to_vec();
    needle.extend(key.as_bytes());
    let at = bytes
        .windows(needle.len())
        .position(|w| *w == needle[..])
        .unwrap_or_else(|| panic!("no key {key}"));
    at + needle.len() + 4
}

/// Where in `bytes` the length of the name `name` (a key or a tensor) is written.
fn name_at(bytes: &[u8], name: &str) -> usize {
    value_at(bytes, name) - 4 - name.len() - 8
}

fn patch(bytes: &mut [u8], at: usize, new: &[u8]) {
    bytes[at..at + new.len()].copy_from_slice(new);
}

struct Writer<'a> {
    dir: &'a Path,
    base: GgufParts,
    cases: Vec<Case>,
}

impl Writer<'_> {
    /// A case from the parts, edited by `f`.
    fn parts(&mut self, name: &str, kind: Kind, says: &str, f: impl FnOnce(&mut GgufParts)) {
        let mut p = self.base.clone();
        f(&mut p);
        self.bytes(name, kind, says, p.bytes());
    }

    /// A case from the valid file's bytes, edited by `f`.
    fn raw(&mut self, name: &str, kind: Kind, says: &str, f: impl FnOnce(&mut Vec<u8>)) {
        let mut b = self.base.bytes();
        f(&mut b);
        self.bytes(name, kind, says, b);
    }

    fn bytes(&mut self, name: &str, kind: Kind, says: &str, bytes: Vec<u8>) {
        let path = self.dir.join(format!("{name}.gguf"));
        std::fs::write(&path, bytes).expect("writing a corpus file");
        self.cases.push(Case::new(name, path, kind, says));
    }

    /// `key` set to `v`: a GgufMetadata error naming it.
    fn key(&mut self, name: &str, key: &str, v: Val) {
        let says = format!("`{key}`");
        self.parts(name, Kind::GgufMetadata, &says, |p| {
            p.set(key, v);
        });
    }
}

/// The valid file every case breaks.
pub fn valid() -> anyhow::Result<GgufParts> {
    GgufParts::read(&fixtures().join("quantized-llama/q8_0/model.gguf"))
}

/// Writes the GGUF cases under `dir`.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<Case>> {
    use Kind::*;
    std::fs::create_dir_all(dir)?;
    let mut w = Writer {
        dir,
        base: valid()?,
        cases: Vec::new(),
    };
    // The file and its header fields.
    w.bytes("empty-file", UnknownFormat, "an empty file", Vec::new());
    w.raw("magic-wrong", UnknownFormat, "GGUX", |b| b[3] = b'X');
    w.raw("version-0", InvalidGguf, "version 0", |b| {
        patch(b, 4, &0u32.to_le_bytes())
    });
    w.raw("version-4", InvalidGguf, "version 4", |b| {
        patch(b, 4, &4u32.to_le_bytes())
    });
    w.raw("version-big-endian", InvalidGguf, "big-endian", |b| {
        patch(b, 4, &3u32.to_be_bytes())
    });
    w.parts(
        "tensor-count-2^40",
        InvalidGguf,
        "1099511627776 tensors",
        |p| p.tensor_count = Some(1 << 40),
    );
    w.parts(
        "tensor-count-past-file",
        TruncatedGguf,
        "60000 tensors",
        |p| p.tensor_count = Some(60_000),
    );
    w.parts(
        "kv-count-2^40",
        InvalidGguf,
        "1099511627776 metadata keys",
        |p| p.kv_count = Some(1 << 40),
    );
    w.parts(
        "kv-count-past-file",
        TruncatedGguf,
        "60000 metadata keys",
        |p| p.kv_count = Some(60_000),
    );
    w.raw(
        "key-length-2^62",
        InvalidGguf,
        "length of 4611686018427387904",
        |b| {
            let at = name_at(b, "general.name");
            patch(b, at, &(1u64 << 62).to_le_bytes())
        },
    );
    w.raw("key-length-0", InvalidGguf, "is empty", |b| {
        let at = name_at(b, "general.type");
        patch(b, at, &0u64.to_le_bytes())
    });
    w.parts("key-not-utf8", InvalidGguf, "not UTF-8", |p| {
        p.kvs[1].0 = b"general.\xff\xfe".to_vec()
    });
    w.parts("key-duplicate", InvalidGguf, "appears twice", |p| {
        let kv = p.kvs[4].clone();
        p.kvs.push(kv);
    });
    w.raw("value-type-13", InvalidGguf, "value type 13", |b| {
        let at = value_at(b, "general.type") - 4;
        patch(b, at, &13u32.to_le_bytes())
    });
    w.parts("value-bool-2", InvalidGguf, "bool of value 2", |p| {
        p.set("tokenizer.ggml.add_bos_token", Val::bool_byte(2));
    });
    w.raw(
        "string-length-2^62",
        InvalidGguf,
        "length of 4611686018427387904",
        |b| {
            let at = value_at(b, "general.name");
            patch(b, at, &(1u64 << 62).to_le_bytes())
        },
    );
    w.raw(
        "string-length-past-file",
        TruncatedGguf,
        "header ends early",
        |b| {
            let at = value_at(b, "general.name");
            patch(b, at, &100_000_000u64.to_le_bytes())
        },
    );
    w.raw(
        "array-length-2^40",
        InvalidGguf,
        "1099511627776 elements",
        |b| {
            let at = value_at(b, "tokenizer.ggml.tokens") + 4;
            patch(b, at, &(1u64 << 40).to_le_bytes())
        },
    );
    w.raw(
        "array-length-past-file",
        TruncatedGguf,
        "array of 1000000 string",
        |b| {
            let at = value_at(b, "tokenizer.ggml.tokens") + 4;
            patch(b, at, &1_000_000u64.to_le_bytes())
        },
    );
    w.raw("array-element-type-99", InvalidGguf, "value type 99", |b| {
        let at = value_at(b, "tokenizer.ggml.tokens");
        patch(b, at, &99u32.to_le_bytes())
    });
    w.parts("array-nested-3-deep", InvalidGguf, "nests arrays", |p| {
        let inner = Val::Arr(4, vec![Val::u32(1)], None);
        let mid = Val::Arr(9, vec![inner], None);
        p.set("general.tags", Val::Arr(9, vec![mid], None));
    });
    w.parts(
        "alignment-0",
        InvalidGguf,
        "`general.alignment` is 0",
        |p| {
            p.set("general.alignment", Val::u32(0));
        },
    );
    w.parts(
        "alignment-48",
        InvalidGguf,
        "`general.alignment` is 48",
        |p| {
            p.set("general.alignment", Val::u32(48));
            p.alignment = 48;
        },
    );
    w.parts(
        "alignment-string",
        InvalidGguf,
        "`general.alignment` is a string",
        |p| {
            p.set("general.alignment", Val::str("32"));
        },
    );
    w.raw("cut-in-header", TruncatedGguf, "header ends early", |b| {
        b.truncate(300)
    });
    w.raw(
        "cut-in-tensor-data",
        TruncatedGguf,
        "output_norm.weight",
        |b| b.truncate(b.len() - 100),
    );
    tensor_cases(&mut w);
    metadata_cases(&mut w);
    // A Gemma 3 file whose sliding window is 0: its local layers would attend over no
    // position (the attention panicked on it). Only loading the model sees it.
    let mut gemma = GgufParts::read(&fixtures().join("quantized-gemma3/q8_0/model.gguf"))?;
    gemma.set("gemma3.attention.sliding_window", Val::u32(0));
    w.bytes(
        "gemma3-sliding-window-0",
        GgufMetadata,
        "`gemma3.attention.sliding_window` is missing or 0",
        gemma.bytes(),
    );
    if let Some(case) = w.cases.last_mut() {
        case.inspect_sees = false;
    }
    Ok(w.cases)
}

/// The tensor directory: dimensions, types, offsets, missing or stray tensors.
fn tensor_cases(w: &mut Writer) {
    use Kind::*;
    w.parts("tensor-5-dims", InvalidGguf, "5 dimensions", |p| {
        p.tensor("blk.0.attn_norm.weight").ne = vec![64, 1, 1, 1, 1];
    });
    w.parts("tensor-dims-4x2^40", InvalidGguf, "overflows", |p| {
        p.tensor("blk.0.attn_norm.weight").ne = vec![1 << 40; 4];
    });
    w.parts("tensor-dim-0", InvalidGguf, "one of them 0", |p| {
        p.tensor("blk.0.attn_norm.weight").ne = vec![64, 0];
    });
    w.parts("tensor-type-iq4_nl", InvalidGguf, "IQ4_NL", |p| {
        p.tensor("blk.0.attn_q.weight").ty = 20;
    });
    w.parts("tensor-type-99", InvalidGguf, "ggml type id 99", |p| {
        p.tensor("blk.0.attn_q.weight").ty = 99;
    });
    w.parts(
        "tensor-partial-block",
        InvalidGguf,
        "rows of 48 elements",
        |p| {
            p.tensor("blk.0.attn_q.weight").ne = vec![48, 64];
        },
    );
    w.parts(
        "tensor-offset-misaligned",
        InvalidGguf,
        "not a multiple of the file's alignment",
        |p| {
            p.tensor("blk.0.ffn_up.weight").offset = Some(53056 + 4);
        },
    );
    w.parts(
        "tensor-offset-past-end",
        TruncatedGguf,
        "blk.0.ffn_up.weight",
        |p| {
            p.tensor("blk.0.ffn_up.weight").offset = Some(1 << 40);
        },
    );
    w.parts("tensor-offset-wraps", TruncatedGguf, "past 2^64", |p| {
        p.tensor("blk.0.ffn_up.weight").offset = Some(u64::MAX - 31);
    });
    w.parts("tensors-overlap", InvalidGguf, "overlap", |p| {
        p.tensor("blk.0.ffn_up.weight").offset = Some(44352);
    });
    w.parts(
        "tensor-name-duplicate",
        InvalidGguf,
        "appears twice in the tensor directory",
        |p| {
            p.tensor("blk.1.ffn_up.weight").name = b"blk.0.ffn_up.weight".to_vec();
        },
    );
    w.parts("tensor-name-empty", InvalidGguf, "is empty", |p| {
        p.tensor("blk.0.attn_norm.weight").name = Vec::new();
    });
    w.raw(
        "tensor-name-length-2^62",
        InvalidGguf,
        "length of 4611686018427387904",
        |b| {
            let at = name_at(b, "output_norm.weight");
            patch(b, at, &(1u64 << 62).to_le_bytes())
        },
    );
    w.parts(
        "tensor-missing-token-embd",
        InvalidGguf,
        "token_embd.weight",
        |p| {
            p.remove_tensors(|n| n == "token_embd.weight");
        },
    );
    w.parts(
        "tensor-missing-block-1",
        InvalidGguf,
        "block 1 has no tensors",
        |p| {
            p.remove_tensors(|n| n.starts_with("blk.1."));
        },
    );
    w.parts(
        "tensor-stray-block-7",
        InvalidGguf,
        "belongs to block 7",
        |p| {
            p.tensor("blk.1.attn_norm.weight").name = b"blk.7.attn_norm.weight".to_vec();
        },
    );
    w.parts(
        "tensor-embedding-wrong-width",
        InvalidGguf,
        "token_embd.weight",
        |p| {
            let t = p.tensor("token_embd.weight");
            t.ne = vec![128, 130];
        },
    );
    w.parts(
        "tensor-norm-wrong-shape",
        InvalidGguf,
        "output_norm.weight",
        |p| {
            p.tensor("output_norm.weight").ne = vec![32, 2];
        },
    );
    // What only the llama loader knows: a tensor it reads, and the shape it expects.
    let mut c = w.cases.len();
    w.parts(
        "tensor-missing-ffn-up",
        InvalidGguf,
        "blk.0.ffn_up.weight",
        |p| {
            p.remove_tensors(|n| n == "blk.0.ffn_up.weight");
        },
    );
    w.parts(
        "tensor-attn-q-wrong-shape",
        InvalidGguf,
        "has shape [128, 32] where the hyper-parameters say [64, 64]",
        |p| {
            // Same bytes, other shape: 32 x 128 instead of 64 x 64; the loader checks
            // the attention matrices against the hyper-parameters.
            p.tensor("blk.0.attn_q.weight").ne = vec![32, 128];
        },
    );
    w.parts(
        "tensor-ffn-down-wrong-shape",
        WeightShape,
        "Q8_0 weight",
        |p| {
            // The same for a matrix the loader does not check: the first product that
            // uses it refuses it.
            let t = p.tensor("blk.0.ffn_down.weight");
            t.ne = t.ne.iter().rev().copied().collect();
        },
    );
    while c < w.cases.len() {
        w.cases[c].inspect_sees = false;
        c += 1;
    }
}

/// The metadata keys zoo reads, each with a value of the wrong type or range.
fn metadata_cases(w: &mut Writer) {
    use Kind::*;
    w.key("block-count-string", "llama.block_count", Val::str("2"));
    w.key("block-count-0", "llama.block_count", Val::u32(0));
    w.key(
        "block-count-2^40",
        "llama.block_count",
        Val::Raw(10, (1u64 << 40).to_le_bytes().to_vec()),
    );
    w.key(
        "context-length-string",
        "llama.context_length",
        Val::str("64"),
    );
    w.key("context-length-0", "llama.context_length", Val::u32(0));
    w.key(
        "embedding-length-float",
        "llama.embedding_length",
        Val::f32(64.0),
    );
    w.key(
        "feed-forward-length-string",
        "llama.feed_forward_length",
        Val::str("128"),
    );
    w.key(
        "head-count-string",
        "llama.attention.head_count",
        Val::str("4"),
    );
    w.key(
        "head-count-kv-bool",
        "llama.attention.head_count_kv",
        Val::bool_byte(1),
    );
    w.key(
        "head-count-kv-3",
        "llama.attention.head_count_kv",
        Val::u32(3),
    );
    w.parts(
        "heads-do-not-divide-embedding",
        GgufMetadata,
        "not a multiple",
        |p| {
            p.remove("llama.attention.key_length");
            p.set("llama.attention.head_count", Val::u32(3));
        },
    );
    w.key(
        "key-length-negative",
        "llama.attention.key_length",
        Val::Raw(5, (-16i32).to_le_bytes().to_vec()),
    );
    w.key(
        "rope-freq-base-int",
        "llama.rope.freq_base",
        Val::u32(10000),
    );
    w.key(
        "rope-freq-base-negative",
        "llama.rope.freq_base",
        Val::f32(-1.0),
    );
    w.key(
        "rope-dimension-count-string",
        "llama.rope.dimension_count",
        Val::str("16"),
    );
    w.key(
        "rms-epsilon-string",
        "llama.attention.layer_norm_rms_epsilon",
        Val::str("1e-5"),
    );
    w.key(
        "rms-epsilon-nan",
        "llama.attention.layer_norm_rms_epsilon",
        Val::f32(f32::NAN),
    );
    w.key("vocab-size-0", "llama.vocab_size", Val::u32(0));
    w.key("architecture-int", "general.architecture", Val::u32(7));
    w.key("tokenizer-model-int", "tokenizer.ggml.model", Val::u32(2));
    w.key("tokens-string", "tokenizer.ggml.tokens", Val::str("a b c"));
    w.key(
        "tokens-of-u32",
        "tokenizer.ggml.tokens",
        Val::Arr(4, vec![Val::u32(1); 260], None),
    );
    w.key(
        "tokens-empty",
        "tokenizer.ggml.tokens",
        Val::Arr(8, Vec::new(), None),
    );
    w.key(
        "token-type-strings",
        "tokenizer.ggml.token_type",
        Val::Arr(8, vec![Val::str("n"); 260], None),
    );
    w.key(
        "token-type-short",
        "tokenizer.ggml.token_type",
        Val::Arr(5, vec![Val::Raw(5, vec![1, 0, 0, 0]); 10], None),
    );
    w.key(
        "scores-short",
        "tokenizer.ggml.scores",
        Val::Arr(6, vec![Val::f32(0.0); 3], None),
    );
    w.key(
        "merges-of-u32",
        "tokenizer.ggml.merges",
        Val::Arr(4, vec![Val::u32(1); 2], None),
    );
    w.key(
        "eos-id-past-vocab",
        "tokenizer.ggml.eos_token_id",
        Val::u32(1_000_000),
    );
    w.key(
        "bos-id-string",
        "tokenizer.ggml.bos_token_id",
        Val::str("<s>"),
    );
    w.key(
        "add-bos-u8",
        "tokenizer.ggml.add_bos_token",
        Val::Raw(0, vec![1]),
    );
    w.key("chat-template-int", "tokenizer.chat_template", Val::u32(1));
    w.parts(
        "block-count-missing",
        GgufMetadata,
        "`llama.block_count` is missing",
        |p| {
            p.remove("llama.block_count");
        },
    );
    w.parts(
        "architecture-missing",
        UnknownArchitecture,
        "no architecture at all",
        |p| {
            p.remove("general.architecture");
        },
    );
    w.parts(
        "architecture-unknown",
        UnknownArchitecture,
        "`mamba9`",
        |p| {
            let arch = Val::str("mamba9");
            p.set("general.architecture", arch);
        },
    );
}
