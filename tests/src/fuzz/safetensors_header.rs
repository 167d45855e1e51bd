//! Fuzz target `safetensors_header`: the bytes as model.safetensors beside a fixed
//! config.json, opened as zoo opens a checkpoint directory, then the tensor summary
//! `zoo inspect` prints.
//!
//! A first body, to be deepened by the safetensors bounded-parsing work (issue 15
//! part 2: the index of a sharded checkpoint too).

/// config.json of a small Llama, so that the directory is claimed.
const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 1, "num_key_value_heads": 2, "vocab_size": 32, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "eos_token_id": 2, "bos_token_id": 1, "tie_word_embeddings": true}"#;

/// One input.
pub fn run(data: &[u8]) {
    let dir = super::scratch_dir().join("safetensors");
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let _ = std::fs::write(dir.join("config.json"), CONFIG);
    let _ = std::fs::write(dir.join("model.safetensors"), data);
    if let Ok(source) = zoo::ModelSource::open(&dir) {
        if let Some(s) = source.as_safetensors() {
            let _ = s.tensor_summary();
        }
    }
}
