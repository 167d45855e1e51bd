//! config.json as transformers 4.x and 5.x write it.
//!
//! transformers 5.x moves `rope_theta` (and `rope_scaling`) into `rope_parameters`;
//! reading only the 4.x key silently falls back to a default that is wrong for many
//! models (SmolLM2 needs 100000, not 10000). These helpers read both.

use serde_json::Value;

use super::{hf_checks, SafetensorsSource};
use crate::{Error, Result};

impl SafetensorsSource {
    /// `rope_theta` from the top level (4.x) or `rope_parameters.rope_theta` (5.x).
    /// `documented_default` is the value the architecture's transformers config class
    /// documents; `None` makes a missing value an error.
    pub fn rope_theta(&self, documented_default: Option<f64>) -> Result<f64> {
        let found = self.config.get("rope_theta").or_else(|| {
            self.config
                .get("rope_parameters")
                .and_then(|p| p.get("rope_theta"))
        });
        match (found, documented_default) {
            (Some(v), _) => v
                .as_f64()
                .ok_or_else(|| self.config_error("`rope_theta` should be a number", v)),
            (None, Some(d)) => {
                tracing::warn!(
                    path = %self.config_path.display(),
                    "config.json has no rope_theta (nor rope_parameters.rope_theta); using the architecture's documented default {d}"
                );
                Ok(d)
            }
            (None, None) => Err(Error::Config {
                path: self.config_path.clone(),
                what: "config".into(),
                detail: "no `rope_theta` (transformers 4.x) nor `rope_parameters.rope_theta` (5.x)"
                    .into(),
                hint: "add the model's rope_theta to config.json".into(),
            }),
        }
    }

    /// config.json as transformers 4.x writes it, whichever version wrote it: the
    /// 5.x `rope_parameters` are copied back to `rope_theta` (and, for models with
    /// per-layer-type bases, `full_attention` to `rope_theta` and `sliding_attention`
    /// to `rope_local_base_freq`; `partial_rotary_factor` too), `_sliding_window_pattern` to
    /// `sliding_window_pattern`. A missing `rope_theta` gets `documented_default` (see
    /// [`Self::rope_theta`]). candle-transformers' config types read the result.
    pub fn normalised_config(&self, documented_default: Option<f64>) -> Result<Value> {
        let mut v = self.config.clone();
        let obj = v
            .as_object_mut()
            .ok_or_else(|| self.config_error("config.json should be an object", &self.config))?;
        let params = obj.get("rope_parameters").cloned().unwrap_or(Value::Null);
        let theta_of = |p: &Value| p.get("rope_theta").filter(|t| t.is_number()).cloned();
        if !obj.contains_key("rope_theta") {
            if let Some(t) =
                theta_of(&params).or_else(|| params.get("full_attention").and_then(theta_of))
            {
                obj.insert("rope_theta".into(), t);
            }
        }
        if !obj.contains_key("rope_local_base_freq") {
            if let Some(t) = params.get("sliding_attention").and_then(theta_of) {
                obj.insert("rope_local_base_freq".into(), t);
            }
        }
        if !obj.contains_key("partial_rotary_factor") {
            if let Some(f) = params
                .get("partial_rotary_factor")
                .filter(|f| f.is_number())
            {
                obj.insert("partial_rotary_factor".into(), f.clone());
            }
        }
        if !obj.contains_key("sliding_window_pattern") {
            if let Some(p) = obj.get("_sliding_window_pattern").cloned() {
                obj.insert("sliding_window_pattern".into(), p);
            }
        }
        if !obj.contains_key("rope_theta") {
            let t = self.rope_theta(documented_default)?;
            obj.insert("rope_theta".into(), t.into());
        }
        Ok(v)
    }

    /// Deserialises a (normalised, possibly patched) config into an architecture's
    /// config type; a missing or mistyped field is an error that names it.
    pub fn parse_config_value<T: serde::de::DeserializeOwned>(
        &self,
        arch: &str,
        v: Value,
    ) -> Result<T> {
        // The checks of opening (hf_checks.rs) again, on the config as the architecture
        // normalised it: a quirk's value is held to the same table.
        hf_checks::check_config(&self.config_path, &v)?;
        serde_json::from_value(v).map_err(|e| Error::Config {
            path: self.config_path.clone(),
            what: format!("`{arch}` config"),
            detail: e.to_string(),
            hint: "config.json must be the one transformers writes for this architecture (save_pretrained); add the missing field".into(),
        })
    }

