//! The facts of each architecture file, read with `syn` from its source: the
//! `#[register_model(...)]` keys, the type's first doc line, what it builds on.

use std::path::Path;

use anyhow::{bail, Context, Result};
use syn::punctuated::Punctuated;
use syn::{Expr, Lit, Meta, Token};

/// One architecture file.
pub struct ArchFacts {
    pub module: String,
    pub name: String,
    pub format: String,
    pub hf_architectures: Vec<String>,
    pub model_types: Vec<String>,
    pub gguf_architectures: Vec<String>,
    pub description: String,
    /// What the file builds on, from the type's field.
    pub builds_on: &'static str,
    pub lines: usize,
}

/// Every architecture file of `dir`, sorted by registry name.
pub fn read_all(dir: &Path) -> Result<Vec<ArchFacts>> {
    let mut out = Vec::new();
    for (module, ty) in super::registered_models(dir)? {
        let path = dir.join(format!("{module}.rs"));
        let src = std::fs::read_to_string(&path)?;
        out.push(read(&module, &ty, &src).with_context(|| format!("reading {}", path.display()))?);
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn read(module: &str, ty: &str, src: &str) -> Result<ArchFacts> {
    let file = syn::parse_file(src)?;
    let (attrs, fields) = file
        .items
        .iter()
        .find_map(|item| match item {
            syn::Item::Struct(s) if s.ident == ty => Some((&s.attrs, quote_fields(&s.fields))),
            syn::Item::Enum(e) if e.ident == ty => Some((&e.attrs, String::new())),
            _ => None,
        })
        .context("the registered type")?;
    let attr = attrs
        .iter()
        .find(|a| {
            a.path()
                .segments
                .last()
                .is_some_and(|s| s.ident == "register_model")
        })
        .context("#[register_model]")?;
    let metas = attr.parse_args_with(Punctuated::<Meta, Token![,]>::parse_terminated)?;
    let mut f = ArchFacts {
        module: module.to_string(),
        name: String::new(),
        format: String::new(),
        hf_architectures: Vec::new(),
        model_types: Vec::new(),
        gguf_architectures: Vec::new(),
        description: String::new(),
        builds_on: builds_on(&fields, src),
        lines: src.lines().count(),
    };
    for m in metas {
        let Meta::NameValue(nv) = m else { continue };
        let key = nv
            .path
            .get_ident()
            .map(|i| i.to_string())
            .unwrap_or_default();
        match key.as_str() {
            "name" => f.name = string(&nv.value)?,
            "format" => f.format = path_name(&nv.value)?,
            "hf_architectures" => f.hf_architectures = strings(&nv.value)?,
            "model_types" => f.model_types = strings(&nv.value)?,
            "gguf_architectures" => f.gguf_architectures = strings(&nv.value)?,
            "description" => f.description = string(&nv.value)?,
            _ => {}
        }
    }
    if f.description.is_empty() {
        f.description = attrs
            .iter()
            .find_map(|a| match &a.meta {
                Meta::NameValue(nv) if nv.path.is_ident("doc") => string(&nv.value).ok(),
                _ => None,
            })
            .map(|s| s.trim().to_string())
            .unwrap_or_default();
    }
    if f.name.is_empty() || f.format.is_empty() {
        bail!("#[register_model] without `name` or `format`");
    }
    Ok(f)
}

fn quote_fields(fields: &syn::Fields) -> String {
    fields
        .iter()
        .map(|f| {
            let ty = &f.ty;
            quote_type(ty)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote_type(ty: &syn::Type) -> String {
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .iter()
            .map(|s| {
                let args = match &s.arguments {
                    syn::PathArguments::AngleBracketed(a) => a
                        .args
                        .iter()
                        .filter_map(|g| match g {
                            syn::GenericArgument::Type(t) => Some(quote_type(t)),
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(","),
                    _ => String::new(),
                };
                if args.is_empty() {
                    s.ident.to_string()
                } else {
                    format!("{}<{args}>", s.ident)
                }
            })
            .collect::<Vec<_>>()
            .join("::"),
        _ => String::new(),
    }
}

fn builds_on(fields: &str, src: &str) -> &'static str {
    if fields.contains("CandleLm<") {
        "candle-transformers model (`CandleLm`)"
    } else if fields.contains("LlamaDecoder") {
        "zoo's Llama decoder (`llama_decoder/`)"
    } else if fields.contains("GemmaDecoder") {
        "zoo's Gemma decoder (`gemma_decoder/`)"
    } else if src.contains("candle_transformers::models::") {
        "candle-transformers model, with the file's own glue"
    } else {
        "its own forward"
    }
}

fn string(e: &Expr) -> Result<String> {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Str(s) => Ok(s.value()),
            _ => bail!("expected a string"),
        },
        _ => bail!("expected a string"),
    }
}

fn strings(e: &Expr) -> Result<Vec<String>> {
    match e {
        Expr::Array(a) => a.elems.iter().map(string).collect(),
        _ => bail!("expected a list of strings"),
    }
}

fn path_name(e: &Expr) -> Result<String> {
    match e {
        Expr::Path(p) => Ok(p
            .path
            .get_ident()
            .map(|i| i.to_string())
            .context("a format name")?),
        _ => bail!("expected `safetensors` or `gguf`"),
    }
}
