//! Chat templates: the Jinja template a model ships (GGUF `tokenizer.chat_template`,
//! or `chat_template` in tokenizer_config.json), rendered the way HF transformers'
//! `apply_chat_template` renders it: `messages`, `add_generation_prompt`, `bos_token`,
//! `eos_token`, `raise_exception(...)`, `trim_blocks` and `lstrip_blocks`, Python string
//! methods (`.strip()`, `.startswith()`...) through minijinja's pycompat.
//!
//! A model without a template is an error that says so ([`Error::NoChatTemplate`]);
//! nothing is guessed. A caller may pass a template of its own ([`ChatTemplate::new`]).
//!
//! A template comes from a file a stranger may have written, so rendering is bounded:
//! minijinja's fuel caps the instructions run ([`FUEL_BASE`] plus [`FUEL_PER_MESSAGE`]
//! for each message), its recursion limit the nesting ([`RECURSION_LIMIT`]), and the
//! output may not pass [`OUTPUT_BASE`] plus [`OUTPUT_PER_INPUT_BYTE`] bytes for each
//! byte of the messages, and filters that size an allocation from an argument take
//! none past [`MAX_FILTER_ARGUMENT`] (`bounds.rs`). A render past the first three ends
//! with [`Error::ChatTemplateBudget`], past the last with [`Error::ChatTemplate`],
//! instead of hanging or filling the memory.

mod bounds;

use serde::{Deserialize, Serialize};

use bounds::Bounded;
pub use bounds::{
    FUEL_BASE, FUEL_PER_MESSAGE, MAX_FILTER_ARGUMENT, OUTPUT_BASE, OUTPUT_PER_INPUT_BYTE,
    RECURSION_LIMIT,
};

use crate::source::ModelSource;
use crate::{Error, Result};

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub role: String,
    pub content: String,
}

impl Message {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// A chat template with the special-token texts it may refer to.
#[derive(Debug, Clone)]
pub struct ChatTemplate {
    source: String,
    bos_token: String,
    eos_token: String,
}

impl ChatTemplate {
    /// A template from its Jinja source; fails if it does not compile.
    pub fn new(source: impl Into<String>, bos_token: &str, eos_token: &str) -> Result<Self> {
        let t = Self {
            source: source.into(),
            bos_token: bos_token.into(),
            eos_token: eos_token.into(),
        };
        t.env()?;
        Ok(t)
    }

    /// The template the model ships, or [`Error::NoChatTemplate`].
    pub fn for_source(source: &ModelSource) -> Result<Self> {
        match source {
            ModelSource::Gguf(g) => {
                let Some(text) = g.str_opt("tokenizer.chat_template")? else {
                    return Err(Error::NoChatTemplate {
                        path: g.path.clone(),
                    });
                };
                let token = |key: &str| -> Result<String> {
                    let Some(id) = g.u64_opt(key)? else {
                        return Ok(String::new());
                    };
                    // One piece of the vocabulary, not a copy of all of it: this runs on
                    // every load (`Loaded::chat_template`).
                    Ok(match g.array("tokenizer.ggml.tokens")?.get(id as usize) {
                        Some(candle_core::quantized::gguf_file::Value::String(s)) => s.clone(),
                        _ => String::new(),
                    })
                };
                Self::new(
                    text,
                    &token("tokenizer.ggml.bos_token_id")?,
                    &token("tokenizer.ggml.eos_token_id")?,
                )
            }
            ModelSource::Safetensors(s) => {
                let no_template = || Error::NoChatTemplate {
                    path: s.dir.clone(),
                };
                let path = s.tokenizer_config.as_ref().ok_or_else(no_template)?;
                let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
                let cfg: serde_json::Value =
                    serde_json::from_str(&text).map_err(|e| Error::Config {
                        path: path.clone(),
                        what: "tokenizer_config.json".into(),
                        detail: e.to_string(),
                        hint: "it must be valid JSON".into(),
                    })?;
                let template = match &cfg["chat_template"] {
                    serde_json::Value::String(t) => t.clone(),
                    // A list of named templates: the one called "default".
                    serde_json::Value::Array(list) => list
                        .iter()
                        .find(|t| t["name"] == "default")
                        .and_then(|t| t["template"].as_str())
                        .ok_or_else(no_template)?
                        .to_string(),
                    _ => {
                        // transformers 4.43+ may keep it beside: chat_template.jinja.
                        let jinja = s.dir.join("chat_template.jinja");
                        std::fs::read_to_string(&jinja).map_err(|_| no_template())?
                    }
                };
                let token = |key: &str| match &cfg[key] {
                    serde_json::Value::String(t) => t.clone(),
                    v => v["content"].as_str().unwrap_or_default().to_string(),
                };
                Self::new(template, &token("bos_token"), &token("eos_token"))
            }
        }
    }

