//! `zoo serve`: an OpenAI-compatible HTTP server over any registered architecture.
//!
//! One worker thread owns the model and runs one generation at a time (the KV cache is
//! reset by `generate` for each request); requests wait in a bounded queue, and past
//! its depth get 429. A client that disconnects (its response stream dropped) cancels
//! its generation at the next token; a request that runs past `--timeout-s` ends with
//! an error. SIGINT/SIGTERM stop accepting connections and let in-flight responses
//! finish. `/metrics` is Prometheus text.

// The request helpers return the error response itself (`Result<_, Response>`), once per
// request; boxing it would buy nothing.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::Stream;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use zoo::{CausalLM, ChatTemplate, GenerateOptions, Message, SamplingParams, StopReason};

use crate::commands::ModelArg;

#[derive(clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub model: ModelArg,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// 0 picks a free port (the address is printed on stdout).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests that may wait for the model; past this they get 429.
    #[arg(long, default_value_t = 64)]
    pub queue_depth: usize,
    /// A request running longer than this ends with an error.
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
    /// A Jinja chat template file, for models without one.
    #[arg(long)]
    pub template: Option<std::path::PathBuf>,
}

/// What the worker sends back for one request.
enum Out {
    Piece(String),
    Done {
        stop: StopReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

struct Job {
    prompt_ids: Vec<u32>,
    options: GenerateOptions,
    tx: mpsc::UnboundedSender<Out>,
    enqueued: Instant,
}

/// A Prometheus histogram with fixed buckets (seconds).
struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            if s <= *b {
                c.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.sum_micros
            .fetch_add(d.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            out.push_str(&format!(
                "{name}_bucket{{le=\"{b}\"}} {}\n",
                c.load(Ordering::Relaxed)
            ));
        }
        let n = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {n}\n"));
        out.push_str(&format!(
            "{name}_sum {}\n{name}_count {n}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        ));
    }
}

const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

struct Metrics {
    requests: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    ttft: Histogram,
    itl: Histogram,
}

struct AppState {
    model_id: String,
    context_length: usize,
    jobs: std::sync::mpsc::SyncSender<Job>,
    /// Requests admitted and not yet finished (waiting or running).
    in_flight: Arc<AtomicUsize>,
    queue_depth: usize,
    tokenizer: zoo::Tokenizer,
    template: Option<ChatTemplate>,
    template_error: Option<String>,
    metrics: Arc<Metrics>,
}

fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// An OpenAI-style error response.
fn error(
    status: StatusCode,
    kind: &str,
    message: impl Into<String>,
    param: Option<&str>,
) -> Response {
    (
        status,
        Json(json!({"error": {"message": message.into(), "type": kind, "param": param, "code": null}})),
    )
        .into_response()
}

fn bad_request(message: impl Into<String>, param: Option<&str>) -> Response {
    error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        message,
        param,
    )
}

/// The request fields shared by both endpoints, validated.
struct Params {
    options: GenerateOptions,
    stream: bool,
}

fn params(body: &Value, ctx: usize) -> std::result::Result<Params, Response> {
    let num = |key: &str| -> std::result::Result<Option<f64>, Response> {
        match body.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad_request(format!("`{key}` must be a number"), Some(key))),
        }
    };
    let temperature = num("temperature")?.unwrap_or(1.0);
    if !(0.0..=2.0).contains(&temperature) {
        return Err(bad_request(
            "`temperature` must be between 0 and 2",
            Some("temperature"),
        ));
    }
    let top_p = num("top_p")?;
    if let Some(p) = top_p {
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad_request("`top_p` must be in (0, 1]", Some("top_p")));
        }
    }
    for key in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = num(key)? {
            if !(-2.0..=2.0).contains(&v) {
                return Err(bad_request(
                    format!("`{key}` must be between -2 and 2"),
                    Some(key),
                ));
            }
            if v != 0.0 {
                return Err(bad_request(
                    format!("`{key}` other than 0 is not supported (candle's logits processor has a repeat penalty only)"),
                    Some(key),
                ));
            }
        }
    }
    let max_tokens = match num("max_tokens")?.or(num("max_completion_tokens")?) {
        None => 256,
        Some(m) if m >= 1.0 && m.fract() == 0.0 => m as usize,
        Some(_) => {
            return Err(bad_request(
                "`max_tokens` must be a positive integer",
                Some("max_tokens"),
            ))
        }
    };
    if max_tokens >= ctx {
        return Err(bad_request(
            format!("`max_tokens` {max_tokens} does not fit the model's context of {ctx} tokens"),
            Some("max_tokens"),
        ));
    }
    if let Some(n) = num("n")? {
        if n != 1.0 {
            return Err(bad_request("only `n` = 1 is supported", Some("n")));
        }
    }
    let seed = match num("seed")? {
        None => 299792458,
        Some(s) if s >= 0.0 && s.fract() == 0.0 => s as u64,
        Some(_) => {
            return Err(bad_request(
                "`seed` must be a non-negative integer",
                Some("seed"),
            ))
        }
    };
    let stop = match body.get("stop") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(a)) if a.len() <= 4 && a.iter().all(|v| v.is_string()) => a
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        Some(_) => {
            return Err(bad_request(
                "`stop` must be a string or up to 4 strings",
                Some("stop"),
            ))
        }
    };
    let stream = match body.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad_request("`stream` must be a boolean", Some("stream"))),
    };
    Ok(Params {
        options: GenerateOptions {
            max_tokens,
            sampling: SamplingParams {
                temperature,
                top_p,
                seed,
                ..Default::default()
            },
            skip_special: true,
            stop,
        },
        stream,
    })
}

