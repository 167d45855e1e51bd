//! `zoo chat`: an interactive terminal chat with the model's own chat template.
//! History is kept; Ctrl-C stops the current answer (not the program); `/reset`
//! forgets the history; Ctrl-D or `/exit` quits.

use std::io::{BufRead, Write};
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use zoo::{CausalLM, ChatTemplate, GenerateOptions, Message, SamplingParams, StopReason};

use crate::commands::ModelArg;
use crate::hint::CliResult;

#[derive(clap::Args)]
pub struct ChatArgs {
    #[command(flatten)]
    pub model: ModelArg,
    /// A system message to start the conversation with.
    #[arg(long)]
    pub system: Option<String>,
    /// A Jinja chat template file, for models without one (never guessed).
    #[arg(long)]
    pub template: Option<std::path::PathBuf>,
    #[arg(long, short = 'n', default_value_t = 512)]
    pub max_tokens: usize,
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f64,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f64,
    #[arg(long, default_value_t = 1.1)]
    pub repeat_penalty: f32,
    #[arg(long, default_value_t = 299792458)]
    pub seed: u64,
    /// Stop strings (repeatable), matched across tokens and never printed.
    #[arg(long)]
    pub stop: Vec<String>,
}

pub fn chat(a: ChatArgs) -> Result<()> {
    let path = a.model.resolve()?;
    let mut loaded = a.model.load()?;
    let template = match &a.template {
        Some(f) => ChatTemplate::new(
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?,
            "",
            "",
        )?,
        // What the checkpoint said at load; the model is not opened again.
        None => loaded.chat_template.cli()?,
    };
    let interrupted = Arc::new(AtomicBool::new(false));
    let flag = interrupted.clone();
    ctrlc::set_handler(move || flag.store(true, Ordering::SeqCst))
        .context("installing the Ctrl-C handler")?;

    let mut history: Vec<Message> = a.system.iter().map(|s| Message::new("system", s)).collect();
    eprintln!(
        "zoo chat with {} ({}). Ctrl-C stops an answer, /reset forgets, Ctrl-D or /exit quits.",
        path.display(),
        loaded.entry.name
    );
    let stdin = std::io::stdin();
    let mut turn = 0u64;
    loop {
        eprint!("> ");
        std::io::stderr().flush()?;
        let mut line = String::new();
        interrupted.store(false, Ordering::SeqCst);
        if stdin.lock().read_line(&mut line)? == 0 {
            eprintln!();
            return Ok(());
        }
        let line = line.trim_end_matches(['\n', '\r']);
        match line.trim() {
            "" => continue,
            "/exit" | "/quit" => return Ok(()),
            "/reset" => {
                history.retain(|m| m.role == "system");
                eprintln!("(history cleared)");
                continue;
            }
            _ => {}
        }
        history.push(Message::new("user", line));
        let prompt = template.render(&history, true)?;
        let ids = loaded
            .tokenizer
            .encode_chat(&prompt, template.bos_token())?;
        let options = GenerateOptions {
            max_tokens: a
                .max_tokens
                .min(loaded.model.context_length().saturating_sub(ids.len() + 1)),
            sampling: SamplingParams {
                temperature: a.temperature,
                top_p: Some(a.top_p),
                repeat_penalty: a.repeat_penalty,
                seed: a.seed.wrapping_add(turn),
                ..Default::default()
            },
            skip_special: true,
            stop: a.stop.clone(),
        };
        turn += 1;
        let mut out = std::io::stdout().lock();
        let g = zoo::generate(
            &mut loaded.model,
            &loaded.tokenizer,
            &ids,
            &options,
            |piece| {
                if interrupted.load(Ordering::SeqCst) {
                    return ControlFlow::Break(());
                }
                let _ = write!(out, "{piece}").and_then(|_| out.flush());
                ControlFlow::Continue(())
            },
        );
        writeln!(out)?;
        match g {
            Ok(g) => {
                if g.stop == StopReason::Cancelled {
                    eprintln!("(stopped)");
                }
                history.push(Message::new("assistant", g.text.trim()));
                tracing::info!(
                    prompt_tokens = g.stats.prompt_tokens,
                    tokens = g.stats.generated_tokens,
                    decode_tok_s = g.stats.decode_tokens_per_s(),
                    "answer"
                );
            }
            Err(zoo::Error::PromptTooLong { .. }) => {
                history.pop();
                eprintln!("(the conversation no longer fits the context; /reset to start again)");
            }
            Err(e) => return Err(e.into()),
        }
    }
}
