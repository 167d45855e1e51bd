//! Fuzz target `chat_template`: the bytes as a chat template (as a GGUF's
//! `tokenizer.chat_template` or tokenizer_config.json would carry it), compiled and
//! rendered over a short conversation the way `zoo chat` and `zoo serve` render it.
//!
//! Layout: the template source, then optionally a NUL byte and up to
//! [`MAX_MESSAGES`] message contents separated by NUL bytes (each cut at
//! [`MAX_CONTENT`] bytes); without them a fixed four-message conversation is used.
//! Rendering is bounded by zoo's renderer (fuel, recursion and output limits), so a
//! hostile template ends with an error instead of hanging or filling the memory; the
//! target checks the output bound.

use zoo::chat::{OUTPUT_BASE, OUTPUT_PER_INPUT_BYTE};
use zoo::{ChatTemplate, Message};

/// Most messages an input may give.
pub const MAX_MESSAGES: usize = 8;
/// Most bytes of a message's content.
pub const MAX_CONTENT: usize = 256;

const ROLES: [&str; 4] = ["system", "user", "assistant", "user"];

/// One input.
pub fn run(data: &[u8]) {
    let mut parts = data.split(|&b| b == 0);
    let Some(Ok(source)) = parts.next().map(std::str::from_utf8) else {
        return;
    };
    let mut messages: Vec<Message> = parts
        .take(MAX_MESSAGES)
        .enumerate()
        .map(|(i, c)| {
            let c = &c[..c.len().min(MAX_CONTENT)];
            Message::new(ROLES[i % ROLES.len()], String::from_utf8_lossy(c))
        })
        .collect();
    if messages.is_empty() {
        messages = vec![
            Message::new("system", "Be brief."),
            Message::new("user", "Hi"),
            Message::new("assistant", "Hello."),
            Message::new("user", "What is 2 + 2?"),
        ];
    }
    let Ok(template) = ChatTemplate::new(source, "<s>", "</s>") else {
        return;
    };
    for (messages, add_generation_prompt) in [(&messages[..], true), (&messages[..1], false)] {
        if let Ok(text) = template.render(messages, add_generation_prompt) {
            let input: usize = messages
                .iter()
                .map(|m| m.role.len() + m.content.len())
                .sum();
            assert!(text.len() <= OUTPUT_BASE + OUTPUT_PER_INPUT_BYTE * input);
        }
    }
}
