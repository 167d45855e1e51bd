//! The way from a request to the engine and back: [`Queue::submit`] queues one engine
//! request per choice (each prompt times `n`, the `j`-th choice of a prompt seeded
//! `seed + j`) and returns one receiver of their merged output ([`Out`]), fed by a
//! task per choice. The engine ([`zoo::Engine`]) runs them with the other requests in
//! continuous batches; a receiver dropped (the client went away) drops the choices'
//! events at once, queued or running, which cancels them at the engine's next step. A
//! choice that runs past the timeout, counted from submission, ends with an error.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use futures::StreamExt;
use tokio::sync::mpsc;
use zoo::{Engine, EngineConfig, Event, GenerateOptions, Request, StopReason};

use super::error::ApiError;
use super::metrics::Metrics;

/// A generated token's log-probability and the most likely alternatives, as text.
#[derive(Debug, Clone)]
pub struct TokenLp {
    /// The text the token added to the answer (what the stream sent for it), so that
    /// the tokens join to the text: a character split over several tokens comes with
    /// the last of them (decoded alone, each part would be U+FFFD).
    pub token: String,
    pub logprob: f32,
    pub top: Vec<(String, f32)>,
}

/// What comes back for one request: pieces of each choice's text, each choice's end,
/// or an error that ends the whole request.
pub enum Out {
    Piece {
        index: usize,
        text: String,
        logprobs: Vec<TokenLp>,
    },
    Done {
        index: usize,
        stop: StopReason,
        prompt_tokens: usize,
        completion_tokens: usize,
    },
    Error(String),
}

