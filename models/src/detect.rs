//! Content checks that tell apart GGUF files sharing one `general.architecture`
//! (llama.cpp writes Llama, Mistral and Mixtral all as `llama`): used by the
//! architecture files' `detect = ...`.

use zoo_core::GgufSource;

/// The file has experts per layer (`<arch>.expert_count` > 0).
pub(crate) fn has_experts(g: &GgufSource) -> bool {
    let key = format!("{}.expert_count", g.architecture().unwrap_or_default());
    g.u64_opt(&key).ok().flatten().unwrap_or(0) > 0
}

/// `general.basename` or `general.name` contains `needle` (ASCII case-insensitive).
pub(crate) fn named(g: &GgufSource, needle: &str) -> bool {
    ["general.basename", "general.name"].iter().any(|k| {
        g.str_opt(k)
            .ok()
            .flatten()
            .is_some_and(|n| n.to_ascii_lowercase().contains(needle))
    })
}
