//! `zoo serve`: an OpenAI-compatible HTTP server over any registered architecture.
//!
//! The model runs in zoo's engine ([`zoo::Engine`]): `--parallel` sequences at once in
//! continuous batches, KV memory in blocks within `--kv-cache-mib`, a prefix cache, and
//! results that are the same bits whatever else runs. Requests past the engine's
//! running slots wait in its queue, and past `--queue-depth` get 429. A client that
//! disconnects (its response stream dropped) cancels its choices at the engine's next
//! step; a request that runs past `--timeout-s` ends with an error. The address
//! answers as soon as it is bound, before the model has loaded; `/health` tells
//! loading, ready and draining apart ([`lifecycle`]): SIGINT/SIGTERM turn the server to
//! draining, in-flight responses finish, then it stops. `/metrics` is Prometheus text,
//! with the memory report (checkpoint, resident weights, KV cache, RSS).
//!
//! - [`request`], `params`, [`error`]: the request bodies, their validation and the
//!   error responses (in the library half, [`zoo_cli::api`], for the fuzz targets);
//! - [`endpoint`]: what differs between completions and chat completions, and the
//!   handler they share;
//! - [`response`]: the response bodies; [`reply`]: whole or streamed;
//! - [`worker`]: a request's choices into the engine, and their output back;
//! - [`metrics`]: the counters and their Prometheus text;
//! - [`lifecycle`]: loading, ready, draining, and `/health`;
//! - [`http`]: the connections, with header and shutdown timeouts.

mod endpoint;
mod http;
mod lifecycle;
mod metrics;
mod reply;
mod response;
mod worker;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use zoo::{CausalLM, ChatTemplate};

use crate::commands::ModelArg;
use endpoint::{ChatCompletions, Completions};
use error::ApiError;
use lifecycle::{Lifecycle, Phase};
use metrics::Metrics;
use response::ModelList;
use worker::Queue;
use zoo_cli::api::{error, request};

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests that may wait for a running slot; past this they get 429.
    #[arg(long, default_value_t = 64)]
    pub queue_depth: usize,
    /// Sequences running at once (continuous batching). Architectures that do not
    /// batch (`zoo list`) run one at a time whatever this says.
    #[arg(long, default_value_t = 16)]
    pub parallel: usize,
    /// Memory for the KV cache blocks, MiB (default: a quarter of the available memory,
    /// at most what `--parallel` full contexts take).
    #[arg(long)]
    pub kv_cache_mib: Option<usize>,
    /// Tokens one engine step may run: one per decoding sequence, the rest for prompt
    /// chunks.
    #[arg(long, default_value_t = 512)]
    pub step_tokens: usize,
    /// A request running longer than this ends with an error.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// A Jinja chat template file, for models without one.
    #[arg(long)]
    pub template: Option<std::path::PathBuf>,
    /// Skip the warmup request run after loading (`/health` turns ready at once).
    #[arg(long)]
    pub no_warmup: bool,
}

/// What the handlers share.
pub struct AppState {
    model_id: String,
    context_length: usize,
    tokenizer: zoo::Tokenizer,
    template: Option<ChatTemplate>,
    /// Why there is no template, for chat requests.
    template_error: Option<String>,
    queue: Queue,
    metrics: Arc<Metrics>,
    life: Arc<Lifecycle>,
}

/// The chat template: `--template` if given, else the one the checkpoint gave at load
/// (nothing is opened again). A checkpoint without one is not an error until a chat
/// request comes (`template_error`, with the flag that answers it).
fn chat_template(
    file: Option<&Path>,
    loaded: zoo::Result<ChatTemplate>,
) -> Result<(Option<ChatTemplate>, Option<String>)> {
    Ok(match file {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            (Some(ChatTemplate::new(text, "", "")?), None)
        }
        None => match loaded {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(crate::hint::cli_error(e).to_string())),
        },
    })
}

/// Binds the address, serves `/health` (loading) while the model loads and warms up,
/// then serves the API until SIGINT or SIGTERM, and drains.
pub fn run(a: ServeArgs) -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(serve(a));
    // A signal during loading leaves the loading thread behind: do not wait for it.
    rt.shutdown_background();
    result
}