    /// The facts of [`crate::ModelInfo`] from config.json: eos ids (config or
    /// generation_config; none is an error), `vocab_size`, `max_position_embeddings`
    /// (or `default_context` where the architecture documents one).
    pub fn model_info(
        &self,
        arch: &str,
        default_context: Option<usize>,
        device: &candle_core::Device,
    ) -> Result<crate::ModelInfo> {
        let eos = self.eos_token_ids();
        if eos.is_empty() {
            return Err(Error::Config {
                path: self.config_path.clone(),
                what: format!("`{arch}` config"),
                detail: "no `eos_token_id` in config.json or generation_config.json".into(),
                hint: "add the model's eos_token_id to config.json".into(),
            });
        }
        let usize_of = |key: &str| {
            self.config
                .get(key)
                .and_then(|v| v.as_u64())
                .map(|v| v as usize)
        };
        let vocab_size = usize_of("vocab_size").ok_or_else(|| Error::Config {
            path: self.config_path.clone(),
            what: format!("`{arch}` config"),
            detail: "no `vocab_size`".into(),
            hint: "add vocab_size to config.json".into(),
        })?;
        // GPT-2's family calls it `n_positions` (transformers maps the two).
        let context_length = usize_of("max_position_embeddings")
            .or_else(|| usize_of("n_positions"))
            .or(default_context)
            .ok_or_else(|| Error::Config {
                path: self.config_path.clone(),
                what: format!("`{arch}` config"),
                detail: "no `max_position_embeddings`".into(),
                hint: "add max_position_embeddings to config.json".into(),
            })?;
        Ok(crate::ModelInfo {
            eos_token_ids: eos,
            vocab_size,
            context_length,
            device: device.clone(),
        })
    }

    /// `rope_scaling` (4.x) or the scaling fields of `rope_parameters` (5.x), if any
    /// scaling other than the default is configured.
    pub fn rope_scaling(&self) -> Option<Value> {
        if let Some(v) = self.config.get("rope_scaling").filter(|v| !v.is_null()) {
            return Some(v.clone());
        }
        let p = self.config.get("rope_parameters")?;
        let scaled = |p: &Value| {
            !matches!(
                p.get("rope_type").and_then(|t| t.as_str()),
                None | Some("default")
            )
        };
        if scaled(p) {
            return Some(p.clone());
        }
        // transformers 5 keeps one set per layer type where they differ (Gemma 3:
        // `{"full_attention": {...}, "sliding_attention": {...}}`); scaling in any of
        // them is the model's, returned whole for the architecture to pick from.
        let per_type = p.as_object()?;
        per_type
            .values()
            .any(|v| v.is_object() && scaled(v))
            .then(|| p.clone())
    }