    fn env(&self) -> Result<minijinja::Environment<'static>> {
        let mut env = minijinja::Environment::new();
        bounds::bound(&mut env);
        env.set_syntax(
            minijinja::syntax::SyntaxConfig::builder()
                .trim_blocks(true)
                .lstrip_blocks(true)
                .build()
                .expect("the default delimiters are valid"),
        );
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    msg,
                ))
            },
        );
        env.add_template_owned("chat", self.source.clone())
            .map_err(|e| Error::ChatTemplate(format!("the template does not compile: {e}")))?;
        Ok(env)
    }

    /// The prompt text for `messages`; with `add_generation_prompt`, ending where the
    /// assistant's answer starts.
    pub fn render(&self, messages: &[Message], add_generation_prompt: bool) -> Result<String> {
        let mut env = self.env()?;
        let fuel = FUEL_BASE + FUEL_PER_MESSAGE * messages.len() as u64;
        env.set_fuel(Some(fuel));
        let input: usize = messages
            .iter()
            .map(|m| m.role.len() + m.content.len())
            .sum();
        let mut out = Bounded {
            out: Vec::new(),
            limit: OUTPUT_BASE + OUTPUT_PER_INPUT_BYTE * input,
            exceeded: false,
        };
        bounds::bound_printing(&mut env, out.limit);
        let t = env.get_template("chat").expect("added in env()");
        let rendered = t.render_captured_to(
            minijinja::context! {
                messages => minijinja::value::Serde(messages),
                add_generation_prompt => add_generation_prompt,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
                tools => (),
            },
            &mut out,
        );
        match rendered {
            Ok(_) => String::from_utf8(out.out)
                .map_err(|e| Error::ChatTemplate(format!("the output is not UTF-8: {e}"))),
            Err(e) if e.kind() == minijinja::ErrorKind::OutOfFuel => Err(Error::ChatTemplateBudget {
                found: format!("{fuel} instructions"),
                bound: format!(
                    "{FUEL_BASE} instructions plus {FUEL_PER_MESSAGE} per message ({} messages)",
                    messages.len()
                ),
            }),
            Err(e) if out.exceeded || e.detail() == Some(bounds::PRINTED_PAST_BOUND) => Err(Error::ChatTemplateBudget {
                found: format!("{} bytes of output", out.limit),
                bound: format!(
                    "{OUTPUT_BASE} bytes plus {OUTPUT_PER_INPUT_BYTE} per byte of the messages ({input} bytes)"
                ),
            }),
            Err(e) if e.to_string().contains("recursion limit exceeded") => {
                Err(Error::ChatTemplateBudget {
                    found: format!("a nesting deeper than {RECURSION_LIMIT}"),
                    bound: format!("{RECURSION_LIMIT} levels of blocks, loops and macro calls"),
                })
            }
            Err(e) => Err(Error::ChatTemplate(format!("rendering failed: {e}"))),
        }
    }

    /// The BOS text this template may write itself (so the prompt's ids get no second
    /// BOS).
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    #[test]
    fn renders_chatml_with_the_generation_prompt() {
        let t = ChatTemplate::new(CHATML, "", "<|im_end|>").unwrap();
        let s = t
            .render(
                &[
                    Message::new("system", "Be brief."),
                    Message::new("user", "Hi"),
                ],
                true,
            )
            .unwrap();
        assert_eq!(
            s,
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let s = t.render(&[Message::new("user", "Hi")], false).unwrap();
        assert!(!s.ends_with("assistant\n"));
    }

    #[test]
    fn raise_exception_and_python_methods_work_as_in_transformers() {
        let src = "{% if messages[0]['role'] != 'user' %}{{ raise_exception('Conversation roles must start with user') }}{% endif %}{{ bos_token }}{{ messages[0]['content'].strip().upper() }}";
        let t = ChatTemplate::new(src, "<s>", "</s>").unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "  hi ")], false).unwrap(),
            "<s>HI"
        );
        let e = t
            .render(&[Message::new("assistant", "x")], false)
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("Conversation roles must start with user"),
            "{e}"
        );
    }

    /// A render that would run ten billion loop iterations, nest without end or write
    /// gigabytes ends quickly with the typed budget error.
    #[test]
    fn hostile_templates_end_with_the_budget_error() {
        let cases = [
            ("instructions", "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}"),
            ("nesting", "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}"),
            ("output", "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}"),
            // A 10^8-item sequence walked by a builtin: minijinja charges its items.
            ("instructions", "{% set x = [0] * 10000 * 9999 %}{{ x|join }}"),
            // The same printed whole: measured before formatting (6.9 s to reach the
            // output bound without it).
            ("output", "{% set x = [0] * 10000 * 9999 %}{{ x }}"),
        ];
        // Found by fuzzing (fuzz/regressions/chat_template): an empty sequence repeated
        // 2*10^11 times took 38 s with minijinja 2; minijinja 3 repeats it eagerly, and
        // refuses a repetition past 10^8 items.
        for src in [
            "{{t_els4444|list*44444*444~_els4444|list*44444*4444-44 }}",
            "{{ [0] * 44444 * 4444 }}",
        ] {
            let t = ChatTemplate::new(src, "", "").unwrap();
            let e = t.render(&[Message::new("user", "Hi")], true).unwrap_err();
            assert!(matches!(e, Error::ChatTemplate(_)), "{src}: {e}");
        }
        for src in [
            "{{ 'a\nb'|indent(10000000000) }}",
            "{{ messages|tojson(indent=4000000000) }}",
            "{{ messages|slice(10000000000000) }}",
            "{{ messages|batch(10000000000000) }}",
            "{{ '%9999999999d'|format(1) }}",
        ] {
            let t = ChatTemplate::new(src, "", "").unwrap();
            let e = t.render(&[Message::new("user", "Hi")], true).unwrap_err();
            assert!(e.to_string().contains("past zoo's bound"), "{src}: {e}");
        }
        // The same filters with real arguments still work.
        let t = ChatTemplate::new(
            "{{ 'a\nb'|indent(2) }}|{{ messages|batch(2)|length }}|{{ '%3d'|format(7) }}",
            "",
            "",
        )
        .unwrap();
        assert_eq!(
            t.render(&[Message::new("user", "Hi")], true).unwrap(),
            "a\n  b|1|  7"
        );
        for (what, src) in cases {
            let t = ChatTemplate::new(src, "", "").unwrap();
            let start = std::time::Instant::now();
            let e = t.render(&[Message::new("user", "Hi")], true).unwrap_err();
            let took = start.elapsed();
            assert!(
                matches!(&e, Error::ChatTemplateBudget { found, .. } if found.contains(match what {
                    "instructions" => "instructions",
                    "nesting" => "nesting",
                    _ => "output",
                })),
                "{what}: {e}"
            );
            assert!(took.as_secs_f64() < 10.0, "{what} took {took:?}");
        }
    }

    #[test]
    fn a_template_that_does_not_compile_is_an_error() {
        assert!(ChatTemplate::new("{% for %}", "", "").is_err());
    }
}
