//! config.json checked when a safetensors directory is opened, for every registered
//! architecture, and again on the config as an architecture normalised it before its
//! config type reads it (`parse_config_value`): one table, both times: each size field zoo's models read has the right type and a sane
//! range (a size of 2^40 would be allocated before anything else failed), and the
//! sizes agree (heads divide the hidden size unless `head_dim` says otherwise, kv
//! heads divide heads, experts used within experts). The fields an architecture
//! needs but lacks are named by its config type when it loads.

use std::path::Path;

use serde_json::Value;

use crate::{Error, Result};

/// The longest context config.json may give: above the longest of any architecture
/// zoo runs (1M positions), while the rotary tables sized by it stay within a few GiB.
/// A sliding window this long masks nothing.
pub const MAX_CONTEXT: u64 = 1 << 22;

/// What a field should hold.
#[derive(Clone, Copy)]
enum Kind {
    /// An integer in `min..=max`.
    Size(u64, u64),
    /// A finite number greater than 0.
    Positive,
    Bool,
    /// An integer token id, or a list of them.
    Ids,
}

use Kind::*;

/// The fields (transformers' names and GPT-2's) zoo's architectures read. `null` is
/// taken as absent, as transformers takes it. Expert counts and `sliding_window` may
/// be 0 (a dense model, no window), as the committed fixtures write them.
const FIELDS: &[(&str, Kind)] = &[
    ("vocab_size", Size(1, 1 << 24)),
    ("hidden_size", Size(1, 1 << 18)),
    ("n_embd", Size(1, 1 << 18)),
    ("num_attention_heads", Size(1, 1 << 12)),
    ("n_head", Size(1, 1 << 12)),
    ("num_key_value_heads", Size(1, 1 << 12)),
    ("num_hidden_layers", Size(1, 1 << 12)),
    ("n_layer", Size(1, 1 << 12)),
    ("intermediate_size", Size(1, 1 << 20)),
    ("n_inner", Size(1, 1 << 20)),
    ("moe_intermediate_size", Size(1, 1 << 20)),
    ("max_position_embeddings", Size(1, MAX_CONTEXT)),
    ("n_positions", Size(1, MAX_CONTEXT)),
    ("head_dim", Size(1, 1 << 16)),
    ("num_local_experts", Size(0, 1 << 16)),
    ("num_experts", Size(0, 1 << 16)),
    ("n_routed_experts", Size(0, 1 << 16)),
    ("num_experts_per_tok", Size(0, 1 << 16)),
    ("sliding_window", Size(0, 1 << 24)),
    ("rms_norm_eps", Positive),
    ("layer_norm_eps", Positive),
    ("layer_norm_epsilon", Positive),
    ("rope_theta", Positive),
    ("tie_word_embeddings", Bool),
    ("eos_token_id", Ids),
    ("bos_token_id", Ids),
];

fn config_error(path: &Path, detail: String) -> Error {
    Error::Config {
        path: path.to_path_buf(),
        what: "config.json".into(),
        detail,
        hint: "config.json must be the one transformers writes for the model (save_pretrained): fix the field or fetch the checkpoint again".into(),
    }
}

fn check_field(path: &Path, key: &str, v: &Value, kind: Kind) -> Result<()> {
    let ok = match kind {
        Size(lo, hi) => v.as_u64().is_some_and(|x| (lo..=hi).contains(&x)),
        Positive => v.as_f64().is_some_and(|x| x.is_finite() && x > 0.0),
        Bool => v.is_boolean(),
        Ids => {
            let id = |v: &Value| v.as_u64().is_some_and(|x| x <= u32::MAX as u64);
            id(v) || v.as_array().is_some_and(|a| a.iter().all(id))
        }
    };
    if ok {
        return Ok(());
    }
    let expected = match kind {
        Size(lo, hi) => format!("an integer from {lo} to {hi}"),
        Positive => "a number greater than 0".into(),
        Bool => "true or false".into(),
        Ids => "a token id (an integer) or a list of them".into(),
    };
    let mut found = v.to_string();
    if found.chars().count() > 60 {
        found = format!("{}...", found.chars().take(60).collect::<String>());
    }
    Err(config_error(
        path,
        format!("`{key}` should be {expected}, found {found}"),
    ))
}

/// Checks the fields of config.json (and of its `text_config`, where a multimodal
/// checkpoint keeps the language model's) that zoo reads.
pub(crate) fn check_config(path: &Path, config: &Value) -> Result<()> {
    let Some(obj) = config.as_object() else {
        return Err(config_error(
            path,
            format!(
                "the file holds {}, not a JSON object of fields",
                match config {
                    Value::Array(_) => "an array",
                    Value::String(_) => "a string",
                    Value::Number(_) => "a number",
                    _ => "null or a bool",
                }
            ),
        ));
    };
    let mut sections = vec![obj];
    if let Some(text) = obj.get("text_config").and_then(|t| t.as_object()) {
        sections.push(text);
    }
    for section in sections {
        let get = |k: &str| section.get(k).filter(|v| !v.is_null());
        for (key, kind) in FIELDS {
            if let Some(v) = get(key) {
                check_field(path, key, v, *kind)?;
            }
        }
        let size = |keys: &[&str]| keys.iter().find_map(|k| get(k).and_then(|v| v.as_u64()));
        let hidden = size(&["hidden_size", "n_embd"]);
        let heads = size(&["num_attention_heads", "n_head"]);
        if let (Some(hidden), Some(heads)) = (hidden, heads) {
            if get("head_dim").is_none() && hidden % heads != 0 {
                return Err(config_error(path, format!(
                    "`hidden_size` {hidden} is not a multiple of `num_attention_heads` {heads}, and no `head_dim` gives the head size"
                )));
            }
            if let Some(kv) = size(&["num_key_value_heads"]) {
                if heads % kv != 0 {
                    return Err(config_error(path, format!(
                        "`num_key_value_heads` {kv} does not divide `num_attention_heads` {heads}: every kv head serves the same number of query heads"
                    )));
                }
            }
        }
        let experts = size(&["num_local_experts", "num_experts", "n_routed_experts"]);
        // 0 experts is a dense model (granite-moe-hybrid writes 0 and 2 per token).
        if let (Some(used), Some(experts)) = (size(&["num_experts_per_tok"]), experts) {
            if experts > 0 && used > experts {
                return Err(config_error(
                    path,
                    format!("`num_experts_per_tok` {used} is more than the {experts} experts"),
                ));
            }
        }
    }
    Ok(())
}

/// What every safetensors checkpoint needs, whatever its architecture (a downstream
/// crate's included): `vocab_size` (the model's facts read it). What only some
/// architectures need (hidden, layer and head sizes) is named by their config type at
/// load. Checked before loading so that `zoo inspect` and a load agree.
pub(crate) fn check_required(path: &Path, config: &Value) -> Result<()> {
    let text = config.get("text_config").filter(|t| t.is_object());
    let has = |k: &str| {
        [Some(config), text]
            .into_iter()
            .flatten()
            .any(|c| c.get(k).is_some_and(|v| !v.is_null()))
    };
    if !has("vocab_size") {
        return Err(config_error(
            path,
            "there is no `vocab_size`, which every checkpoint needs".into(),
        ));
    }
    Ok(())
}
