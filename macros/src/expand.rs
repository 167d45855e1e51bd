//! Expansion of `#[register_model]`: the item unchanged, then the `Registered` impl
//! and the `inventory` entry, inside `const _: () = { ... };`.

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{Item, LitStr};

use crate::attr::{Attr, Format};
use crate::ctxt::Ctxt;

pub fn register_model(args: TokenStream, input: TokenStream) -> TokenStream {
    let mut cx = Ctxt::default();
    let item: Item = match syn::parse2(input.clone()) {
        Ok(i) => i,
        Err(e) => return e.to_compile_error(),
    };
    // A newtype `struct X(Body)` gets its `CausalLM` from the body (`ModelBody`): the
    // delegating impl every such architecture used to write by hand.
    let newtype = matches!(&item, Item::Struct(s) if matches!(&s.fields, syn::Fields::Unnamed(f) if f.unnamed.len() == 1));
    let (ident, generics, attrs) = match &item {
        Item::Struct(s) => (&s.ident, &s.generics, &s.attrs),
        Item::Enum(e) => (&e.ident, &e.generics, &e.attrs),
        other => {
            let e = syn::Error::new(
                item_kw_span(other),
                "#[register_model] belongs on the model's struct (or enum), the type that implements CausalLM",
            );
            let mut out = e.to_compile_error();
            out.extend(input);
            return out;
        }
    };
    if !generics.params.is_empty() {
        cx.error_spanned_by(generics, "a registered model cannot be generic; register a concrete type (a type alias of the instantiation will not do either)");
    }
    let attr = Attr::parse(args, &mut cx);
    attr.validate(&mut cx, ident.span());
    if cx.has_errors() {
        // Emit the item unchanged so its other uses do not cascade into more errors.
        let mut out = cx.into_compile_errors();
        out.extend(quote!(#item));
        return out;
    }

    let krate = attr
        .krate
        .clone()
        .unwrap_or_else(|| syn::parse_quote!(::zoo));
    let name = attr.name.as_ref().expect("validated");
    let description = attr
        .description
        .clone()
        .unwrap_or_else(|| LitStr::new(&first_doc_line(attrs).unwrap_or_default(), ident.span()));
    let format = match attr.format.as_ref().expect("validated").0 {
        Format::Safetensors => quote!(__zoo::Format::Safetensors),
        Format::Gguf => quote!(__zoo::Format::Gguf),
    };
    let list = |l: &Option<(Vec<LitStr>, proc_macro2::Span)>| {
        let items = l.as_ref().map(|(v, _)| v.clone()).unwrap_or_default();
        quote!(&[#(#items),*])
    };
    let hf = list(&attr.hf_architectures);
    let mt = list(&attr.model_types);
    let gg = list(&attr.gguf_architectures);
    let load = replace_self(attr.load.clone().expect("validated"), ident);
    // The attribute's format types the load: a GGUF entry's load function receives the
    // GGUF source, a safetensors entry's the safetensors source. A function of another
    // shape is a type error spanned at the `load = ...` path.
    let (source_ty, variant) = match attr.format.as_ref().expect("validated").0 {
        Format::Safetensors => (quote!(__zoo::SafetensorsSource), quote!(Safetensors)),
        Format::Gguf => (quote!(__zoo::GgufSource), quote!(Gguf)),
    };
    let detect = match &attr.detect {
        Some(d) => {
            let d = replace_self(d.clone(), ident);
            let typed = quote_spanned! {d.span()=>
                let f: fn(&#source_ty) -> bool = #d;
            };
            quote! {::core::option::Option::Some({
                fn __zoo_detect(source: &__zoo::ModelSource) -> bool {
                    #typed
                    match source {
                        __zoo::ModelSource::#variant(s) => f(s),
                        _ => false,
                    }
                }
                __zoo_detect as fn(&__zoo::ModelSource) -> bool
            })}
        }
        None => quote!(::core::option::Option::None),
    };
    let batching = attr.batching.as_ref().is_some_and(|b| b.value);
    let load_span = load.span();
    // The bound is spanned at the type's name so a missing `CausalLM` impl points there.
    let registered_impl = quote_spanned! {ident.span()=>
        impl __zoo::Registered for #ident {
            const ENTRY: __zoo::ArchEntry = __zoo::ArchEntry {
                name: #name,
                description: #description,
                format: #format,
                hf_architectures: #hf,
                model_types: #mt,
                gguf_architectures: #gg,
                module: ::core::module_path!(),
                load: __zoo_load_dyn,
                detect: #detect,
                batching: #batching,
            };
            fn load_registered(
                source: &__zoo::ModelSource,
                device: &__zoo::Device,
            ) -> __zoo::Result<Self> {
                __zoo_load(source, device)
            }
        }
    };
    let typed_load = quote_spanned! {load_span=>
        let load: fn(&#source_ty, &__zoo::Device) -> __zoo::Result<#ident> = #load;
    };
    let delegate = if newtype {
        quote!(__zoo::delegate_causal_lm!(#ident);)
    } else {
        quote!()
    };
    let load_fn = quote! {
        fn __zoo_load(source: &__zoo::ModelSource, device: &__zoo::Device) -> __zoo::Result<#ident> {
            #typed_load
            match source {
                __zoo::ModelSource::#variant(s) => load(s, device),
                other => __zoo::StdResult::Err(__zoo::format_mismatch(other, #name, #format)),
            }
        }
    };
    quote! {
        #item

        const _: () = {
            use #krate::__private as __zoo;

            #load_fn

            fn __zoo_load_dyn(
                source: &__zoo::ModelSource,
                device: &__zoo::Device,
            ) -> __zoo::Result<__zoo::Box<dyn __zoo::CausalLM>> {
                __zoo::StdResult::Ok(__zoo::boxed(__zoo_load(source, device)?))
            }

            #registered_impl

            #delegate

            __zoo::inventory::submit! { <#ident as __zoo::Registered>::ENTRY }
        };
    }
}

fn replace_self(mut path: syn::Path, ident: &syn::Ident) -> syn::Path {
    if let Some(first) = path.segments.first_mut() {
        if first.ident == "Self" {
            first.ident = ident.clone();
        }
    }
    path
}

fn first_doc_line(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| {
        if !a.path().is_ident("doc") {
            return None;
        }
        match &a.meta {
            syn::Meta::NameValue(nv) => match &nv.value {
                syn::Expr::Lit(syn::ExprLit {
                    lit: syn::Lit::Str(s),
                    ..
                }) => Some(s.value().trim().to_string()).filter(|s| !s.is_empty()),
                _ => None,
            },
            _ => None,
        }
    })
}

fn item_kw_span(item: &Item) -> proc_macro2::Span {
    match item {
        Item::Fn(f) => f.sig.fn_token.span,
        Item::Mod(m) => m.mod_token.span,
        Item::Impl(i) => i.impl_token.span,
        Item::Trait(t) => t.trait_token.span,
        other => other.span(),
    }
}
