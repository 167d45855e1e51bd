//! `cargo xtask new-arch NAME ...`: scaffolds an architecture — its one file in
//! `models/src/arch/`, its fixture spec in `tests/fixtures/NAME/spec.json` — and runs
//! codegen; with `--generate` also the fixtures, the references and the conformance
//! run that writes its snapshots. See docs/adding-an-architecture.md.

use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::{cargo, codegen, root, run};

struct Opts {
    name: String,
    format: String,
    candle: String,
    hf_arch: Option<String>,
    model_type: Option<String>,
    gguf_arch: Option<String>,
    hf_model_type: Option<String>,
    generate: bool,
}

const USAGE: &str = "usage: cargo xtask new-arch NAME \
    (--hf-arch Arch --model-type type [--candle MODULE] | --format gguf --gguf-arch arch --hf-model-type type) [--generate]";

fn parse(args: &[String]) -> Result<Opts> {
    let mut it = args.iter();
    let name = it.next().context(USAGE)?.clone();
    if name.starts_with('-') {
        bail!("{USAGE}");
    }
    let mut o = Opts {
        name,
        format: "safetensors".into(),
        candle: String::new(),
        hf_arch: None,
        model_type: None,
        gguf_arch: None,
        hf_model_type: None,
        generate: false,
    };
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .with_context(|| format!("{flag} needs a value; {USAGE}"))
        };
        match flag.as_str() {
            "--format" => o.format = value()?,
            "--candle" => o.candle = value()?,
            "--hf-arch" => o.hf_arch = Some(value()?),
            "--model-type" => o.model_type = Some(value()?),
            "--gguf-arch" => o.gguf_arch = Some(value()?),
            "--hf-model-type" => o.hf_model_type = Some(value()?),
            "--generate" => o.generate = true,
            other => bail!("unknown option `{other}`; {USAGE}"),
        }
    }
    if !o
        .name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        bail!(
            "registry names are lowercase ascii letters, digits and `-`: `{}`",
            o.name
        );
    }
    match o.format.as_str() {
        "safetensors" if o.hf_arch.is_none() && o.model_type.is_none() => {
            bail!("a safetensors architecture needs --hf-arch and/or --model-type (config.json strings)")
        }
        "gguf" if o.gguf_arch.is_none() || o.hf_model_type.is_none() => {
            bail!("a gguf architecture needs --gguf-arch (general.architecture) and --hf-model-type (the transformers model its fixtures are converted from)")
        }
        "safetensors" | "gguf" => {}
        f => bail!("unknown format `{f}`; expected safetensors or gguf"),
    }
    Ok(o)
}