fn parse_body(body: &Bytes) -> std::result::Result<Value, Response> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| bad_request(format!("the body is not valid JSON: {e}"), None))?;
    if !v.is_object() {
        return Err(bad_request("the body must be a JSON object", None));
    }
    Ok(v)
}

fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Eos | StopReason::StopString | StopReason::Cancelled => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Completion,
    Chat,
}

/// Admits a job (or 429) and returns the receiver of its output.
fn submit(
    state: &Arc<AppState>,
    prompt_ids: Vec<u32>,
    options: GenerateOptions,
) -> std::result::Result<mpsc::UnboundedReceiver<Out>, Response> {
    state.metrics.requests.fetch_add(1, Ordering::Relaxed);
    if prompt_ids.len() + options.max_tokens > state.context_length {
        return Err(bad_request(
            format!(
                "the prompt has {} tokens; with max_tokens {} that exceeds the model's context of {} tokens",
                prompt_ids.len(),
                options.max_tokens,
                state.context_length
            ),
            Some("max_tokens"),
        ));
    }
    let admitted = state
        .in_flight
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
            (n < state.queue_depth + 1).then_some(n + 1)
        })
        .is_ok();
    if !admitted {
        state.metrics.rejected.fetch_add(1, Ordering::Relaxed);
        return Err(error(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            format!(
                "the server's queue is full ({} waiting); retry later",
                state.queue_depth
            ),
            None,
        ));
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let job = Job {
        prompt_ids,
        options,
        tx,
        enqueued: Instant::now(),
    };
    if state.jobs.send(job).is_err() {
        state.in_flight.fetch_sub(1, Ordering::SeqCst);
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the model worker has stopped",
            None,
        ));
    }
    Ok(rx)
}

async fn handle(state: Arc<AppState>, body: Bytes, kind: Kind) -> Response {
    let body = match parse_body(&body) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let p = match params(&body, state.context_length) {
        Ok(p) => p,
        Err(r) => return r,
    };
    let prompt_ids = match kind {
        Kind::Completion => {
            let Some(prompt) = body.get("prompt").and_then(|p| p.as_str()) else {
                return bad_request("`prompt` must be a string", Some("prompt"));
            };
            if prompt.is_empty() {
                return bad_request("`prompt` is empty", Some("prompt"));
            }
            state.tokenizer.encode_prompt(prompt)
        }
        Kind::Chat => {
            let messages: Vec<Message> =
                match body.get("messages").cloned().map(serde_json::from_value) {
                    Some(Ok(m)) => m,
                    _ => {
                        return bad_request(
                            "`messages` must be a list of {role, content} strings",
                            Some("messages"),
                        )
                    }
                };
            if messages.is_empty() {
                return bad_request("`messages` is empty", Some("messages"));
            }
            if let Some(m) = messages
                .iter()
                .find(|m| !["system", "user", "assistant", "developer"].contains(&m.role.as_str()))
            {
                return bad_request(format!("unknown role `{}`", m.role), Some("messages"));
            }
            let Some(template) = &state.template else {
                return bad_request(
                    state
                        .template_error
                        .clone()
                        .unwrap_or_else(|| "no chat template".into()),
                    Some("messages"),
                );
            };
            match template.render(&messages, true) {
                Ok(text) => state.tokenizer.encode_chat(&text, template.bos_token()),
                Err(e) => return bad_request(e.to_string(), Some("messages")),
            }
        }
    };
    let prompt_ids = match prompt_ids {
        Ok(ids) => ids,
        Err(e) => return bad_request(e.to_string(), None),
    };
    let rx = match submit(&state, prompt_ids, p.options) {
        Ok(rx) => rx,
        Err(r) => return r,
    };
    let id = format!(
        "{}-{}",
        if kind == Kind::Chat {
            "chatcmpl"
        } else {
            "cmpl"
        },
        now_s()
    );
    if p.stream {
        Sse::new(sse(rx, id, state.model_id.clone(), kind)).into_response()
    } else {
        collect(rx, id, &state.model_id, kind).await
    }
}

