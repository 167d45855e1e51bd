//! `zoo`: run, tokenize, list, inspect, fetch and bench models from the command line.

mod bench;
mod chat;
mod commands;
mod hint;
mod memory;
mod perplexity;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "zoo",
    version,
    about = "Run LLMs of every registered architecture (safetensors or GGUF) on CPU, or on a GPU with --features cuda/metal"
)]
struct Cli {
    /// Log filter (also RUST_LOG), e.g. `info` or `zoo_core=debug`.
    #[arg(long, global = true, default_value = "warn")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate text from a prompt, streaming it to stdout (speed figures go to stderr).
    Run(commands::RunArgs),
    /// Print the token ids of a text (no BOS, special-token text not parsed), like llama-tokenize.
    Tokenize(commands::TokenizeArgs),
    /// List the registered architectures.
    List(commands::ListArgs),
    /// Describe a checkpoint: format, architecture, parameters, quantization, tokenizer
    /// (with --memory: load it and report weights, KV cache and peak RSS).
    Inspect(commands::InspectArgs),
    /// Fetch a known model into the cache and print its path.
    Fetch(commands::FetchArgs),
    /// Chat in the terminal with the model's chat template (history kept; Ctrl-C stops an answer).
    Chat(chat::ChatArgs),
    /// Serve the model over an OpenAI-compatible HTTP API (completions, chat, SSE streaming, metrics).
    Serve(serve::ServeArgs),
    /// Measure prompt processing and decode speed (a benchmark, comparable to llama-bench -p 128 -n 128).
    Bench(bench::BenchArgs),
    /// Perplexity of a text file, computed as llama-perplexity computes it (-c 512, second half of each window scored).
    Perplexity(perplexity::PerplexityArgs),
}

fn main() -> anyhow::Result<()> {
    // SAFETY: first thing in main, before any thread exists.
    unsafe { zoo::pin_thread_count() };
    let kept = zoo::keep_freed_memory();
    let cli = Cli::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or(cli.log);
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    tracing::debug!(kept, "large freed buffers kept in the heap");
    match cli.command {
        Command::Run(a) => commands::run(a),
        Command::Tokenize(a) => commands::tokenize(a),
        Command::List(a) => commands::list(a),
        Command::Inspect(a) => commands::inspect(a),
        Command::Fetch(a) => commands::fetch(a),
        Command::Bench(a) => bench::bench(a),
        Command::Serve(a) => serve::run(a),
        Command::Chat(a) => chat::chat(a),
        Command::Perplexity(a) => perplexity::perplexity(a),
    }
}