    /// `eos_token_id` of config.json (an int or a list), then of generation_config.json.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        let mut ids = ids_of(self.config.get("eos_token_id"));
        let gen = self.dir.join("generation_config.json");
        if let Ok(text) = std::fs::read_to_string(gen) {
            if let Ok(v) = serde_json::from_str::<Value>(&text) {
                ids.extend(ids_of(v.get("eos_token_id")));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    fn config_error(&self, detail: &str, found: &Value) -> Error {
        Error::Config {
            path: self.config_path.clone(),
            what: "config".into(),
            detail: format!("{detail}, found {found}"),
            hint: "fix config.json".into(),
        }
    }
}

fn ids_of(v: Option<&Value>) -> Vec<u32> {
    match v {
        Some(Value::Number(n)) => n.as_u64().map(|n| vec![n as u32]).unwrap_or_default(),
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use crate::ModelSource;

    /// Zero heads (found by the `config_json` fuzz target: Granite divided by them),
    /// heads that do not share key/value heads evenly, and sizes past the bounds are
    /// refused with the key named.
    #[test]
    fn sizes_are_checked_before_use() {
        let base = r#""num_attention_heads": 4, "num_key_value_heads": 2, "hidden_size": 64, "vocab_size": 32, "max_position_embeddings": 64"#;
        // Opening checks the config too (source/hf_checks.rs): whichever check
        // comes first must refuse it.
        let check = |extra: &str| -> crate::Result<serde_json::Value> {
            let d = dir_with(&format!("{{{base}{extra}}}"));
            let src = ModelSource::open(d.path())?;
            let s = src.as_safetensors().unwrap();
            s.parse_config_value::<serde_json::Value>("x", s.config.clone())
        };
        assert!(check("").is_ok());
        for (extra, says) in [
            (
                r#", "num_attention_heads": 0"#,
                "`num_attention_heads` should be",
            ),
            (r#", "num_key_value_heads": 3"#, "3"),
            (r#", "hidden_size": 66"#, "66"),
            (
                r#", "max_position_embeddings": 1e12"#,
                "`max_position_embeddings` should be",
            ),
            (r#", "vocab_size": -1"#, "`vocab_size` should be"),
        ] {
            let e = check(extra).unwrap_err().to_string();
            assert!(e.contains(says), "{extra}: {e}");
        }
        assert!(check(r#", "hidden_size": 66, "head_dim": 16"#).is_ok());
        // What an architecture's normalisation writes is held to the same table: a
        // window past the longest context, or heads that stop dividing, are refused
        // though the file itself passed.
        let d = dir_with(&format!("{{{base}}}"));
        let src = ModelSource::open(d.path()).unwrap();
        let s = src.as_safetensors().unwrap();
        for (key, value, says) in [
            (
                "sliding_window",
                serde_json::json!(u64::MAX / 4),
                "`sliding_window` should be",
            ),
            (
                "num_key_value_heads",
                serde_json::json!(3),
                "does not divide",
            ),
        ] {
            let mut normalised = s.config.clone();
            normalised[key] = value;
            let e = s
                .parse_config_value::<serde_json::Value>("x", normalised)
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{key}: {e}");
        }
        let mut opened = s.config.clone();
        opened["sliding_window"] = serde_json::json!(super::super::MAX_CONTEXT);
        assert!(s
            .parse_config_value::<serde_json::Value>("x", opened)
            .is_ok());
    }

    /// Scaling in transformers 5's per-layer-type `rope_parameters` (Gemma 3's linear
    /// factor on its global layers) is the model's: until 2026-11-30 it read as none,
    /// and a Gemma 3 checkpoint saved by transformers 5 ran unscaled (0.52 off on the
    /// fixture `gemma3::f32-linear-rope`).
    #[test]
    fn rope_scaling_per_layer_type() {
        let base = r#""vocab_size": 32"#;
        let scaling = |params: &str| {
            let d = dir_with(&format!(r#"{{{base}, "rope_parameters": {params}}}"#));
            let src = ModelSource::open(d.path()).unwrap();
            src.as_safetensors().unwrap().rope_scaling()
        };
        let per_type = r#"{"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6}, "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}"#;
        let s = scaling(per_type).expect("scaled");
        assert_eq!(s["full_attention"]["factor"], 8.0);
        let defaults = r#"{"full_attention": {"rope_type": "default"}, "sliding_attention": {"rope_type": "default"}}"#;
        assert_eq!(scaling(defaults), None);
        assert_eq!(
            scaling(r#"{"rope_type": "default", "rope_theta": 1e4}"#),
            None
        );
        let llama3 = r#"{"rope_type": "llama3", "factor": 8.0, "rope_theta": 1e4}"#;
        assert_eq!(scaling(llama3).unwrap()["rope_type"], "llama3");
    }

    fn dir_with(config: &str) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("config.json"), config).unwrap();
        // A minimal valid safetensors file: empty header.
        let header = b"{}      ";
        let mut st = (header.len() as u64).to_le_bytes().to_vec();
        st.extend_from_slice(header);
        std::fs::write(d.path().join("model.safetensors"), st).unwrap();
        d
    }

    fn theta(config: &str, default: Option<f64>) -> crate::Result<f64> {
        let d = dir_with(config);
        let src = ModelSource::open(d.path()).unwrap();
        src.as_safetensors().unwrap().rope_theta(default)
    }

    #[test]
    fn rope_theta_from_4x_and_5x() {
        assert_eq!(
            theta(r#"{"rope_theta": 100000.0}"#, None).unwrap(),
            100000.0
        );
        assert_eq!(
            theta(
                r#"{"rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}}"#,
                None
            )
            .unwrap(),
            100000.0
        );
        assert_eq!(theta(r#"{}"#, Some(10000.0)).unwrap(), 10000.0);
        let err = theta(r#"{}"#, None).unwrap_err().to_string();
        assert!(err.contains("rope_parameters.rope_theta"), "{err}");
    }
}
