//! Fuzz target `safetensors_header`: the bytes as one safetensors file, checked in
//! memory by zoo's bounded reader (`zoo::source::parse_safetensors`: the length
//! against the file and 16 MiB, then the `safetensors` crate's validation); or,
//! when they start with `{`, as the model.safetensors.index.json of a checkpoint
//! directory with one valid shard, opened as zoo opens a directory (shard names,
//! tensors listed against the shards).
//!
//! Never panics; what the reader accepts must hold: every tensor's bytes inside the
//! input.

/// config.json of a small Llama, so that the directory is claimed.
const CONFIG: &str = r#"{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 4, "num_hidden_layers": 1, "num_key_value_heads": 2, "vocab_size": 32, "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "eos_token_id": 2, "bos_token_id": 1}"#;

/// The one shard the index may name: a single f32 tensor `w` of 2 elements.
const SHARD: &str = "model-00001-of-00001.safetensors";

/// One input.
pub fn run(data: &[u8]) {
    if data.first() == Some(&b'{') {
        index(data);
        return;
    }
    let Ok(tensors) = zoo::source::parse_safetensors(data) else {
        return;
    };
    let bytes: u128 = tensors
        .iter()
        .map(|(_, _, shape)| shape.iter().map(|&d| d as u128).product::<u128>())
        .sum();
    // At least one byte per element would overflow nothing: 8 at most per element.
    assert!(
        bytes <= data.len() as u128 * 8,
        "accepted {bytes} elements in {} bytes",
        data.len()
    );
}

fn index(data: &[u8]) {
    let dir = super::scratch_dir();
    let header = br#"{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}"#;
    let mut shard = (header.len() as u64).to_le_bytes().to_vec();
    shard.extend(header);
    shard.extend([0u8; 8]);
    let ok = std::fs::write(dir.join("config.json"), CONFIG).is_ok()
        && std::fs::write(dir.join(SHARD), shard).is_ok()
        && std::fs::write(dir.join("model.safetensors.index.json"), data).is_ok();
    if ok {
        if let Ok(source) = zoo::ModelSource::open(&dir) {
            if let Some(s) = source.as_safetensors() {
                let _ = s.tensor_summary();
            }
            let _ = source.check_loadable();
        }
    }
}
