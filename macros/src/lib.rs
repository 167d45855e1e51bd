//! zoo-macros: `#[register_model(...)]` and `model_enum!`.
//!
//! Every fact about an architecture is written once, in its `#[register_model]`
//! attribute; from it the macros write the registry entry (submitted through
//! `inventory`), the `Registered` impl, and, across all modules, the `Model` enum
//! with every delegating method. Generated code reaches the runtime through
//! `::zoo::__private` (or the path given with `crate = ...`).

mod attr;
mod ctxt;
mod expand;
mod model_enum;

use proc_macro::TokenStream;

/// Registers a model type as an architecture of zoo.
///
/// ```text
/// #[register_model(
///     name = "llama",
///     format = safetensors,
///     hf_architectures = ["LlamaForCausalLM"],
///     model_types = ["llama"],
///     load = Llama::load,
/// )]
/// pub struct Llama { /* ... */ }
/// ```
///
/// Keys: `name` (registry name, required), `format` (`safetensors` or `gguf`,
/// required), `hf_architectures` / `model_types` (safetensors: at least one),
/// `gguf_architectures` (gguf: required), `load` (required: the format types it, a
/// `fn(&GgufSource, &Device) -> Result<Self>` for gguf, a `fn(&SafetensorsSource,
/// &Device) -> Result<Self>` for safetensors; another shape is a type error at the
/// path), `detect` (optional, `fn(&GgufSource) -> bool` or `fn(&SafetensorsSource) ->
/// bool`: whether this entry claims a file whose architecture string several entries
/// share), `description` (defaults to the first doc line), `crate` (path of the zoo
/// facade, default `::zoo`). The type must implement `CausalLM`.
#[proc_macro_attribute]
pub fn register_model(args: TokenStream, input: TokenStream) -> TokenStream {
    expand::register_model(args.into(), input.into()).into()
}

/// Derives the `Model` enum, its `Arch` id and every delegating method from a list of
/// registered model types, plus the `External` variants that carry an architecture
/// another crate registered. `cargo xtask codegen` writes the one invocation;
/// `zoo::load` returns this `Model`.
#[proc_macro]
pub fn model_enum(input: TokenStream) -> TokenStream {
    model_enum::expand(input.into()).into()
}
