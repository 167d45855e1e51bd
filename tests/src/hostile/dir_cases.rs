//! Bad safetensors checkpoints, each the tiny llama f32 fixture directory with one
//! thing broken: the safetensors header (length bombs, JSON, dtype, shape and offset
//! mismatches), shards and index, config.json (missing, wrong-typed and
//! contradictory fields) and tokenizer.json.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{fixtures, Case, Kind};

const FILES: [&str; 5] = [
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "generation_config.json",
];

struct Writer<'a> {
    dir: &'a Path,
    base: PathBuf,
    header: Value,
    data: Vec<u8>,
    cases: Vec<Case>,
}

/// A safetensors file from its header and data.
pub fn safetensors_bytes(header: &Value, data: &[u8]) -> Vec<u8> {
    let h = header.to_string();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h.as_bytes());
    out.extend(data);
    out
}

impl Writer<'_> {
    /// A copy of the valid directory, changed by `f`.
    fn case(&mut self, name: &str, kind: Kind, says: &str, f: impl FnOnce(&Path)) {
        let d = self.dir.join(name);
        std::fs::create_dir_all(&d).expect("corpus dir");
        for file in FILES {
            std::fs::copy(self.base.join(file), d.join(file)).expect("copying the fixture");
        }
        f(&d);
        self.cases.push(Case::new(name, d, kind, says));
    }

    /// The weights file replaced by `bytes`.
    fn weights(&mut self, name: &str, kind: Kind, says: &str, bytes: Vec<u8>) {
        self.case(name, kind, says, |d| {
            std::fs::write(d.join("model.safetensors"), bytes).expect("writing weights")
        });
    }

    /// The weights with their header edited by `f`.
    fn header(&mut self, name: &str, says: &str, f: impl FnOnce(&mut Value)) {
        let mut h = self.header.clone();
        f(&mut h);
        let bytes = safetensors_bytes(&h, &self.data);
        self.weights(name, Kind::InvalidSafetensors, says, bytes);
    }

    /// config.json edited by `f`.
    fn config(&mut self, name: &str, says: &str, f: impl FnOnce(&mut Value)) {
        let mut c: Value = read_json(&self.base.join("config.json"));
        f(&mut c);
        self.case(name, Kind::Config, says, |d| {
            std::fs::write(d.join("config.json"), c.to_string()).expect("config")
        });
    }

    fn tokenizer(&mut self, name: &str, text: &str) {
        self.case(name, Kind::Tokenizer, "tokenizer.json", |d| {
            std::fs::write(d.join("tokenizer.json"), text).expect("tokenizer")
        });
    }
}

fn read_json(p: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(p).expect("fixture")).expect("fixture JSON")
}

/// Two tensor names of the fixture with the same shape, and the first tensor's name.
const NORM_A: &str = "model.layers.0.input_layernorm.weight";
const NORM_B: &str = "model.layers.0.post_attention_layernorm.weight";