async fn collect(
    mut rx: mpsc::UnboundedReceiver<Out>,
    id: String,
    model: &str,
    kind: Kind,
) -> Response {
    let mut text = String::new();
    while let Some(out) = rx.recv().await {
        match out {
            Out::Piece(p) => text.push_str(&p),
            Out::Error(e) => {
                return error(StatusCode::INTERNAL_SERVER_ERROR, "server_error", e, None)
            }
            Out::Done {
                stop,
                prompt_tokens,
                completion_tokens,
            } => {
                let choice = if kind == Kind::Chat {
                    json!({"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish_reason(stop), "logprobs": null})
                } else {
                    json!({"index": 0, "text": text, "finish_reason": finish_reason(stop), "logprobs": null})
                };
                return Json(json!({
                    "id": id,
                    "object": if kind == Kind::Chat { "chat.completion" } else { "text_completion" },
                    "created": now_s(),
                    "model": model,
                    "choices": [choice],
                    "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens},
                }))
                .into_response();
            }
        }
    }
    error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "server_error",
        "generation ended without a result",
        None,
    )
}

enum Phase {
    Start,
    Running,
    Finished,
    End,
}

fn sse(
    rx: mpsc::UnboundedReceiver<Out>,
    id: String,
    model: String,
    kind: Kind,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let created = now_s();
    let chunk = move |content: Option<&str>, finish: Option<&str>, role: bool| -> Event {
        let choice = if kind == Kind::Chat {
            let mut delta = json!({});
            if role {
                delta["role"] = json!("assistant");
            }
            if let Some(c) = content {
                delta["content"] = json!(c);
            }
            json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null})
        } else {
            json!({"index": 0, "text": content.unwrap_or(""), "finish_reason": finish, "logprobs": null})
        };
        let object = if kind == Kind::Chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        Event::default().data(
            json!({"id": id, "object": object, "created": created, "model": model, "choices": [choice]})
                .to_string(),
        )
    };
    // Dropping this stream (the client went away) drops `rx`, which the worker sees
    // at its next token and stops.
    futures::stream::unfold((rx, Phase::Start), move |(mut rx, phase)| {
        let chunk = chunk.clone();
        async move {
            let (event, next) = match phase {
                Phase::Start if kind == Kind::Chat => (chunk(None, None, true), Phase::Running),
                Phase::Start | Phase::Running => match rx.recv().await {
                    Some(Out::Piece(p)) => (chunk(Some(&p), None, false), Phase::Running),
                    Some(Out::Done { stop, .. }) => (chunk(None, Some(finish_reason(stop)), false), Phase::Finished),
                    Some(Out::Error(e)) => (
                        Event::default().data(json!({"error": {"message": e, "type": "server_error"}}).to_string()),
                        Phase::Finished,
                    ),
                    None => (
                        Event::default().data(json!({"error": {"message": "generation stopped", "type": "server_error"}}).to_string()),
                        Phase::Finished,
                    ),
                },
                Phase::Finished => (Event::default().data("[DONE]"), Phase::End),
                Phase::End => return None,
            };
            Some((Ok(event), (rx, next)))
        }
    })
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    let m = &state.metrics;
    let mut out = String::new();
    let counter = |out: &mut String, name: &str, help: &str, v: u64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
        ));
    };
    counter(
        &mut out,
        "zoo_requests_total",
        "Generation requests received.",
        m.requests.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "zoo_requests_rejected_total",
        "Requests refused with 429 (queue full).",
        m.rejected.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "zoo_errors_total",
        "Generations that ended with an error.",
        m.errors.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "zoo_prompt_tokens_total",
        "Prompt tokens processed.",
        m.prompt_tokens.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "zoo_generated_tokens_total",
        "Tokens generated.",
        m.generated_tokens.load(Ordering::Relaxed),
    );
    let depth = state.in_flight.load(Ordering::SeqCst);
    out.push_str(&format!("# HELP zoo_queue_depth Requests waiting or running.\n# TYPE zoo_queue_depth gauge\nzoo_queue_depth {depth}\n"));
    m.ttft.render(
        "zoo_time_to_first_token_seconds",
        "From admission to the first token.",
        &mut out,
    );
    m.itl.render(
        "zoo_inter_token_latency_seconds",
        "Between consecutive tokens.",
        &mut out,
    );
    ([("content-type", "text/plain; version=0.0.4")], out)
}