/// The engine and what submitting needs.
pub struct Queue {
    engine: Engine,
    tokenizer: Arc<zoo::Tokenizer>,
    context_length: usize,
    /// The most choices the engine queues at once (`--queue-depth`).
    max_waiting: usize,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl Queue {
    /// Starts the engine thread, which owns `loaded.model` from then on.
    pub fn start(
        loaded: zoo::Loaded,
        config: EngineConfig,
        timeout: Duration,
        metrics: Arc<Metrics>,
    ) -> zoo::Result<Self> {
        let tokenizer = Arc::new(loaded.tokenizer);
        let max_waiting = config.max_waiting;
        let engine = Engine::start(loaded.model, tokenizer.clone(), config)?;
        Ok(Self {
            context_length: engine.context_length(),
            max_waiting,
            engine,
            tokenizer,
            timeout,
            metrics,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Sequences waiting or running.
    pub fn in_flight(&self) -> usize {
        let s = self.engine.stats();
        zoo::EngineStats::get(&s.running) + zoo::EngineStats::get(&s.waiting)
    }

    /// Queues `n` choices per prompt: 400 if a prompt and `max_tokens` do not fit the
    /// context (`max_tokens` not sent: if the prompt leaves no room, the default being
    /// shortened to the room left) or the KV budget, or if the choices outnumber what
    /// the queue ever holds; 429 if the engine's queue is full.
    pub fn submit(
        &self,
        prompts: Vec<Vec<u32>>,
        options: &GenerateOptions,
        n: usize,
        logprobs: Option<usize>,
        (ignore_eos, max_tokens_sent): (bool, bool),
    ) -> Result<mpsc::UnboundedReceiver<Out>, ApiError> {
        self.metrics.request();
        let choices = prompts.len() * n;
        if choices > self.max_waiting {
            // Each choice waits in the queue until admitted: past its depth, a retry
            // would be refused as surely as this request.
            return Err(ApiError::bad_request(
                format!(
                    "{choices} choices ({} prompts x n = {n}) are more than the {} the server \
                     queues at once (--queue-depth): lower `n` or send fewer prompts",
                    prompts.len(),
                    self.max_waiting
                ),
                Some("n"),
            ));
        }
        let mut budgets = Vec::with_capacity(prompts.len());
        for p in &prompts {
            let room = self.context_length.saturating_sub(p.len());
            if room == 0 {
                return Err(ApiError::bad_request(
                    format!(
                        "the prompt has {} tokens, which fills the model's context of {} tokens: shorten it",
                        p.len(),
                        self.context_length
                    ),
                    None,
                ));
            }
            if max_tokens_sent && options.max_tokens > room {
                return Err(ApiError::bad_request(
                    format!(
                        "the prompt has {} tokens; with max_tokens {} that exceeds the model's context of {} tokens",
                        p.len(),
                        options.max_tokens,
                        self.context_length
                    ),
                    Some("max_tokens"),
                ));
            }
            budgets.push(options.max_tokens.min(room));
        }
        let mut choices = Vec::new();
        for (i, (prompt, max_tokens)) in prompts.into_iter().zip(budgets).enumerate() {
            for j in 0..n {
                let mut sampling = options.sampling.clone();
                sampling.seed = sampling.seed.wrapping_add(j as u64);
                let request = Request {
                    prompt_ids: prompt.clone(),
                    sampling,
                    max_tokens,
                    stop: options.stop.clone(),
                    logprobs,
                    skip_special: options.skip_special,
                    ignore_eos,
                };
                // An error drops the choices queued so far, which cancels them.
                let events = self.engine.submit(request).map_err(|e| self.refusal(e))?;
                choices.push((i * n + j, events));
            }
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        for (index, events) in choices {
            let tx = tx.clone();
            let metrics = self.metrics.clone();
            let tokenizer = self.tokenizer.clone();
            let deadline = tokio::time::Instant::from_std(start + self.timeout);
            let timeout = self.timeout;
            tokio::spawn(async move {
                let mut events = events;
                let mut last = start;
                let mut first = true;
                loop {
                    let next = tokio::select! {
                        biased;
                        // The client went away (its receiver dropped): dropping `events`
                        // cancels the choice, also one still waiting in the queue.
                        () = tx.closed() => return,
                        next = tokio::time::timeout_at(deadline, events.next()) => next,
                    };
                    let event = match next {
                        Ok(Some(e)) => e,
                        Ok(None) => {
                            let _ = tx.send(Out::Error("the engine stopped".into()));
                            return;
                        }
                        Err(_) => {
                            metrics.error();
                            let _ = tx.send(Out::Error(format!(
                                "the request ran past the server's timeout of {} s",
                                timeout.as_secs()
                            )));
                            return;
                        }
                    };
                    let out = match event {
                        Event::Token { text, logprob, .. } => {
                            let now = Instant::now();
                            metrics.token(first, now - last);
                            (first, last) = (false, now);
                            let logprobs = logprob
                                .map(|lp| {
                                    let piece =
                                        |t: u32| tokenizer.decode(&[t], false).unwrap_or_default();
                                    vec![TokenLp {
                                        token: text.clone(),
                                        logprob: lp.logprob,
                                        top: lp.top.iter().map(|&(t, l)| (piece(t), l)).collect(),
                                    }]
                                })
                                .unwrap_or_default();
                            if text.is_empty() && logprobs.is_empty() {
                                continue;
                            }
                            Out::Piece {
                                index,
                                text,
                                logprobs,
                            }
                        }
                        Event::Text(text) => Out::Piece {
                            index,
                            text,
                            logprobs: vec![],
                        },
                        Event::Done(f) => {
                            metrics.generation(f.prompt_tokens, f.completion_tokens);
                            let _ = tx.send(Out::Done {
                                index,
                                stop: f.reason,
                                prompt_tokens: f.prompt_tokens,
                                completion_tokens: f.completion_tokens,
                            });
                            return;
                        }
                        Event::Error(e) => {
                            metrics.error();
                            let _ = tx.send(Out::Error(e.to_string()));
                            return;
                        }
                    };
                    // The client went away: dropping `events` cancels the choice.
                    if tx.send(out).is_err() {
                        return;
                    }
                }
            });
        }
        Ok(rx)
    }

    fn refusal(&self, e: zoo::Error) -> ApiError {
        match e {
            zoo::Error::EngineBusy { .. } => {
                self.metrics.rejected();
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limit_error",
                    e.to_string(),
                )
            }
            zoo::Error::Engine(_) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                e.to_string(),
            ),
            zoo::Error::Sampling(_) => ApiError::bad_request(e.to_string(), None),
            other => ApiError::bad_request(other.to_string(), Some("prompt")),
        }
    }
}
