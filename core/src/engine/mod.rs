//! The engine: many requests at once on one model, with continuous batching, KV memory
//! in blocks within a budget, a prefix cache, and results that are the same bits
//! whatever the batch.
//!
//! [`Engine::start`] moves a loaded model to its own thread. [`Engine::submit`] (from
//! any thread or task) queues a [`Request`] and returns its [`Events`]: a blocking
//! iterator and an async [`futures::Stream`] of [`Event`]s (text pieces with their
//! token ids and, if asked, log-probabilities; then the reason it ended and its
//! timings). Dropping the `Events` cancels the request at the next step.
//!
//! Every step runs one batched forward ([`crate::BatchedLM::forward_batch`]) over all
//! running sequences: one token for each decoding sequence, then prompt chunks up to
//! the step's token budget (a long prompt does not stall the decoders). Sequences join
//! and leave between steps.
//!
//! **KV memory** is a store of blocks sized by [`KvBudget`] (by default a quarter of
//! the machine's available memory, at most what `max_sequences` full contexts take). A
//! waiting request is admitted, first come first served, when a sequence slot and the
//! blocks of its prompt are free. When a running sequence needs a block and none is
//! free, the most recently admitted other sequence is preempted: its blocks are
//! released and it goes back to the front of the queue, to be recomputed (bit for bit
//! the same) when there is room. A request that could never fit is refused at submit;
//! one preempted after its tokens outgrew the whole store ends (`ContextFull`). An error
//! of one sequence's own (its sampling, its detokenizing) ends only that sequence; an
//! error of the step's forward ends every sequence of the step.
//!
//! **Prefix cache**: a prompt whose leading full blocks were computed by an earlier
//! request takes those blocks instead of computing them; cached blocks no sequence holds
//! are evicted least-recently-used. [`EngineStats`] counts hits.
//!
//! A model whose entry does not batch ([`crate::CausalLM::batched`] is `None`) runs one
//! sequence at a time through [`crate::CausalLM::forward`], with the same API.

mod blocks;
mod run;
mod sequence;

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::channel::mpsc as fmpsc;
use futures::StreamExt;

use crate::generate::StopReason;
use crate::{CausalLM, Error, Result, SamplingParams, Tokenizer};

pub use blocks::{block_hashes, BlockManager};

/// How much memory the KV block store may take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KvBudget {
    /// A quarter of the available memory, at most `max_sequences` full contexts.
    Auto,
    /// At most this many bytes.
    Bytes(usize),
    /// Room for this many positions (all sequences together).
    Tokens(usize),
}

/// How the engine schedules.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Sequences running at once (prefilling or decoding).
    pub max_sequences: usize,
    /// Tokens one step may run: one per decoding sequence, the rest for prompt chunks.
    pub step_tokens: usize,
    /// Positions per KV block.
    pub block_size: usize,
    pub kv_budget: KvBudget,
    /// Requests that may wait; past this [`Engine::submit`] refuses.
    pub max_waiting: usize,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            max_sequences: 16,
            step_tokens: 512,
            block_size: 16,
            kv_budget: KvBudget::Auto,
            max_waiting: 256,
        }
    }
}

/// One generation to run.
#[derive(Debug, Clone)]
pub struct Request {
    pub prompt_ids: Vec<u32>,
    pub sampling: SamplingParams,
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// Text that ends generation (not included in the output).
    pub stop: Vec<String>,
    /// `Some(n)`: report each token's log-probability and the `n` most likely
    /// alternatives.
    pub logprobs: Option<usize>,
    /// Leave control tokens out of the text.
    pub skip_special: bool,
    /// Go on past an end-of-sequence token (benchmarks, as llama.cpp's `ignore_eos`).
    pub ignore_eos: bool,
}

impl Request {
    pub fn new(prompt_ids: Vec<u32>, max_tokens: usize) -> Self {
        Self {
            prompt_ids,
            sampling: SamplingParams::greedy(),
            max_tokens,
            stop: Vec::new(),
            logprobs: None,
            skip_special: true,
            ignore_eos: false,
        }
    }
}

/// A token's log-probability and the most likely alternatives at its position.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    pub logprob: f32,
    pub top: Vec<(u32, f32)>,
}

/// How a request ended, with its counts and timings.
#[derive(Debug, Clone)]
pub struct Finished {
    pub reason: StopReason,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens taken from the prefix cache instead of computed.
    pub cached_tokens: usize,
    /// From submit to the first token.
    pub time_to_first_token: Duration,
    /// From submit to the end.
    pub total_time: Duration,
}

/// What a request's [`Events`] yield.
#[derive(Debug)]
pub enum Event {
    /// A generated token and the text it completes (possibly empty: part of a
    /// character, or held back while it may begin a stop string).
    Token {
        id: u32,
        text: String,
        logprob: Option<TokenLogprob>,
    },
    /// Text released at the end (held back for a stop string that did not come).
    Text(String),
    /// The last event of a request that ran.
    Done(Finished),
    /// The last event of a request that failed.
    Error(Error),
}

/// A request's events: a [`futures::Stream`], and with `for event in events` (or
/// [`Events::blocking`]) a blocking iterator. Dropping it cancels the request.
pub struct Events {
    rx: fmpsc::UnboundedReceiver<Event>,
}

impl Events {
    /// The events as a blocking iterator, for code without an async runtime.
    pub fn blocking(self) -> BlockingEvents {
        BlockingEvents(self)
    }
}

impl IntoIterator for Events {
    type Item = Event;
    type IntoIter = BlockingEvents;
    fn into_iter(self) -> BlockingEvents {
        self.blocking()
    }
}