async fn serve(a: ServeArgs) -> Result<()> {
    let addr: SocketAddr = format!("{}:{}", a.host, a.port)
        .parse()
        .context("--host/--port")?;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    listener.set_nonblocking(true)?;
    let local = listener.local_addr()?;
    println!("zoo: listening on http://{local}");
    use std::io::Write;
    std::io::stdout().flush()?;

    let life = Arc::new(Lifecycle::default());
    let (loaded_tx, loaded_rx) = tokio::sync::oneshot::channel::<()>();
    let loading_listener = tokio::net::TcpListener::from_std(listener.try_clone()?)?;
    let loading_routes = lifecycle::loading_router(life.clone());
    let loading = tokio::spawn(http::serve(
        loading_listener,
        loading_routes,
        async {
            let _ = loaded_rx.await;
        },
        Duration::from_secs(5),
    ));
    let timeout = Duration::from_secs(a.timeout_s);
    let prepare = {
        let life = life.clone();
        tokio::task::spawn_blocking(move || prepare(a, life))
    };
    let state = tokio::select! {
        state = prepare => state??,
        _ = lifecycle::signal() => {
            eprintln!("zoo: stopped while loading");
            return Ok(());
        }
    };
    let _ = loaded_tx.send(());
    loading.await?;
    life.set(Phase::Ready);
    eprintln!("zoo: ready");
    let queue_state = state.clone();
    http::serve(
        tokio::net::TcpListener::from_std(listener)?,
        router(state),
        lifecycle::drain(life, move || queue_state.queue.in_flight(), timeout),
        Duration::from_secs(10),
    )
    .await;
    eprintln!("zoo: stopped");
    Ok(())
}

/// Loads the model, starts the engine and runs the warmup request (on a blocking
/// thread while the loading router answers).
fn prepare(a: ServeArgs, life: Arc<Lifecycle>) -> Result<Arc<AppState>> {
    let path = a.model.resolve()?;
    let mut loaded = a.model.load()?;
    let model_id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let from_checkpoint = std::mem::replace(
        &mut loaded.chat_template,
        Err(zoo::Error::NoChatTemplate { path: path.clone() }),
    );
    let (template, template_error) = chat_template(a.template.as_deref(), from_checkpoint)?;
    let metrics = Arc::new(Metrics::default());
    let _ = metrics.load_memory.set(loaded.memory);
    let context_length = loaded.model.context_length();
    let tokenizer = loaded.tokenizer.clone();
    let timeout = Duration::from_secs(a.timeout_s);
    let config = zoo::EngineConfig {
        max_sequences: a.parallel,
        step_tokens: a.step_tokens,
        kv_budget: a
            .kv_cache_mib
            .map_or(zoo::KvBudget::Auto, |m| zoo::KvBudget::Bytes(m << 20)),
        max_waiting: a.queue_depth,
        ..Default::default()
    };
    let block_size = config.block_size;
    let queue = Queue::start(loaded, config, timeout, metrics.clone())?;
    let engine = queue.engine();
    let stats = engine.stats();
    eprintln!(
        "zoo: engine with {} sequence(s) at once, {} KV blocks of {block_size} positions ({:.1} MiB)",
        if engine.batching() { a.parallel } else { 1 },
        zoo::EngineStats::get(&stats.kv_blocks_total),
        zoo::EngineStats::get(&stats.kv_cache_bytes) as f64 / (1 << 20) as f64,
    );
    if !a.no_warmup {
        let t = std::time::Instant::now();
        warmup(engine, &tokenizer)?;
        eprintln!("zoo: warmed up in {} ms", t.elapsed().as_millis());
    }
    Ok(Arc::new(AppState {
        model_id,
        context_length,
        tokenizer,
        template,
        template_error,
        queue,
        metrics,
        life,
    }))
}

/// One short greedy request through the engine before the server says ready: the
/// first step's allocations and the kernels' first touch of the weights happen here,
/// not in a client's time to first token.
fn warmup(engine: &zoo::Engine, tokenizer: &zoo::Tokenizer) -> Result<()> {
    let ids = tokenizer.encode_prompt("Hello")?;
    let mut request = zoo::Request::new(ids, 2);
    request.ignore_eos = true;
    for event in engine.submit(request)?.blocking() {
        if let zoo::Event::Error(e) = event {
            return Err(e).context("the warmup request failed");
        }
    }
    Ok(())
}

/// The two generation endpoints, `/v1/models`, `/health`, `/metrics`, and an OpenAI
/// 404 for anything else.
fn router(state: Arc<AppState>) -> Router {
    type S = State<Arc<AppState>>;
    Router::new()
        .route("/v1/completions", post(endpoint::handle::<Completions>))
        .route(
            "/v1/chat/completions",
            post(endpoint::handle::<ChatCompletions>),
        )
        .route(
            "/v1/models",
            get(|State(s): S| async move { Json(ModelList::new(&s.model_id)).into_response() }),
        )
        .route("/health", get(|State(s): S| async move { s.life.health() }))
        .route(
            "/metrics",
            get(|State(s): S| async move {
                let text = s
                    .metrics
                    .render(s.queue.in_flight(), s.queue.engine().stats());
                ([("content-type", "text/plain; version=0.0.4")], text)
            }),
        )
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "invalid_request_error",
                "no such endpoint",
            )
        })
        .with_state(state)
}