/// Writes the safetensors-directory cases under `dir`.
pub fn write_all(dir: &Path) -> anyhow::Result<Vec<Case>> {
    use Kind::*;
    let base = fixtures().join("llama/f32");
    let st = std::fs::read(base.join("model.safetensors"))?;
    let n = u64::from_le_bytes(st[..8].try_into()?) as usize;
    let header: Value = serde_json::from_slice(&st[8..8 + n])?;
    let mut w = Writer {
        dir,
        base,
        header,
        data: st[8 + n..].to_vec(),
        cases: Vec::new(),
    };
    // The header length and the JSON.
    w.weights(
        "st-shorter-than-8",
        InvalidSafetensors,
        "fewer than the 8-byte",
        vec![1, 0, 0],
    );
    let mut bomb = st.clone();
    bomb[..8].copy_from_slice(&(1u64 << 40).to_le_bytes());
    w.weights(
        "st-length-2^40",
        InvalidSafetensors,
        "1099511627776 bytes",
        bomb,
    );
    let mut past = st.clone();
    past[..8].copy_from_slice(&(st.len() as u64).to_le_bytes());
    w.weights(
        "st-length-past-file",
        InvalidSafetensors,
        "holds only",
        past,
    );
    let mut big = (17u64 << 20).to_le_bytes().to_vec();
    big.resize(8 + (17 << 20), b' ');
    w.weights(
        "st-length-over-limit",
        InvalidSafetensors,
        "limit of 16 MiB",
        big,
    );
    let raw = |h: &[u8]| {
        let mut b = (h.len() as u64).to_le_bytes().to_vec();
        b.extend(h);
        b
    };
    w.weights(
        "st-header-not-json",
        InvalidSafetensors,
        "not the JSON",
        raw(b"{not json"),
    );
    w.weights(
        "st-header-array",
        InvalidSafetensors,
        "not the JSON",
        raw(b"[1, 2]"),
    );
    w.weights(
        "st-header-not-utf8",
        InvalidSafetensors,
        "not UTF-8",
        raw(b"{\"\xff\xfe\": 1}"),
    );
    w.weights(
        "st-header-empty",
        InvalidSafetensors,
        "not the JSON",
        raw(b""),
    );
    // dtype, shape and offsets.
    w.header("st-dtype-unknown", "F33", |h| {
        h[NORM_A]["dtype"] = json!("F33")
    });
    w.header("st-shape-mismatch", NORM_A, |h| {
        h[NORM_A]["shape"] = json!([65])
    });
    w.header("st-shape-overflow", "overflows", |h| {
        h[NORM_A]["shape"] = json!([1u64 << 40, 1u64 << 40, 1u64 << 40])
    });
    w.header("st-offsets-reversed", "end before they start", |h| {
        let o = h[NORM_A]["data_offsets"].clone();
        h[NORM_A]["data_offsets"] = json!([o[1], o[0]]);
    });
    w.header("st-offsets-overlap", "overlap", |h| {
        h[NORM_B]["data_offsets"] = h[NORM_A]["data_offsets"].clone();
    });
    let last = w
        .header
        .as_object()
        .into_iter()
        .flatten()
        .filter(|(k, _)| *k != "__metadata__")
        .max_by_key(|(_, t)| t["data_offsets"][1].as_u64())
        .map(|(k, _)| k.clone())
        .unwrap_or_default();
    w.header("st-offsets-past-end", "past the end", |h| {
        let o = h[&last]["data_offsets"].clone();
        let (s, e) = (o[0].as_u64().unwrap_or(0), o[1].as_u64().unwrap_or(0));
        h[&last]["data_offsets"] = json!([s + 1000, e + 1000]);
        h[&last]["shape"] = json!([(e - s) / 4]);
    });
    let mut gap = w.header.clone();
    for (_, t) in gap.as_object_mut().into_iter().flatten() {
        if let Some(o) = t.get("data_offsets").cloned() {
            let at = |i: usize| o[i].as_u64().unwrap_or(0) + 64;
            t["data_offsets"] = json!([at(0), at(1)]);
        }
    }
    let mut data = vec![0u8; 64];
    data.extend(&w.data);
    let bytes = safetensors_bytes(&gap, &data);
    w.weights("st-gap", InvalidSafetensors, "belong to no tensor", bytes);
    let mut cut = st.clone();
    cut.truncate(st.len() - 100);
    w.weights("st-truncated", InvalidSafetensors, "past the end", cut);
    shard_cases(&mut w);
    config_cases(&mut w);
    tokenizer_cases(&mut w);
    Ok(w.cases)
}

/// Shards and model.safetensors.index.json.
fn shard_cases(w: &mut Writer) {
    use Kind::*;
    let names: Vec<String> = w
        .header
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k.clone())
        .filter(|k| k != "__metadata__")
        .collect();
    let index = |map: Value| json!({"metadata": {}, "weight_map": map});
    let one = "model-00001-of-00002.safetensors";
    let two = "model-00002-of-00002.safetensors";
    let mut map: serde_json::Map<String, Value> =
        names.iter().map(|n| (n.clone(), json!(one))).collect();
    let split = |d: &Path, map: &serde_json::Map<String, Value>| {
        std::fs::rename(d.join("model.safetensors"), d.join(one)).expect("rename");
        std::fs::write(
            d.join("model.safetensors.index.json"),
            index(Value::Object(map.clone())).to_string(),
        )
        .expect("index");
    };
    let mut missing = map.clone();
    missing.insert(names[0].clone(), json!(two));
    w.case("index-missing-shard", MissingFile, two, |d| {
        split(d, &missing)
    });
    map.insert("model.layers.9.mlp.up_proj.weight".into(), json!(one));
    w.case(
        "index-tensor-absent",
        Config,
        "model.layers.9.mlp.up_proj.weight",
        |d| split(d, &map),
    );
    let mut escape = map.clone();
    escape.insert(names[0].clone(), json!("../model.safetensors"));
    w.case("index-path-escapes", Config, "../model.safetensors", |d| {
        split(d, &escape)
    });
    w.case("index-not-json", Config, "safetensors index", |d| {
        std::fs::write(d.join("model.safetensors.index.json"), "{\"weight_map\": ").expect("index")
    });
    w.case("index-no-weight-map", Config, "weight_map", |d| {
        std::fs::write(d.join("model.safetensors.index.json"), "{\"metadata\": {}}").expect("index")
    });
    let mut both: serde_json::Map<String, Value> =
        names.iter().map(|n| (n.clone(), json!(one))).collect();
    both.insert(names[0].clone(), json!(two));
    w.case(
        "tensor-in-two-shards",
        InvalidSafetensors,
        "is also in",
        |d| {
            std::fs::copy(d.join("model.safetensors"), d.join(two)).expect("copy");
            split(d, &both);
        },
    );
}

