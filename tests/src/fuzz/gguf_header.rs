//! Fuzz target `gguf_header`: the bytes as a `.gguf` file, opened as zoo opens a
//! checkpoint (format sniffing, the header and metadata, the tensor directory), then
//! what `zoo inspect` and `zoo run` read of it before any weight: the architecture,
//! the tokenizer and the chat template.
//!
//! A first body, to be deepened by the GGUF bounded-parsing work (issue 15 part 2).

/// One input.
pub fn run(data: &[u8]) {
    let path = super::scratch_file("input.gguf", data);
    if let Ok(source) = zoo::ModelSource::open(&path) {
        let _ = zoo::registry::detect(&source);
        let _ = zoo::Tokenizer::for_source(&source);
        let _ = zoo::ChatTemplate::for_source(&source);
    }
}
