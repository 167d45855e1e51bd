//! The server's counters and latency histograms, and their Prometheus text
//! (`GET /metrics`, exposition format 0.0.4).
//!
//! Everything is a relaxed atomic: the worker thread writes, any handler reads, and
//! a scrape needs no lock.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Bucket bounds of the latency histograms, in seconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

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
        let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} histogram\n");
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{b}\"}} {}",
                c.load(Ordering::Relaxed)
            );
        }
        let n = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {n}");
        let _ = write!(
            out,
            "{name}_sum {}\n{name}_count {n}\n",
            self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
    }
}

/// The server's counters, shared by the handlers and the model worker.
pub struct Metrics {
    requests: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    prompt_tokens: AtomicU64,
    generated_tokens: AtomicU64,
    /// From admission to the first token.
    ttft: Histogram,
    /// Between consecutive tokens.
    itl: Histogram,
    /// What loading the model cost (set once it has loaded).
    pub load_memory: std::sync::OnceLock<zoo::LoadMemory>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            requests: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            generated_tokens: AtomicU64::new(0),
            ttft: Histogram::new(LATENCY_BUCKETS),
            itl: Histogram::new(LATENCY_BUCKETS),
            load_memory: std::sync::OnceLock::new(),
        }
    }
}

impl Metrics {
    /// A valid generation request reached the queue (admitted or not).
    pub fn request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// A request was refused with 429.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// A generation ended with an error (a timeout included).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A generation ran (to its end, or until it was cancelled or timed out).
    pub fn generation(&self, prompt_tokens: usize, generated_tokens: usize) {
        self.prompt_tokens
            .fetch_add(prompt_tokens as u64, Ordering::Relaxed);
        self.generated_tokens
            .fetch_add(generated_tokens as u64, Ordering::Relaxed);
    }

    /// A token was streamed, `elapsed` after admission (the first token of a request)
    /// or after the previous token.
    pub fn token(&self, first: bool, elapsed: Duration) {
        if first {
            self.ttft.observe(elapsed);
        } else {
            self.itl.observe(elapsed);
        }
    }