/// config.json: missing, wrong-typed, out-of-range and contradictory fields.
fn config_cases(w: &mut Writer) {
    use Kind::*;
    w.case("config-missing", MissingFile, "config.json", |d| {
        std::fs::remove_file(d.join("config.json")).expect("rm")
    });
    w.case("config-not-json", Config, "JSON file", |d| {
        std::fs::write(d.join("config.json"), "{\"hidden_size\": 64,").expect("config")
    });
    w.config("config-array", "not a JSON object", |c| *c = json!([1, 2]));
    w.config("config-missing-vocab_size", "no `vocab_size`", |c| {
        c.as_object_mut().map(|o| o.remove("vocab_size"));
    });
    // Fields only some architectures read: named by the llama config type at load.
    for key in ["hidden_size", "num_hidden_layers", "num_attention_heads"] {
        let c = w.cases.len();
        w.config(
            &format!("config-missing-{key}"),
            &format!("missing field `{key}`"),
            |c| {
                c.as_object_mut().map(|o| o.remove(key));
            },
        );
        w.cases[c].inspect_sees = false;
    }
    let set = |key: &'static str, v: Value| move |c: &mut Value| c[key] = v;
    let bad: [(&str, &str, Value); 14] = [
        ("hidden-size-string", "hidden_size", json!("64")),
        ("hidden-size-2^40", "hidden_size", json!(1u64 << 40)),
        ("heads-0", "num_attention_heads", json!(0)),
        ("vocab-size-0", "vocab_size", json!(0)),
        ("vocab-size-negative", "vocab_size", json!(-5)),
        ("layers-2^40", "num_hidden_layers", json!(1u64 << 40)),
        (
            "max-position-2^40",
            "max_position_embeddings",
            json!(1u64 << 40),
        ),
        ("intermediate-2^40", "intermediate_size", json!(1u64 << 40)),
        ("intermediate-float", "intermediate_size", json!(128.5)),
        ("rms-eps-string", "rms_norm_eps", json!("1e-5")),
        ("rms-eps-negative", "rms_norm_eps", json!(-1e-5)),
        ("rope-theta-0", "rope_theta", json!(0)),
        ("tie-embeddings-string", "tie_word_embeddings", json!("yes")),
        ("eos-id-string", "eos_token_id", json!("</s>")),
    ];
    for (name, key, v) in bad {
        w.config(
            &format!("config-{name}"),
            &format!("`{key}` should be"),
            set(key, v),
        );
    }
    w.config("config-hidden-not-divisible", "not a multiple", |c| {
        c["hidden_size"] = json!(66);
        c.as_object_mut().map(|o| o.remove("head_dim"));
    });
    w.config(
        "config-kv-heads-3",
        "does not divide",
        set("num_key_value_heads", json!(3)),
    );
    w.config("config-experts-used-too-many", "more than the", |c| {
        c["num_local_experts"] = json!(2);
        c["num_experts_per_tok"] = json!(4);
    });
    // What only the llama config type reads.
    let c = w.cases.len();
    w.config(
        "config-missing-intermediate-size",
        "intermediate_size",
        |c| {
            c.as_object_mut().map(|o| o.remove("intermediate_size"));
        },
    );
    w.cases[c].inspect_sees = false;
}

fn tokenizer_cases(w: &mut Writer) {
    use Kind::*;
    let good = std::fs::read_to_string(w.base.join("tokenizer.json")).expect("fixture");
    w.tokenizer("tokenizer-not-json", "{\"model\": ");
    w.tokenizer("tokenizer-empty-object", "{}");
    w.tokenizer("tokenizer-truncated", &good[..good.len() / 2]);
    let mut t: Value = serde_json::from_str(&good).expect("fixture");
    t["model"]["type"] = json!("Transformer9");
    w.tokenizer("tokenizer-model-unknown", &t.to_string());
    let mut t: Value = serde_json::from_str(&good).expect("fixture");
    t["model"]["merges"] = json!(["zzqq xxyy"]);
    w.tokenizer("tokenizer-merge-of-unknown-tokens", &t.to_string());
    let mut t: Value = serde_json::from_str(&good).expect("fixture");
    t["model"]["vocab"] = json!("not a map");
    w.tokenizer("tokenizer-vocab-wrong-type", &t.to_string());
    w.case("tokenizer-missing", MissingFile, "tokenizer.json", |d| {
        std::fs::remove_file(d.join("tokenizer.json")).expect("rm")
    });
}
