//! The model worker and the bounded queue in front of it.
//!
//! One thread owns the model and runs one generation at a time (`generate` resets the
//! KV cache for each request). [`Queue::submit`] admits a request while fewer than
//! `depth + 1` are waiting or running (the one running included) and refuses it with
//! 429 past that. The worker streams pieces back on a channel per request: a closed
//! channel means the client went away, and the generation stops at its next token. A
//! request that runs past the timeout, counted from admission, ends with an error.

use std::ops::ControlFlow;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::mpsc;
use zoo::{CausalLM, GenerateOptions, StopReason};

use super::error::ApiError;
use super::metrics::Metrics;

/// What the worker sends back for one request: pieces of text, then `Done` or
/// `Error`.
pub enum Out {
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

/// The way into the model worker thread.
pub struct Queue {
    jobs: SyncSender<Job>,
    /// Requests admitted and not yet finished (waiting or running).
    in_flight: Arc<AtomicUsize>,
    depth: usize,
    context_length: usize,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Starts the worker thread (`zoo-model`), which owns `loaded` from then on.
    pub fn start(
        loaded: zoo::Loaded,
        depth: usize,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<Self> {
        let (jobs, rx) = sync_channel(depth + 1);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let context_length = loaded.model.context_length();
        let worker = Worker {
            loaded,
            in_flight: in_flight.clone(),
            metrics: metrics.clone(),
            timeout,
        };
        std::thread::Builder::new()
            .name("zoo-model".into())
            .spawn(move || worker.run(rx))?;
        Ok(Self {
            jobs,
            in_flight,
            depth,
            context_length,
            metrics,
        })
    }

    /// Requests admitted and not yet finished (waiting or running).
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Admits a generation and returns the receiver of its output: 400 if the prompt
    /// and `max_tokens` do not fit the context, 429 if the queue is full, 503 if the
    /// worker has stopped.
    pub fn submit(
        &self,
        prompt_ids: Vec<u32>,
        options: GenerateOptions,
    ) -> Result<mpsc::UnboundedReceiver<Out>, ApiError> {
        self.metrics.request();
        if prompt_ids.len() + options.max_tokens > self.context_length {
            return Err(ApiError::bad_request(
                format!(
                    "the prompt has {} tokens; with max_tokens {} that exceeds the model's context of {} tokens",
                    prompt_ids.len(),
                    options.max_tokens,
                    self.context_length
                ),
                Some("max_tokens"),
            ));
        }
        let admitted = self
            .in_flight
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.depth + 1).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            self.metrics.rejected();
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limit_error",
                format!(
                    "the server's queue is full ({} waiting); retry later",
                    self.depth
                ),
            ));
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let job = Job {
            prompt_ids,
            options,
            tx,
            enqueued: Instant::now(),
        };
        if self.jobs.send(job).is_err() {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "the model worker has stopped",
            ));
        }
        Ok(rx)
    }
}

/// The model thread's side.
struct Worker {
    loaded: zoo::Loaded,
    in_flight: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl Worker {
    /// Runs jobs one at a time until every [`Queue`] is gone; a job whose client
    /// left while it waited is skipped.
    fn run(mut self, jobs: Receiver<Job>) {
        while let Ok(job) = jobs.recv() {
            if !job.tx.is_closed() {
                self.generate(&job);
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }

    fn generate(&mut self, job: &Job) {
        let metrics = &self.metrics;
        let deadline = job.enqueued + self.timeout;
        let mut last = None::<Instant>;
        let mut timed_out = false;
        let result = zoo::generate(
            &mut self.loaded.model,
            &self.loaded.tokenizer,
            &job.prompt_ids,
            &job.options,
            |piece| {
                let now = Instant::now();
                metrics.token(last.is_none(), now - last.unwrap_or(job.enqueued));
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
        let out = match result {
            Ok(g) => {
                metrics.generation(g.stats.prompt_tokens, g.stats.generated_tokens);
                if timed_out {
                    metrics.error();
                    Out::Error(format!(
                        "the request ran past the server's timeout of {} s",
                        self.timeout.as_secs()
                    ))
                } else {
                    Out::Done {
                        stop: g.stop,
                        prompt_tokens: g.stats.prompt_tokens,
                        completion_tokens: g.stats.generated_tokens,
                    }
                }
            }
            Err(e) => {
                metrics.error();
                Out::Error(e.to_string())
            }
        };
        let _ = job.tx.send(out);
    }
}