    /// The Prometheus text: the counters, `queue_depth` (requests waiting or running)
    /// and the engine's gauges and counters, then the histograms.
    pub fn render(&self, queue_depth: usize, engine: &zoo::EngineStats) -> String {
        let mut out = String::new();
        let counters = [
            (
                "zoo_requests_total",
                "Generation requests received.",
                &self.requests,
            ),
            (
                "zoo_requests_rejected_total",
                "Requests refused with 429 (queue full).",
                &self.rejected,
            ),
            (
                "zoo_errors_total",
                "Generations that ended with an error.",
                &self.errors,
            ),
            (
                "zoo_prompt_tokens_total",
                "Prompt tokens processed.",
                &self.prompt_tokens,
            ),
            (
                "zoo_generated_tokens_total",
                "Tokens generated.",
                &self.generated_tokens,
            ),
        ];
        for (name, help, v) in counters {
            let v = v.load(Ordering::Relaxed);
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"
            );
        }
        let _ = write!(
            out,
            "# HELP zoo_queue_depth Requests waiting or running.\n\
             # TYPE zoo_queue_depth gauge\nzoo_queue_depth {queue_depth}\n"
        );
        let get = zoo::EngineStats::get;
        let load = self.load_memory.get().copied().unwrap_or_default();
        let memory = [
            (
                "zoo_checkpoint_bytes",
                "The checkpoint's size on disk.",
                Some(load.checkpoint_bytes),
            ),
            (
                "zoo_weights_resident_bytes",
                "How much the resident set grew while the model loaded (weights, tokenizer).",
                load.resident_growth_bytes,
            ),
            (
                "zoo_kv_cache_bytes",
                "The KV block store, allocated at start.",
                Some(get(&engine.kv_cache_bytes) as u64),
            ),
            (
                "zoo_resident_bytes",
                "The process's resident set now.",
                zoo::memory::rss_bytes(),
            ),
            (
                "zoo_peak_resident_bytes",
                "The process's peak resident set.",
                zoo::memory::peak_rss_bytes(),
            ),
        ];
        for (name, help, v) in memory {
            if let Some(v) = v {
                let _ = write!(
                    out,
                    "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}\n"
                );
            }
        }
        for (name, kind, help, v) in [
            (
                "zoo_sequences_running",
                "gauge",
                "Sequences in the engine's batch.",
                get(&engine.running),
            ),
            (
                "zoo_sequences_waiting",
                "gauge",
                "Sequences waiting for a slot or KV blocks.",
                get(&engine.waiting),
            ),
            (
                "zoo_batch_sequences",
                "gauge",
                "Sequences in the last engine step.",
                get(&engine.batch_sequences),
            ),
            (
                "zoo_batch_tokens",
                "gauge",
                "Tokens in the last engine step.",
                get(&engine.batch_tokens),
            ),
            (
                "zoo_kv_blocks_used",
                "gauge",
                "KV cache blocks held by sequences.",
                get(&engine.kv_blocks_used),
            ),
            (
                "zoo_kv_blocks_free",
                "gauge",
                "KV cache blocks free or cached and held by nobody.",
                get(&engine.kv_blocks_total).saturating_sub(get(&engine.kv_blocks_used)),
            ),
            (
                "zoo_prefix_cache_hit_tokens_total",
                "counter",
                "Prompt tokens taken from the prefix cache.",
                get(&engine.prefix_hit_tokens),
            ),
            (
                "zoo_prefix_cache_lookup_tokens_total",
                "counter",
                "Prompt tokens looked up in the prefix cache.",
                get(&engine.prefix_lookup_tokens),
            ),
            (
                "zoo_preemptions_total",
                "counter",
                "Sequences preempted for KV blocks (recomputed later).",
                get(&engine.preemptions),
            ),
            (
                "zoo_cancelled_total",
                "counter",
                "Sequences cancelled because the client went away.",
                get(&engine.cancelled),
            ),
        ] {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}\n"
            );
        }
        self.ttft.render(
            "zoo_time_to_first_token_seconds",
            "From admission to the first token.",
            &mut out,
        );
        self.itl.render(
            "zoo_inter_token_latency_seconds",
            "Between consecutive tokens.",
            &mut out,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let m = Metrics::default();
        m.token(true, Duration::from_millis(20));
        m.token(true, Duration::from_secs(100));
        let text = m.render(0, &zoo::EngineStats::default());
        assert!(text.contains("zoo_time_to_first_token_seconds_bucket{le=\"0.01\"} 0\n"));
        assert!(text.contains("zoo_time_to_first_token_seconds_bucket{le=\"0.025\"} 1\n"));
        assert!(text.contains("zoo_time_to_first_token_seconds_bucket{le=\"60\"} 1\n"));
        assert!(text.contains("zoo_time_to_first_token_seconds_bucket{le=\"+Inf\"} 2\n"));
        assert!(text.contains("zoo_time_to_first_token_seconds_sum 100.02\n"));
        assert!(text.contains("zoo_inter_token_latency_seconds_count 0\n"));
    }

    #[test]
    fn counters_and_the_queue_gauge_are_rendered() {
        let m = Metrics::default();
        m.request();
        m.generation(5, 8);
        let text = m.render(3, &zoo::EngineStats::default());
        assert!(text.starts_with(
            "# HELP zoo_requests_total Generation requests received.\n\
             # TYPE zoo_requests_total counter\nzoo_requests_total 1\n"
        ));
        assert!(text.contains("\nzoo_generated_tokens_total 8\n"));
        assert!(text.contains(
            "# TYPE zoo_queue_depth gauge\nzoo_queue_depth 3\n# HELP zoo_checkpoint_bytes"
        ));
        assert!(text.contains("\nzoo_kv_blocks_used 0\n"));
        assert!(text.contains("\nzoo_kv_cache_bytes 0\n"));
        assert!(text.contains("\nzoo_checkpoint_bytes 0\n"));
    }
}