/// Runs jobs one at a time on the model.
fn worker(
    mut loaded: zoo::Loaded,
    jobs: std::sync::mpsc::Receiver<Job>,
    in_flight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    timeout: Duration,
) {
    while let Ok(job) = jobs.recv() {
        let done = || {
            in_flight.fetch_sub(1, Ordering::SeqCst);
        };
        if job.tx.is_closed() {
            done();
            continue;
        }
        let deadline = job.enqueued + timeout;
        let mut last = None::<Instant>;
        let mut timed_out = false;
        let result = zoo::generate(
            &mut loaded.model,
            &loaded.tokenizer,
            &job.prompt_ids,
            &job.options,
            |piece| {
                let now = Instant::now();
                match last {
                    None => metrics.ttft.observe(now - job.enqueued),
                    Some(t) => metrics.itl.observe(now - t),
                }
                last = Some(now);
                if now > deadline {
                    timed_out = true;
                    return ControlFlow::Break(());
                }
                // A dropped receiver means the client went away: stop now.
                match job.tx.send(Out::Piece(piece.to_string())) {
                    Ok(()) => ControlFlow::Continue(()),
                    Err(_) => ControlFlow::Break(()),
                }
            },
        );
        match result {
            Ok(g) => {
                metrics
                    .prompt_tokens
                    .fetch_add(g.stats.prompt_tokens as u64, Ordering::Relaxed);
                metrics
                    .generated_tokens
                    .fetch_add(g.stats.generated_tokens as u64, Ordering::Relaxed);
                if timed_out {
                    metrics.errors.fetch_add(1, Ordering::Relaxed);
                    let _ = job.tx.send(Out::Error(format!(
                        "the request ran past the server's timeout of {} s",
                        timeout.as_secs()
                    )));
                } else {
                    let _ = job.tx.send(Out::Done {
                        stop: g.stop,
                        prompt_tokens: g.stats.prompt_tokens,
                        completion_tokens: g.stats.generated_tokens,
                    });
                }
            }
            Err(e) => {
                metrics.errors.fetch_add(1, Ordering::Relaxed);
                let _ = job.tx.send(Out::Error(e.to_string()));
            }
        }
        done();
    }
}

pub fn serve(a: ServeArgs) -> Result<()> {
    let path = a.model.resolve()?;
    let loaded = a.model.load()?;
    let model_id = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "model".into());
    let (template, template_error) = match &a.template {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            (Some(ChatTemplate::new(text, "", "")?), None)
        }
        None => match ChatTemplate::for_source(&zoo::ModelSource::open(&path)?) {
            Ok(t) => (Some(t), None),
            Err(e) => (None, Some(crate::hint::cli_error(e).to_string())),
        },
    };
    let metrics = Arc::new(Metrics {
        requests: AtomicU64::new(0),
        rejected: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        prompt_tokens: AtomicU64::new(0),
        generated_tokens: AtomicU64::new(0),
        ttft: Histogram::new(LATENCY_BUCKETS),
        itl: Histogram::new(LATENCY_BUCKETS),
    });
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel(a.queue_depth + 1);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let state = Arc::new(AppState {
        model_id,
        context_length: loaded.model.context_length(),
        jobs: jobs_tx,
        in_flight: in_flight.clone(),
        queue_depth: a.queue_depth,
        tokenizer: loaded.tokenizer.clone(),
        template,
        template_error,
        metrics: metrics.clone(),
    });
    let timeout = Duration::from_secs(a.timeout_s);
    std::thread::Builder::new()
        .name("zoo-model".into())
        .spawn(move || worker(loaded, jobs_rx, in_flight, metrics, timeout))?;

    let app = Router::new()
        .route("/v1/completions", post(|State(s): State<Arc<AppState>>, body: Bytes| handle(s, body, Kind::Completion)))
        .route("/v1/chat/completions", post(|State(s): State<Arc<AppState>>, body: Bytes| handle(s, body, Kind::Chat)))
        .route(
            "/v1/models",
            get(|State(s): State<Arc<AppState>>| async move {
                Json(json!({"object": "list", "data": [{"id": s.model_id, "object": "model", "created": 0, "owned_by": "zoo"}]}))
            }),
        )
        .route("/health", get(|| async { Json(json!({"status": "ok"})) }))
        .route("/metrics", get(metrics_text))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "invalid_request_error", "no such endpoint", None) })
        .with_state(state);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let addr: SocketAddr = format!("{}:{}", a.host, a.port)
            .parse()
            .context("--host/--port")?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding {addr}"))?;
        let local = listener.local_addr()?;
        println!("zoo: listening on http://{local}");
        use std::io::Write;
        std::io::stdout().flush()?;
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        eprintln!("zoo: stopped");
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    eprintln!("zoo: shutting down; in-flight responses finish");
}
