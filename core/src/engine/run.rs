//! The engine thread: admission, the plan of each step, the batched forward, and what
//! follows from its logits (see the module documentation of [`super`]).

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use super::blocks::{block_hashes, BlockManager};
use super::sequence::{Seq, Shared};
use super::{EngineConfig, EngineStats, KvBudget, Submitted};
use crate::generate::StopReason;
use crate::{CausalLM, KvShape, Logits, Result, SeqChunk, Tensor, Tokenizer};

/// Blocks of the store for `config`'s budget, never more than `max_sequences` full
/// contexts take.
pub(super) fn store_blocks(shape: KvShape, config: &EngineConfig, context: usize) -> usize {
    let per_token = shape.bytes_per_token().max(1);
    let bytes = match config.kv_budget {
        KvBudget::Bytes(b) => b,
        KvBudget::Tokens(t) => t.saturating_mul(per_token),
        KvBudget::Auto => available_memory() / 4,
    };
    let most = (config.max_sequences * context).div_ceil(config.block_size);
    (bytes / (per_token * config.block_size)).min(most)
}

/// `MemAvailable` of /proc/meminfo; 4 GiB where it cannot be read.
fn available_memory() -> usize {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            let line = m.lines().find(|l| l.starts_with("MemAvailable:"))?;
            let kib: usize = line.split_whitespace().nth(1)?.parse().ok()?;
            Some(kib * 1024)
        })
        .unwrap_or(4 << 30)
}

/// How a sequence ended in a step.
enum Ended {
    Stop(StopReason),
    Failed(crate::Error),
}

pub(super) struct Runner<M> {
    model: M,
    tokenizer: Arc<Tokenizer>,
    config: EngineConfig,
    blocks: Option<BlockManager>,
    stats: Arc<EngineStats>,
    waiting: VecDeque<Seq>,
    running: Vec<Seq>,
    eos: Vec<u32>,
    context_length: usize,
}

impl<M: CausalLM> Runner<M> {
    pub fn new(
        model: M,
        tokenizer: Arc<Tokenizer>,
        config: EngineConfig,
        blocks: Option<usize>,
        stats: Arc<EngineStats>,
    ) -> Self {
        let eos = model.eos_token_ids().to_vec();
        let context_length = model.context_length();
        let blocks = blocks.map(|n| BlockManager::new(n, config.block_size));
        Self {
            model,
            tokenizer,
            config,
            blocks,
            stats,
            waiting: VecDeque::new(),
            running: Vec::new(),
            eos,
            context_length,
        }
    }

    pub fn run(mut self, rx: Receiver<Submitted>) {
        loop {
            if self.running.is_empty() && self.waiting.is_empty() {
                // The gauges say "idle" before the thread sleeps: the last sequences
                // may have just been cancelled, with no step after them to publish it.
                self.publish_gauges();
                match rx.recv() {
                    Ok(s) => self.enqueue(s),
                    Err(_) => return,
                }
            }
            while let Ok(s) = rx.try_recv() {
                self.enqueue(s);
            }
            self.drop_cancelled();
            self.admit();
            if self.running.is_empty() {
                continue;
            }
            let result = if self.blocks.is_some() {
                self.step_batched()
            } else {
                self.step_single()
            };
            if let Err(e) = result {
                tracing::error!(error = %e, "engine step failed; its sequences end with the error");
                for s in std::mem::take(&mut self.running) {
                    self.fail(s, crate::Error::Engine(format!("a step failed: {e}")));
                }
                if self.blocks.is_none() {
                    let _ = self.model.reset_cache();
                }
            }
            self.publish();
        }
    }

    fn enqueue(&mut self, s: Submitted) {
        let tx = s.tx.clone();
        match Seq::new(s) {
            Ok(seq) => self.waiting.push_back(seq),
            Err(e) => {
                // `submit` validated the request, so this is not expected; if it
                // happens, the request still ends with its error, not in silence.
                self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.unbounded_send(super::Event::Error(e));
            }
        }
    }

    fn drop_cancelled(&mut self) {
        let before = self.waiting.len();
        self.waiting.retain(|s| !s.cancelled());
        let gone = before - self.waiting.len();
        self.stats.waiting.fetch_sub(gone, Ordering::Relaxed);
        let mut i = 0;
        while i < self.running.len() {
            if self.running[i].cancelled() {
                let s = self.running.remove(i);
                self.end(s, StopReason::Cancelled);
            } else {
                i += 1;
            }
        }
        self.stats.cancelled.fetch_add(gone, Ordering::Relaxed);
    }

