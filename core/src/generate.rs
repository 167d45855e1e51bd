//! Streaming generation: prompt, then one token at a time, each piece of text handed
//! to the caller as soon as it is complete.

use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use candle_core::Tensor;

use crate::{CausalLM, Error, Result, Sampler, SamplingParams, Tokenizer};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    /// The most tokens to generate (capped by the context length).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Leave control tokens (e.g. `<|im_end|>`) out of the streamed text.
    pub skip_special: bool,
    /// Stop when the text contains one of these; it is matched across token boundaries
    /// and never streamed (text that may begin one is held back until it cannot).
    pub stop: Vec<String>,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        Self {
            max_tokens: 128,
            sampling: SamplingParams::default(),
            skip_special: true,
            stop: Vec::new(),
        }
    }
}

/// Why generation stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The model produced one of its eos ids.
    Eos,
    /// `max_tokens` were generated.
    MaxTokens,
    /// The context is full.
    ContextFull,
    /// The callback asked to stop.
    Cancelled,
    /// The text reached one of the stop strings.
    StopString,
}

/// Holds back streamed text that could be the start of a stop string.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
}

impl StopMatcher {
    pub fn new(stops: &[String]) -> Self {
        Self {
            stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(),
            pending: String::new(),
        }
    }

    /// Adds a piece; returns the text that is now safe to show and whether a stop
    /// string was reached (the text before it is returned, the rest dropped).
    pub fn push(&mut self, piece: &str) -> (String, bool) {
        self.pending.push_str(piece);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = first {
            let out = self.pending[..at].to_string();
            self.pending.clear();
            return (out, true);
        }
        let hold = self
            .stops
            .iter()
            .map(|s| longest_suffix_prefix(&self.pending, s))
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        (out, false)
    }

    /// What was held back, at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

/// The length of the longest suffix of `text` that is a proper prefix of `stop`, at a
/// character boundary.
fn longest_suffix_prefix(text: &str, stop: &str) -> usize {
    let max = text.len().min(stop.len().saturating_sub(1));
    (1..=max)
        .rev()
        .find(|&n| {
            let start = text.len() - n;
            text.is_char_boundary(start) && stop.as_bytes().starts_with(&text.as_bytes()[start..])
        })
        .unwrap_or(0)
}

/// Timings of one generation.
#[derive(Debug, Clone, Default)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// The prompt's forward pass.
    pub prompt_time: Duration,
    /// From the call to the first generated token.
    pub time_to_first_token: Duration,
    /// The forward passes after the first token.
    pub decode_time: Duration,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prompt_tokens_per_s(&self) -> f64 {
        per_s(self.prompt_tokens, self.prompt_time)
    }

    /// Generated tokens per second after the first (each needs one forward pass).
    pub fn decode_tokens_per_s(&self) -> f64 {
        per_s(self.generated_tokens.saturating_sub(1), self.decode_time)
    }
}

fn per_s(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// The result of [`generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated ids (the eos id, if it ended there, included).
    pub ids: Vec<u32>,
    /// The generated text.
    pub text: String,
    pub stop: StopReason,
    pub stats: GenerationStats,
}