fn camel(name: &str) -> String {
    name.split('-')
        .map(|p| {
            let mut c = p.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

fn list(v: &Option<String>) -> String {
    v.as_ref().map(|s| format!("\"{s}\"")).unwrap_or_default()
}

fn arch_file(o: &Opts) -> String {
    let ty = camel(&o.name);
    // The config.json strings a safetensors entry claims, for its header.
    let archs = [o.hf_arch.as_deref(), o.model_type.as_deref()]
        .into_iter()
        .flatten()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(", ");
    if o.format == "gguf" {
        let g = o.gguf_arch.as_deref().unwrap_or_default();
        format!(
            r#"//! {ty} from GGUF (`general.architecture = {g}`).
//!
//! Reference implementation: llama.cpp (`src/models/{g}.cpp`). Built on zoo's Llama
//! decoder (`llama_decoder/`); its facts are the options below: check each against
//! llama.cpp's graph for `{g}` and say here what differs from Llama.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{{llama_gguf_load, LlamaDecoder, LlamaOptions, RopeLayout}};

/// {ty} (GGUF, quantized weights).
#[register_model(
    name = "{name}",
    format = gguf,
    gguf_architectures = ["{g}"],
    load = {ty}::load,
)]
pub struct {ty}(Decoded<LlamaDecoder>);

/// What differs from Llama: the rotary layout llama.cpp's converter writes for `{g}`,
/// which projections carry biases, whether heads are RMS-normed before the rotation,
/// and the rope base transformers documents.
const OPTIONS: LlamaOptions = LlamaOptions {{
    rope: RopeLayout::Halves,
    ..LlamaOptions::LLAMA
}};

llama_gguf_load!({ty}, OPTIONS);
"#,
            name = o.name,
        )
    } else if o.candle.is_empty() {
        format!(
            r#"//! {ty} from safetensors ({archs}).
//!
//! Reference implementation: transformers' `modeling_{module}.py`. Built on zoo's Llama
//! decoder (`llama_decoder/`); its facts are the options below: check each against
//! transformers' model and config class and say here what differs from Llama.

use zoo_macros::register_model;

use crate::adapters::Decoded;
use crate::llama_decoder::{{llama_safetensors_load, LlamaDecoder, LlamaOptions}};

{attribute}
pub struct {ty}(Decoded<LlamaDecoder>);

/// What differs from Llama (`LlamaOptions`: biases, q/k norms, norm kind and place,
/// rotary layout, MLP, the config class's documented defaults).
const OPTIONS: LlamaOptions = LlamaOptions {{
    ..LlamaOptions::LLAMA
}};

// The context transformers' config class documents when config.json omits it.
llama_safetensors_load!({ty}, OPTIONS, default_context = 4096);
"#,
            module = o
                .model_type
                .clone()
                .unwrap_or_else(|| o.name.replace('-', "_")),
            attribute = safetensors_attribute(o, "weights in their stored dtype", true),
        )
    } else {
        format!(
            r#"//! {ty} from safetensors ({archs}).
//!
//! Reference implementation: transformers. Built on candle-transformers' `{candle}`.
//! candle's model computes what transformers computes (the conformance suite
//! measures the difference); this file only maps the registry and config.json to it.

use candle_transformers::models::{candle} as candle_model;
use zoo_macros::register_model;

use crate::adapters::{{candle_load, CandleLm, ConfigQuirks}};

{attribute}
pub struct {ty}(CandleLm<candle_model::Model>);

// A config.json without rope_theta is an error: set `rope_theta` in the quirks to the
// default transformers' config class documents, if it has one.
candle_load!({ty}, candle_model::Model, ConfigQuirks::default());
"#,
            candle = o.candle,
            attribute = safetensors_attribute(o, "f32 on CPU", false),
        )
    }
}

/// A safetensors entry's doc line and `#[register_model]` attribute.
fn safetensors_attribute(o: &Opts, weights: &str, batching: bool) -> String {
    format!(
        "/// {ty} (safetensors, {weights}).\n#[register_model(\n    name = \"{name}\",\n    format = safetensors,\n    hf_architectures = [{hf}],\n    model_types = [{mt}],\n    load = {ty}::load,\n{batching})]",
        ty = camel(&o.name),
        name = o.name,
        hf = list(&o.hf_arch),
        mt = list(&o.model_type),
        batching = if batching { "    batching = true,\n" } else { "" },
    )
}

fn spec(o: &Opts) -> String {
    let model_type = o
        .hf_model_type
        .clone()
        .or_else(|| o.model_type.clone())
        .unwrap_or_else(|| o.name.clone());
    let config = r#"{"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 64, "rope_theta": 10000.0, "head_dim": 16}"#;
    let variants: Vec<String> = if o.format == "gguf" {
        let big = config
            .replace("\"hidden_size\": 64", "\"hidden_size\": 256")
            .replace("\"intermediate_size\": 128", "\"intermediate_size\": 512")
            .replace("\"head_dim\": 16", "\"head_dim\": 64");
        [("f32", config.to_string()), ("q8_0", config.to_string()), ("q4_k_m", big)]
            .iter()
            .map(|(q, c)| format!(r#"  {{"name": "{q}", "gguf_type": "{q}", "hf_model_type": "{model_type}", "seed": 1, "config": {c}}}"#))
            .collect()
    } else {
        vec![format!(
            r#"  {{"name": "f32", "hf_model_type": "{model_type}", "seed": 1, "config": {config}}}"#
        )]
    };
    format!("{{\"variants\": [\n{}\n]}}\n", variants.join(",\n"))
}

fn write_new(path: &Path, text: &str) -> Result<()> {
    if path.exists() {
        bail!("{} exists; new-arch does not overwrite", path.display());
    }
    std::fs::create_dir_all(path.parent().unwrap())?;
    std::fs::write(path, text)?;
    eprintln!("xtask: wrote {}", path.display());
    Ok(())
}

pub fn new_arch(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let file = root()
        .join("models/src/arch")
        .join(format!("{}.rs", o.name.replace('-', "_")));
    write_new(&file, &arch_file(&o))?;
    write_new(
        &root()
            .join("tests/fixtures")
            .join(&o.name)
            .join("spec.json"),
        &spec(&o),
    )?;
    codegen::generate(false)?;
    let mut fmt = cargo();
    fmt.args(["fmt", "--all"]);
    run(fmt)?;
    if o.generate {
        crate::refgen::refgen("fixtures", std::slice::from_ref(&o.name))?;
        crate::refgen::refgen("refgen", std::slice::from_ref(&o.name))?;
        for test in ["conformance", "registry"] {
            let mut c = cargo();
            c.args(["test", "-p", "zoo-tests", "--test", test])
                .env("INSTA_UPDATE", "always");
            if test == "conformance" {
                c.args(["--", &format!("{}::", o.name)]);
            }
            run(c)?;
        }
        eprintln!("xtask: {} scaffolded, fixtures and references recorded, snapshots written; review `git status` and `git diff`, then commit", o.name);
    } else {
        eprintln!(
            "xtask: next: `cargo xtask fixtures {n}`, `cargo xtask refgen {n}`, `cargo test -p zoo-tests --test conformance -- {n}::` (then `cargo insta review`), or rerun with --generate",
            n = o.name
        );
    }
    let _ = Command::new("git")
        .arg("status")
        .arg("--short")
        .current_dir(root())
        .status();
    Ok(())
}
