//! `zoo inspect --memory`: loads the model as `zoo run` would and reports what it costs
//! in memory: the checkpoint on disk, the resident set loading added (weights and
//! tokenizer), the KV cache per position and for a full context, and the peak RSS.

use anyhow::Result;
use zoo::CausalLM;

use crate::commands::ModelArg;

pub fn report(model: ModelArg, json: bool) -> Result<()> {
    let mut loaded = model.load()?;
    let m = loaded.memory;
    let context = loaded.model.context_length();
    let kv_per_position = loaded
        .model
        .batched()
        .map(|b| b.kv_shape().bytes_per_token() as u64);
    let v = serde_json::json!({
        "path": loaded.path.display().to_string(),
        "architecture": loaded.entry.name,
        "device": format!("{:?}", loaded.model.device()),
        "checkpoint_bytes": m.checkpoint_bytes,
        "weights_resident_bytes": m.resident_growth_bytes,
        "kv_cache_bytes_per_position": kv_per_position,
        "kv_cache_bytes_full_context": kv_per_position.map(|b| b * context as u64),
        "context_length": context,
        "peak_rss_bytes": zoo::memory::peak_rss_bytes(),
    });
    if json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    let mib = |b: u64| format!("{:.1} MiB", b as f64 / (1 << 20) as f64);
    let opt = |b: Option<u64>| b.map_or_else(|| "unknown".to_string(), mib);
    println!("path:              {}", loaded.path.display());
    println!("architecture:      {}", loaded.entry.name);
    println!("device:            {:?}", loaded.model.device());
    println!("checkpoint:        {}", mib(m.checkpoint_bytes));
    println!("weights resident:  {}", opt(m.resident_growth_bytes));
    match kv_per_position {
        Some(b) => println!(
            "KV cache:          {b} bytes per position, {} for the full context of {context}",
            mib(b * context as u64)
        ),
        None => println!(
            "KV cache:          grows with the one sequence (the architecture does not batch)"
        ),
    }
    println!("peak RSS:          {}", opt(zoo::memory::peak_rss_bytes()));
    Ok(())
}