/// [`Events`] waited for one at a time on the calling thread.
pub struct BlockingEvents(Events);

impl Iterator for BlockingEvents {
    type Item = Event;
    fn next(&mut self) -> Option<Event> {
        futures::executor::block_on(self.0.rx.next())
    }
}

impl futures::Stream for Events {
    type Item = Event;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.rx.poll_next_unpin(cx)
    }
}

/// Counters of the engine, read at any time.
#[derive(Debug, Default)]
pub struct EngineStats {
    pub running: AtomicUsize,
    pub waiting: AtomicUsize,
    /// Sequences in the last step.
    pub batch_sequences: AtomicUsize,
    /// Tokens in the last step.
    pub batch_tokens: AtomicUsize,
    pub kv_blocks_total: AtomicUsize,
    pub kv_blocks_used: AtomicUsize,
    /// Bytes of the KV block store, allocated once at start (0 for a model that does
    /// not batch: its own cache grows with the one sequence it runs).
    pub kv_cache_bytes: AtomicUsize,
    /// Prompt tokens looked up in / found in the prefix cache.
    pub prefix_lookup_tokens: AtomicUsize,
    pub prefix_hit_tokens: AtomicUsize,
    pub preemptions: AtomicUsize,
    pub steps: AtomicUsize,
    pub cancelled: AtomicUsize,
}

impl EngineStats {
    pub fn get(a: &AtomicUsize) -> usize {
        a.load(Ordering::Relaxed)
    }
}

/// What a request is submitted as, inside the engine.
struct Submitted {
    request: Request,
    tx: fmpsc::UnboundedSender<Event>,
    at: std::time::Instant,
}

/// The handle of a running engine; cloneable, shareable between threads.
#[derive(Clone)]
pub struct Engine {
    tx: mpsc::Sender<Submitted>,
    stats: Arc<EngineStats>,
    context_length: usize,
    batching: bool,
    max_blocks_per_request: usize,
    block_size: usize,
    max_waiting: usize,
}

impl Engine {
    /// Starts the engine thread (`zoo-engine`), which owns `model` from then on.
    pub fn start<M: CausalLM + 'static>(
        mut model: M,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
    ) -> Result<Self> {
        if config.max_sequences == 0 || config.step_tokens == 0 || config.block_size == 0 {
            return Err(Error::Engine(format!(
                "max_sequences, step_tokens and block_size must be at least 1; got {}, {}, {}",
                config.max_sequences, config.step_tokens, config.block_size
            )));
        }
        let stats = Arc::new(EngineStats::default());
        let context_length = model.context_length();
        let blocks = match model.batched() {
            Some(b) => {
                let n = run::store_blocks(b.kv_shape(), &config, context_length);
                if n == 0 {
                    return Err(Error::Engine(format!(
                        "the KV budget {:?} holds no block of {} positions ({} bytes per position); raise it",
                        config.kv_budget,
                        config.block_size,
                        b.kv_shape().bytes_per_token()
                    )));
                }
                b.allocate_kv(n, config.block_size)?;
                stats.kv_cache_bytes.store(
                    n * config.block_size * b.kv_shape().bytes_per_token(),
                    Ordering::Relaxed,
                );
                Some(n)
            }
            None => None,
        };
        stats
            .kv_blocks_total
            .store(blocks.unwrap_or(0), Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let engine = Self {
            tx,
            stats: stats.clone(),
            context_length,
            batching: blocks.is_some(),
            max_blocks_per_request: blocks.unwrap_or(usize::MAX),
            block_size: config.block_size,
            max_waiting: config.max_waiting,
        };
        let runner = run::Runner::new(model, tokenizer, config, blocks, stats);
        std::thread::Builder::new()
            .name("zoo-engine".into())
            .spawn(move || runner.run(rx))
            .map_err(|e| Error::Engine(format!("cannot start its thread: {e}")))?;
        Ok(engine)
    }

    /// Queues a request. Refused at once (an error, nothing queued) when its prompt is
    /// empty, it cannot fit the context or the KV store, its sampling parameters are
    /// out of range, or the queue is full.
    pub fn submit(&self, request: Request) -> Result<Events> {
        request.sampling.validate()?;
        if request.max_tokens == 0 {
            return Err(Error::Sampling("max_tokens must be at least 1".into()));
        }
        let n = request.prompt_ids.len();
        if n == 0 {
            return Err(Error::EmptyPrompt);
        }
        if n >= self.context_length {
            return Err(Error::PromptTooLong {
                prompt_tokens: n,
                context_length: self.context_length,
            });
        }
        let need = n.div_ceil(self.block_size) + 1;
        if need > self.max_blocks_per_request {
            return Err(Error::KvBudget {
                prompt_tokens: n,
                needed: need,
                blocks: self.max_blocks_per_request,
            });
        }
        // Counted in the same atomic step as the check, so that submitters racing for
        // the last places cannot queue past the limit.
        self.stats
            .waiting
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
                (w < self.max_waiting).then_some(w + 1)
            })
            .map_err(|_| Error::EngineBusy {
                waiting: self.max_waiting,
            })?;
        let (tx, rx) = fmpsc::unbounded();
        self.tx
            .send(Submitted {
                request,
                tx,
                at: std::time::Instant::now(),
            })
            .map_err(|_| {
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                Error::Engine("the engine has stopped".into())
            })?;
        Ok(Events { rx })
    }

    pub fn stats(&self) -> &EngineStats {
        &self.stats
    }

    /// Whether the model runs several sequences per step.
    pub fn batching(&self) -> bool {
        self.batching
    }

    pub fn context_length(&self) -> usize {
        self.context_length
    }
}