    /// First come, first served: the front request runs when a slot and its prompt's
    /// blocks (after the prefix cache) are free.
    fn admit(&mut self) {
        let slots = if self.blocks.is_some() {
            self.config.max_sequences
        } else {
            1
        };
        while self.running.len() < slots {
            let Some(front) = self.waiting.front() else {
                break;
            };
            if let Some(bm) = self.blocks.as_mut() {
                let bs = bm.block_size;
                // Reuse whole blocks, leaving at least one token to compute for logits.
                let usable = (front.tokens.len() - 1) / bs;
                let hashes = block_hashes(&front.tokens[..usable * bs], bs);
                let (hit, idle) = bm.peek(&hashes);
                let need = bm.blocks_for(front.tokens.len()) - hit;
                if bm.available() - idle < need {
                    if self.running.is_empty() {
                        // Nothing holds a block, and it still does not fit: it never
                        // will (a preempted sequence that grew past the whole store).
                        let s = self.waiting.pop_front().expect("front exists");
                        self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                        self.end(s, StopReason::ContextFull);
                        continue;
                    }
                    break;
                }
                let mut s = self.waiting.pop_front().expect("front exists");
                s.blocks = bm.take_prefix(&hashes[..hit]);
                s.computed = hit * bs;
                s.named = hit;
                s.last_name = if hit > 0 { hashes[hit - 1] } else { 0 };
                if !s.admitted {
                    // A preempted sequence coming back recomputes its own blocks: only
                    // a first admission counts its prompt against the cache.
                    s.admitted = true;
                    s.cached_tokens = s.computed;
                    self.stats
                        .prefix_lookup_tokens
                        .fetch_add(s.tokens.len(), Ordering::Relaxed);
                    self.stats
                        .prefix_hit_tokens
                        .fetch_add(s.computed, Ordering::Relaxed);
                }
                self.running.push(s);
            } else {
                let s = self.waiting.pop_front().expect("front exists");
                self.running.push(s);
            }
            self.stats.waiting.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Which sequences run how many tokens this step: one for each decoding sequence,
    /// then prompt chunks in admission order while the token budget lasts.
    fn plan(&self) -> Vec<(usize, usize)> {
        let mut budget = self.config.step_tokens;
        let mut plan = Vec::new();
        for (i, s) in self.running.iter().enumerate() {
            if s.pending() == 1 && budget > 0 {
                plan.push((i, 1));
                budget -= 1;
            }
        }
        for (i, s) in self.running.iter().enumerate() {
            if s.pending() > 1 && budget > 0 {
                let n = s.pending().min(budget);
                plan.push((i, n));
                budget -= n;
            }
        }
        plan
    }

    /// Blocks the plan needs beyond what its sequences hold.
    fn blocks_needed(&self, plan: &[(usize, usize)]) -> usize {
        let bm = self.blocks.as_ref().expect("batched");
        plan.iter()
            .map(|&(i, n)| {
                let s = &self.running[i];
                bm.blocks_for(s.computed + n).saturating_sub(s.blocks.len())
            })
            .sum()
    }

    fn step_batched(&mut self) -> Result<()> {
        // Preempt the most recently admitted sequences until the plan's blocks fit.
        let mut plan = self.plan();
        while self.blocks_needed(&plan) > self.blocks.as_ref().expect("batched").available() {
            let mut s = self.running.pop().expect("a plan needs a sequence");
            if self.running.is_empty() {
                // Alone, it has outgrown the whole store.
                self.end(s, StopReason::ContextFull);
                return Ok(());
            }
            self.stats.preemptions.fetch_add(1, Ordering::Relaxed);
            let bm = self.blocks.as_mut().expect("batched");
            if bm.blocks_for(s.tokens.len()) > bm.total() {
                // Its tokens alone outgrow the whole store: it could never come back.
                self.end(s, StopReason::ContextFull);
            } else {
                let freed = s.evicted();
                bm.release(&freed);
                self.waiting.push_front(s);
                self.stats.waiting.fetch_add(1, Ordering::Relaxed);
            }
            plan = self.plan();
        }
        let bm = self.blocks.as_mut().expect("batched");
        for &(i, n) in &plan {
            let s = &mut self.running[i];
            while s.blocks.len() < bm.blocks_for(s.computed + n) {
                s.blocks.push(bm.allocate().expect("counted above"));
            }
        }
        let chunks: Vec<SeqChunk> = plan
            .iter()
            .map(|&(i, n)| {
                let s = &self.running[i];
                SeqChunk {
                    tokens: &s.tokens[s.computed..s.computed + n],
                    offset: s.computed,
                    blocks: &s.blocks,
                    logits: if s.computed + n == s.tokens.len() {
                        Logits::Last
                    } else {
                        Logits::None
                    },
                }
            })
            .collect();
        self.stats
            .batch_sequences
            .store(plan.len(), Ordering::Relaxed);
        self.stats
            .batch_tokens
            .store(plan.iter().map(|p| p.1).sum(), Ordering::Relaxed);
        let batched = self.model.batched().expect("a batching model");
        let logits = batched.forward_batch(&chunks)?;
        drop(chunks);
        let mut ended = Vec::new();
        for (&(i, n), rows) in plan.iter().zip(logits) {
            let s = &mut self.running[i];
            s.computed += n;
            let bm = self.blocks.as_mut().expect("batched");
            for (block, name) in s.newly_full(bm.block_size) {
                bm.register(block, name);
            }
            if rows.dim(0)? == 1 {
                if let Some(end) = self.sample(i, &rows) {
                    ended.push((i, end));
                }
            }
        }
        self.remove_ended(ended);
        Ok(())
    }

    fn step_single(&mut self) -> Result<()> {
        let s = &self.running[0];
        if s.computed == 0 {
            self.model.reset_cache()?;
        }
        let input = Tensor::new(&s.tokens[s.computed..], self.model.device())?.unsqueeze(0)?;
        let offset = s.computed;
        self.stats.batch_sequences.store(1, Ordering::Relaxed);
        self.stats
            .batch_tokens
            .store(s.pending(), Ordering::Relaxed);
        let logits = self.model.forward(&input, offset)?;
        self.running[0].computed = self.running[0].tokens.len();
        if let Some(end) = self.sample(0, &logits) {
            self.remove_ended(vec![(0, end)]);
        }
        Ok(())
    }

    /// Samples sequence `i`'s next token from its one row of logits: how it ended, if
    /// it did. An error here (its sampler's, its detokenizer's) is the sequence's own
    /// and ends only it; the others of the step go on.
    fn sample(&mut self, i: usize, rows: &Tensor) -> Option<Ended> {
        let shared = Shared {
            tokenizer: &self.tokenizer,
            eos: &self.eos,
            context_length: self.context_length,
        };
        let sampled = rows
            .flatten_all()
            .and_then(|r| r.to_vec1::<f32>())
            .map_err(crate::Error::from)
            .and_then(|row| self.running[i].on_logits(&row, &shared));
        match sampled {
            Ok(reason) => reason.map(Ended::Stop),
            Err(e) => Some(Ended::Failed(e)),
        }
    }

    fn remove_ended(&mut self, mut ended: Vec<(usize, Ended)>) {
        ended.sort_by_key(|e| std::cmp::Reverse(e.0));
        for (i, end) in ended {
            let s = self.running.remove(i);
            match end {
                Ended::Stop(reason) => self.end(s, reason),
                Ended::Failed(e) => {
                    tracing::warn!(error = %e, "a sequence failed; the others go on");
                    self.fail(s, e);
                }
            }
        }
    }

    /// Ends `s` with an error, its blocks released.
    fn fail(&mut self, s: Seq, e: crate::Error) {
        if let Some(bm) = self.blocks.as_mut() {
            bm.release(&s.blocks);
        }
        s.fail(e);
    }

    fn end(&mut self, s: Seq, reason: StopReason) {
        if let Some(bm) = self.blocks.as_mut() {
            bm.release(&s.blocks);
        }
        if reason == StopReason::Cancelled {
            self.stats.cancelled.fetch_add(1, Ordering::Relaxed);
        }
        s.finish(reason, &self.tokenizer);
    }

    /// After a step: the step counted, the gauges updated.
    fn publish(&self) {
        self.stats.steps.fetch_add(1, Ordering::Relaxed);
        self.publish_gauges();
    }

    fn publish_gauges(&self) {
        let st = &self.stats;
        st.running.store(self.running.len(), Ordering::Relaxed);
        if let Some(bm) = &self.blocks {
            st.kv_blocks_used.store(bm.used(), Ordering::Relaxed);
        }
    }
}
