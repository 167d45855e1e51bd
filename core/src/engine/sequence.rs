//! One request inside the engine: its tokens, where its KV lives, its sampler, its
//! streaming detokenizer and stop strings, and the events it sends.

use std::time::Instant;

use futures::channel::mpsc::UnboundedSender;

use super::blocks::chain_hash;
use super::{Event, Finished, Request, Submitted, TokenLogprob};
use crate::generate::{StopMatcher, StopReason};
use crate::{logprobs, Detokenizer, Result, Sampler, Tokenizer};

pub(super) struct Seq {
    tx: UnboundedSender<Event>,
    request: Request,
    /// The prompt, then every generated token.
    pub tokens: Vec<u32>,
    /// Positions whose keys and values are computed (in `blocks`, or in the model's
    /// own cache for a model that does not batch).
    pub computed: usize,
    pub blocks: Vec<u32>,
    /// Leading full blocks already named in the prefix cache, and the last one's name.
    pub named: usize,
    pub last_name: u64,
    sampler: Sampler,
    stops: StopMatcher,
    detok: Detokenizer,
    generated: usize,
    pub cached_tokens: usize,
    /// Whether it was ever admitted (a preempted sequence comes back admitted).
    pub admitted: bool,
    submitted: Instant,
    first_token: Option<Instant>,
}

/// What the sequences of a model share.
pub(super) struct Shared<'a> {
    pub tokenizer: &'a Tokenizer,
    pub eos: &'a [u32],
    pub context_length: usize,
}

impl Seq {
    pub fn new(s: Submitted) -> Result<Self> {
        let sampler = Sampler::new(s.request.sampling.clone())?;
        Ok(Self {
            tokens: s.request.prompt_ids.clone(),
            computed: 0,
            blocks: Vec::new(),
            named: 0,
            last_name: 0,
            sampler,
            stops: StopMatcher::new(&s.request.stop),
            detok: Detokenizer::after(&s.request.prompt_ids, s.request.skip_special),
            generated: 0,
            cached_tokens: 0,
            admitted: false,
            submitted: s.at,
            first_token: None,
            tx: s.tx,
            request: s.request,
        })
    }

    /// Tokens to run before the next token can be sampled.
    pub fn pending(&self) -> usize {
        self.tokens.len() - self.computed
    }

    /// Whether the client has gone (its `Events` dropped).
    pub fn cancelled(&self) -> bool {
        self.tx.is_closed()
    }

    /// Forgets where its KV was (preempted, to be recomputed); keeps everything else.
    pub fn evicted(&mut self) -> Vec<u32> {
        self.computed = 0;
        self.named = 0;
        self.last_name = 0;
        std::mem::take(&mut self.blocks)
    }

    /// Names every block that `computed` has filled: `(block, name)` to register.
    pub fn newly_full(&mut self, block_size: usize) -> Vec<(u32, u64)> {
        let mut out = Vec::new();
        while (self.named + 1) * block_size <= self.computed {
            let toks = &self.tokens[self.named * block_size..(self.named + 1) * block_size];
            self.last_name = chain_hash(self.last_name, toks);
            out.push((self.blocks[self.named], self.last_name));
            self.named += 1;
        }
        out
    }

    /// Samples the next token from the logits of the last position, sends it, and says
    /// whether the request has ended.
    pub fn on_logits(&mut self, row: &[f32], sh: &Shared) -> Result<Option<StopReason>> {
        let next = self.sampler.sample_row(row, &self.tokens)?;
        self.first_token.get_or_insert_with(Instant::now);
        let logprob = self.request.logprobs.map(|n| {
            let (logprob, top) = logprobs(row, next, n);
            TokenLogprob { logprob, top }
        });
        self.tokens.push(next);
        self.generated += 1;
        if sh.eos.contains(&next) && !self.request.ignore_eos {
            return Ok(Some(StopReason::Eos));
        }
        let (text, stopped) = match self.detok.push(sh.tokenizer, next)? {
            Some(piece) => self.stops.push(&piece),
            None => (String::new(), false),
        };
        let event = Event::Token {
            id: next,
            text,
            logprob,
        };
        if self.tx.unbounded_send(event).is_err() {
            return Ok(Some(StopReason::Cancelled));
        }
        Ok(if stopped {
            Some(StopReason::StopString)
        } else if self.generated >= self.request.max_tokens {
            Some(StopReason::MaxTokens)
        } else if self.tokens.len() >= sh.context_length {
            Some(StopReason::ContextFull)
        } else {
            None
        })
    }

    /// Sends what is left of the text and the end of the request.
    pub fn finish(mut self, reason: StopReason, tokenizer: &Tokenizer) {
        if !matches!(reason, StopReason::StopString | StopReason::Cancelled) {
            let tail = self
                .detok
                .finish(tokenizer)
                .ok()
                .flatten()
                .unwrap_or_default();
            let mut rest = self.stops.push(&tail).0;
            rest.push_str(&self.stops.finish());
            if !rest.is_empty() {
                let _ = self.tx.unbounded_send(Event::Text(rest));
            }
        }
        let now = Instant::now();
        let _ = self.tx.unbounded_send(Event::Done(Finished {
            reason,
            prompt_tokens: self.request.prompt_ids.len(),
            completion_tokens: self.generated,
            cached_tokens: self.cached_tokens,
            time_to_first_token: self.first_token.unwrap_or(now) - self.submitted,
            total_time: now - self.submitted,
        }));
    }

    /// Ends the request with an error.
    pub fn fail(self, error: crate::Error) {
        let _ = self.tx.unbounded_send(Event::Error(error));
    }
}
