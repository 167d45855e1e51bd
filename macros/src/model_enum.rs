//! `model_enum!{ path::To::Model, ... }`: the `Model` enum over every registered
//! type, its `Arch` id, and every delegating method, from the types' attributes
//! (read through their `Registered::ENTRY`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::parse::{Parse, ParseStream};
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Path, Token};

use crate::ctxt::Ctxt;

struct Input {
    krate: Option<Path>,
    models: Punctuated<Path, Token![,]>,
}

impl Parse for Input {
    fn parse(input: ParseStream) -> syn::Result<Self> {
        let krate = if input.peek(Token![crate]) && input.peek2(Token![=]) {
            input.parse::<Token![crate]>()?;
            input.parse::<Token![=]>()?;
            let p: Path = input.parse()?;
            input.parse::<Token![;]>()?;
            Some(p)
        } else {
            None
        };
        Ok(Input {
            krate,
            models: Punctuated::parse_terminated(input)?,
        })
    }
}

pub fn expand(input: TokenStream) -> TokenStream {
    let input: Input = match syn::parse2(input) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    let mut cx = Ctxt::default();
    let krate = input.krate.unwrap_or_else(|| syn::parse_quote!(::zoo));
    let paths: Vec<&Path> = input.models.iter().collect();
    let mut variants = Vec::new();
    for (i, p) in paths.iter().enumerate() {
        let v = p
            .segments
            .last()
            .expect("a path has a segment")
            .ident
            .clone();
        if let Some(prev) = paths[..i]
            .iter()
            .find(|q| q.segments.last().map(|s| &s.ident) == Some(&v))
        {
            cx.error_spanned_by(
                p,
                format!(
                    "two models are named `{v}` ({} and {}); give each model type its own name",
                    quote!(#prev),
                    quote!(#p)
                ),
            );
        }
        variants.push(v);
    }
    if paths.is_empty() {
        cx.error_at(
            proc_macro2::Span::call_site(),
            "model_enum! needs at least one registered model type",
        );
    }
    if cx.has_errors() {
        return cx.into_compile_errors();
    }

    // Every pair is checked at compile time: no shared name or architecture string.
    let mut checks = Vec::new();
    for i in 0..paths.len() {
        for j in (i + 1)..paths.len() {
            let (a, b) = (paths[i], paths[j]);
            let msg = format!(
                "`{}` and `{}` claim the same registry name or the same HF/GGUF architecture string in #[register_model]; give each string to one model, or let one tell their files apart with `detect = path::to_fn`",
                quote!(#a).to_string().replace(' ', ""),
                quote!(#b).to_string().replace(' ', "")
            );
            checks.push(quote_spanned! {b.span()=>
                const _: () = __zoo::assert_distinct(
                    &<#a as __zoo::Registered>::ENTRY,
                    &<#b as __zoo::Registered>::ENTRY,
                    #msg,
                );
            });
        }
    }

    let n = paths.len();
    let model_doc = format!("Every architecture registered in this crate ({n}), one variant each, and `External` for one a downstream crate registered. Derived by `model_enum!`; what `zoo::load` returns.");
    let delegate = |method: TokenStream| {
        let arms = variants.iter().map(|v| quote!(Model::#v(m) => m.#method));
        quote!(match self { #(#arms,)* Model::External { model, .. } => model.#method })
    };
    let fwd = delegate(quote!(forward(input_ids, seqlen_offset)));
    let reset = delegate(quote!(reset_cache()));
    let eos = delegate(quote!(eos_token_ids()));
    let vocab = delegate(quote!(vocab_size()));
    let arch_name = delegate(quote!(architecture()));
    let ctx = delegate(quote!(context_length()));
    let device = delegate(quote!(device()));
    let batched = delegate(quote!(batched()));
    let arch_of = variants.iter().map(|v| quote!(Model::#v(_) => Arch::#v));
    let entry_arms = variants
        .iter()
        .zip(&paths)
        .map(|(v, p)| quote!(Arch::#v => &<#p as __zoo::Registered>::ENTRY));
    let load_arms = variants.iter().zip(&paths).map(|(v, p)| {
        quote!(Arch::#v => Model::#v(<#p as __zoo::Registered>::load_registered(source, device)?))
    });
    let from_impls = variants.iter().zip(&paths).map(|(v, p)| {
        quote! {
            impl ::core::convert::From<#p> for Model {
                fn from(m: #p) -> Self { Model::#v(m) }
            }
        }
    });
    let all = variants.iter().map(|v| quote!(Arch::#v));

    quote! {
        use #krate::__private as __zoo;

        #[doc = #model_doc]
        pub enum Model {
            #( #variants(#paths), )*
            /// An architecture that another crate registered, loaded through its entry's
            /// `load` function (dynamic dispatch).
            External {
                entry: &'static __zoo::ArchEntry,
                model: __zoo::Box<dyn __zoo::CausalLM>,
            },
        }

        /// The id of a registered architecture: one variant per architecture of this
        /// crate, and `External` for an entry another crate registered.
        #[derive(Debug, Clone, Copy)]
        pub enum Arch {
            #( #variants, )*
            /// An entry registered by another crate.
            External(&'static __zoo::ArchEntry),
        }

        impl Arch {
            /// The architectures of this crate, in declaration order.
            pub const ALL: &'static [Arch] = &[#(#all),*];

            /// Every registered architecture (this crate's and other crates'), sorted
            /// by name.
            pub fn all() -> __zoo::Vec<Arch> {
                __zoo::registry::entries().into_iter().map(Arch::of).collect()
            }

            /// The architecture of a registry entry.
            pub fn of(entry: &'static __zoo::ArchEntry) -> Arch {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|a| {
                        let e = a.entry();
                        e.name == entry.name && e.module == entry.module
                    })
                    .unwrap_or(Arch::External(entry))
            }

            /// The facts of its `#[register_model]` attribute.
            pub fn entry(self) -> &'static __zoo::ArchEntry {
                match self { #(#entry_arms,)* Arch::External(e) => e }
            }

            /// The registry name.
            pub fn name(self) -> &'static str {
                self.entry().name
            }

            /// The architecture that claims a config.json `architectures` string.
            pub fn from_hf_architecture(s: &str) -> ::core::option::Option<Arch> {
                Self::all().into_iter().find(|a| a.entry().hf_architectures.contains(&s))
            }

            /// The architecture that claims a config.json `model_type`.
            pub fn from_model_type(s: &str) -> ::core::option::Option<Arch> {
                Self::all().into_iter().find(|a| a.entry().model_types.contains(&s))
            }

            /// The architecture that claims a GGUF `general.architecture`.
            pub fn from_gguf_architecture(s: &str) -> ::core::option::Option<Arch> {
                Self::all().into_iter().find(|a| a.entry().gguf_architectures.contains(&s))
            }
        }

        impl ::core::cmp::PartialEq for Arch {
            fn eq(&self, other: &Self) -> bool {
                self.name() == other.name()
            }
        }
        impl ::core::cmp::Eq for Arch {}
        impl ::core::hash::Hash for Arch {
            fn hash<H: ::core::hash::Hasher>(&self, state: &mut H) {
                self.name().hash(state)
            }
        }

        impl ::core::str::FromStr for Arch {
            type Err = __zoo::Error;
            fn from_str(s: &str) -> ::core::result::Result<Self, Self::Err> {
                let all = Self::all();
                all.iter().copied().find(|a| a.name() == s).ok_or_else(|| {
                    __zoo::unknown_name(s, all.iter().map(|a| a.entry()).collect())
                })
            }
        }

        impl ::core::fmt::Display for Arch {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.write_str(self.name())
            }
        }

        impl Model {
            /// Which architecture this is.
            pub fn arch(&self) -> Arch {
                match self { #(#arch_of,)* Model::External { entry, .. } => Arch::External(entry) }
            }

            /// Loads `arch` from `source`: this crate's architectures through their
            /// typed load functions, another crate's through its entry.
            pub fn load(arch: Arch, source: &__zoo::ModelSource, device: &__zoo::Device) -> __zoo::Result<Model> {
                ::core::result::Result::Ok(match arch {
                    #(#load_arms,)*
                    Arch::External(entry) => Model::External { entry, model: (entry.load)(source, device)? },
                })
            }
        }

        impl __zoo::FromRegistry for Model {
            fn from_registry(
                entry: &'static __zoo::ArchEntry,
                source: &__zoo::ModelSource,
                device: &__zoo::Device,
            ) -> __zoo::Result<Self> {
                Model::load(Arch::of(entry), source, device)
            }
        }

        #(#from_impls)*

        impl __zoo::CausalLM for Model {
            fn forward(&mut self, input_ids: &__zoo::Tensor, seqlen_offset: usize) -> __zoo::Result<__zoo::Tensor> { #fwd }
            fn reset_cache(&mut self) -> __zoo::Result<()> { #reset }
            fn eos_token_ids(&self) -> &[u32] { #eos }
            fn vocab_size(&self) -> usize { #vocab }
            fn architecture(&self) -> &'static str { #arch_name }
            fn context_length(&self) -> usize { #ctx }
            fn device(&self) -> &__zoo::Device { #device }
            fn batched(&mut self) -> ::core::option::Option<&mut dyn __zoo::BatchedLM> { #batched }
        }

        #(#checks)*
    }
}