/// Generates from `prompt_ids` with a fresh KV cache, calling `on_piece(text, id)`
/// for each piece of text as soon as it is complete; return `ControlFlow::Break` to stop.
pub fn generate(
    model: &mut dyn CausalLM,
    tokenizer: &Tokenizer,
    prompt_ids: &[u32],
    options: &GenerateOptions,
    mut on_piece: impl FnMut(&str) -> ControlFlow<()>,
) -> Result<Generation> {
    let _span = tracing::info_span!(
        "generate",
        arch = model.architecture(),
        prompt_tokens = prompt_ids.len()
    )
    .entered();
    if prompt_ids.is_empty() {
        return Err(Error::EmptyPrompt);
    }
    let ctx = model.context_length();
    if prompt_ids.len() >= ctx {
        return Err(Error::PromptTooLong {
            prompt_tokens: prompt_ids.len(),
            context_length: ctx,
        });
    }
    let mut sampler = Sampler::new(options.sampling.clone())?;
    let eos = model.eos_token_ids().to_vec();
    let device = model.device().clone();
    model.reset_cache()?;

    let start = Instant::now();
    let mut stats = GenerationStats {
        prompt_tokens: prompt_ids.len(),
        ..Default::default()
    };
    let mut history: Vec<u32> = prompt_ids.to_vec();
    let mut stream = tokenizer.stream_after(prompt_ids, options.skip_special);
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut stops = StopMatcher::new(&options.stop);
    let input = Tensor::new(prompt_ids, &device)?.unsqueeze(0)?;
    let mut logits = model.forward(&input, 0)?;
    stats.prompt_time = start.elapsed();
    let mut decode_start = None;
    let stop = loop {
        let next = sampler.sample(&logits, &history)?;
        if ids.is_empty() {
            stats.time_to_first_token = start.elapsed();
            decode_start = Some(Instant::now());
        }
        ids.push(next);
        history.push(next);
        if eos.contains(&next) {
            break StopReason::Eos;
        }
        if let Some(piece) = stream.push(next)? {
            let (piece, stopped) = stops.push(&piece);
            if !piece.is_empty() {
                text.push_str(&piece);
                if on_piece(&piece).is_break() {
                    break StopReason::Cancelled;
                }
            }
            if stopped {
                break StopReason::StopString;
            }
        }
        if ids.len() >= options.max_tokens {
            break StopReason::MaxTokens;
        }
        if history.len() >= ctx {
            break StopReason::ContextFull;
        }
        let input = Tensor::new(&[next], &device)?.unsqueeze(0)?;
        logits = model.forward(&input, history.len() - 1)?;
    };
    if stop != StopReason::StopString {
        let mut rest = stops.push(&stream.finish()?.unwrap_or_default()).0;
        rest.push_str(&stops.finish());
        if !rest.is_empty() {
            text.push_str(&rest);
            let _ = on_piece(&rest);
        }
    }
    stats.generated_tokens = ids.len();
    stats.decode_time = decode_start.map(|s| s.elapsed()).unwrap_or_default();
    tracing::debug!(?stop, generated = ids.len(), "generation done");
    Ok(Generation {
        ids,
        text,
        stop,
        stats,
    })
}

#[cfg(test)]
mod stop_tests {
    use super::*;

    fn run(stops: &[&str], pieces: &[&str]) -> (Vec<String>, bool) {
        let stops: Vec<String> = stops.iter().map(|s| s.to_string()).collect();
        let mut m = StopMatcher::new(&stops);
        let mut out = Vec::new();
        for p in pieces {
            let (o, stopped) = m.push(p);
            if !o.is_empty() {
                out.push(o);
            }
            if stopped {
                return (out, true);
            }
        }
        let rest = m.finish();
        if !rest.is_empty() {
            out.push(rest);
        }
        (out, false)
    }

    #[test]
    fn a_stop_string_split_across_tokens_is_matched_and_never_shown() {
        let (out, stopped) = run(
            &["\nUser:"],
            &["Hello", " there", "\n", "Us", "er:", " more"],
        );
        assert!(stopped);
        assert_eq!(out.concat(), "Hello there");
    }

    #[test]
    fn held_back_text_is_released_when_it_cannot_start_a_stop() {
        let (out, stopped) = run(&["END"], &["a E", "N", "x", " b"]);
        assert!(!stopped);
        assert_eq!(out, vec!["a ", "ENx", " b"]);
    }

    #[test]
    fn text_after_the_stop_in_the_same_piece_is_dropped() {
        let (out, stopped) = run(&["###"], &["one ### two"]);
        assert!(stopped);
        assert_eq!(out.concat(), "one ");
    }

    #[test]
    fn multibyte_text_is_not_split() {
        let (out, _) = run(&["é!"], &["café", " ok"]);
        assert_eq!(out.concat(), "café ok");
    }
}
