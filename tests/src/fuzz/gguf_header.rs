//! Fuzz target `gguf_header`: the bytes as a whole GGUF file, parsed by zoo's bounded
//! header reader in memory (`GgufSource::from_bytes`: every check `GgufSource::open`
//! makes), then what `zoo inspect` and `zoo run` read of it before any weight: the
//! checks every architecture needs, the architecture, the context length, the
//! tensor summary, the end-of-generation ids, the tokenizer and the chat template.
//!
//! Never panics; what the reader accepts must hold: every tensor's bytes inside the
//! input, its element count without overflow.

/// One input.
pub fn run(data: &[u8]) {
    let Ok(g) = zoo::GgufSource::from_bytes(data) else {
        return;
    };
    let size = g.file_size();
    for info in g.content.tensor_infos.values() {
        let t = info.ggml_dtype;
        let elems = info.shape.elem_count();
        let bytes = (elems / t.block_size()) as u64 * t.type_size() as u64;
        let end = g.content.tensor_data_offset + info.offset + bytes;
        assert!(end <= size, "an accepted tensor ends at {end}, past {size}");
    }
    let _ = g.tensor_summary();
    let _ = g.context_length();
    let _ = g.eos_token_ids();
    let source = zoo::ModelSource::Gguf(g);
    let _ = source.check_loadable();
    let _ = zoo::registry::detect(&source);
    let _ = zoo::Tokenizer::for_source(&source);
    let _ = zoo::ChatTemplate::for_source(&source);
}
