//! Parsing and validation of `#[register_model(...)]`, keeping spans for errors.

use proc_macro2::Span;
use syn::meta::ParseNestedMeta;
use syn::{Ident, LitStr, Path};

use crate::ctxt::Ctxt;

pub const KEYS: &str =
    "name, format, hf_architectures, model_types, gguf_architectures, load, detect, batching, description, crate";

#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Safetensors,
    Gguf,
}

pub struct Attr {
    pub name: Option<LitStr>,
    pub format: Option<(Format, Ident)>,
    pub hf_architectures: Option<(Vec<LitStr>, Span)>,
    pub model_types: Option<(Vec<LitStr>, Span)>,
    pub gguf_architectures: Option<(Vec<LitStr>, Span)>,
    pub load: Option<Path>,
    pub detect: Option<Path>,
    pub description: Option<LitStr>,
    pub batching: Option<syn::LitBool>,
    pub krate: Option<Path>,
}

impl Attr {
    pub fn parse(args: proc_macro2::TokenStream, cx: &mut Ctxt) -> Attr {
        let mut attr = Attr {
            name: None,
            format: None,
            hf_architectures: None,
            model_types: None,
            gguf_architectures: None,
            load: None,
            detect: None,
            description: None,
            batching: None,
            krate: None,
        };
        let parser = syn::meta::parser(|meta| {
            attr.parse_one(meta, cx);
            Ok(())
        });
        if let Err(e) = syn::parse::Parser::parse2(parser, args) {
            cx.push(e);
        }
        attr
    }

    fn parse_one(&mut self, meta: ParseNestedMeta, cx: &mut Ctxt) {
        let key = meta.path.clone();
        let key_name = key.get_ident().map(|i| i.to_string()).unwrap_or_default();
        macro_rules! set {
            ($field:ident, $value:expr) => {{
                match $value {
                    Ok(v) => {
                        if self.$field.is_some() {
                            cx.error_spanned_by(
                                &key,
                                format!("duplicate `{key_name}`; give each key once"),
                            );
                        } else {
                            self.$field = Some(v);
                        }
                    }
                    Err(e) => cx.push(e),
                }
            }};
        }
        match key_name.as_str() {
            "name" => set!(name, meta.value().and_then(|v| v.parse::<LitStr>())),
            "description" => set!(description, meta.value().and_then(|v| v.parse::<LitStr>())),
            "load" => set!(load, meta.value().and_then(|v| v.parse::<Path>())),
            "detect" => set!(detect, meta.value().and_then(|v| v.parse::<Path>())),
            "batching" => set!(
                batching,
                meta.value().and_then(|v| v.parse::<syn::LitBool>())
            ),
            "crate" => set!(krate, meta.value().and_then(|v| v.parse::<Path>())),
            "format" => set!(
                format,
                meta.value().and_then(|v| v.parse::<Ident>()).and_then(|i| {
                    match i.to_string().as_str() {
                        "safetensors" => Ok((Format::Safetensors, i)),
                        "gguf" => Ok((Format::Gguf, i)),
                        other => Err(syn::Error::new(
                            i.span(),
                            format!("unknown format `{other}`; expected `safetensors` or `gguf`"),
                        )),
                    }
                })
            ),
            "hf_architectures" => set!(hf_architectures, parse_list(&meta)),
            "model_types" => set!(model_types, parse_list(&meta)),
            "gguf_architectures" => set!(gguf_architectures, parse_list(&meta)),
            _ => {
                cx.error_spanned_by(
                    &key,
                    format!(
                        "unknown key `{}`; expected one of {KEYS}",
                        quote::quote!(#key)
                    ),
                );
                // Skip the value so the next keys are still checked.
                if let Ok(v) = meta.value() {
                    let _ = v.parse::<syn::Expr>();
                }
            }
        }
    }

    /// Checks what the keys say together; reports every problem.
    pub fn validate(&self, cx: &mut Ctxt, item_span: Span) {
        let missing = |cx: &mut Ctxt, key: &str, example: &str| {
            cx.error_at(
                item_span,
                format!("missing `{key}` in #[register_model]; add `{key} = {example}`"),
            )
        };
        match &self.name {
            None => missing(cx, "name", "\"my-arch\""),
            Some(n) => {
                let v = n.value();
                if v.is_empty()
                    || !v
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_.".contains(c))
                {
                    cx.error_spanned_by(n, "registry names are lowercase ascii letters, digits, `-`, `_` and `.`; rename it");
                }
            }
        }
        if self.load.is_none() {
            missing(cx, "load", "MyModel::load");
        }
        let Some((format, _)) = &self.format else {
            missing(cx, "format", "safetensors");
            return;
        };
        match format {
            Format::Safetensors => {
                if let Some((_, span)) = &self.gguf_architectures {
                    cx.error_at(*span, "`gguf_architectures` is for `format = gguf`; a safetensors model is found by `hf_architectures` or `model_types`");
                }
                if self.hf_architectures.is_none() && self.model_types.is_none() {
                    cx.error_at(item_span, "a safetensors model needs `hf_architectures = [...]` or `model_types = [...]` (the config.json strings it loads)");
                }
            }
            Format::Gguf => {
                for (list, key) in [
                    (&self.hf_architectures, "hf_architectures"),
                    (&self.model_types, "model_types"),
                ] {
                    if let Some((_, span)) = list {
                        cx.error_at(*span, format!("`{key}` is for `format = safetensors`; a GGUF model is found by `gguf_architectures`"));
                    }
                }
                if self.gguf_architectures.is_none() {
                    cx.error_at(item_span, "a gguf model needs `gguf_architectures = [...]` (the `general.architecture` strings it loads)");
                }
            }
        }
    }
}

fn parse_list(meta: &ParseNestedMeta) -> syn::Result<(Vec<LitStr>, Span)> {
    let value = meta.value()?;
    let content;
    let bracket = syn::bracketed!(content in value);
    let items = content.parse_terminated(<LitStr as syn::parse::Parse>::parse, syn::Token![,])?;
    let items: Vec<LitStr> = items.into_iter().collect();
    let span = meta.path.span();
    if items.is_empty() {
        return Err(syn::Error::new(
            bracket.span.join(),
            "empty list; name at least one string or leave the key out",
        ));
    }
    for (i, a) in items.iter().enumerate() {
        if items[..i].iter().any(|b| b.value() == a.value()) {
            return Err(syn::Error::new(
                a.span(),
                format!("`{}` is listed twice; list it once", a.value()),
            ));
        }
        if a.value().is_empty() {
            return Err(syn::Error::new(a.span(), "empty architecture string"));
        }
    }
    Ok((items, span))
}

use syn::spanned::Spanned;
