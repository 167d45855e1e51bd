//! The request bodies of `/v1/completions` and `/v1/chat/completions`, and their
//! validation into a [`Generation`].
//!
//! Unknown fields are accepted and ignored, as OpenAI clients expect (they send
//! `model`, `user` and more); OpenAI's own fields that zoo does not implement are
//! refused when they ask for something ([`super::unsupported`]). A field of the wrong JSON type is not a serde error:
//! [`Field`] keeps it, and validation reports it with the field's own message, in a
//! fixed order (the sampling fields, then the prompt), whatever order the client
//! wrote the fields in.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;
use zoo::{GenerateOptions, Message};

use super::error::ApiError;
use super::params::{Api, Params};

/// The roles a chat message may have.
const ROLES: [&str; 4] = ["system", "user", "assistant", "developer"];

/// Parses a request body: 400 unless it is a JSON object.
pub fn parse<R: DeserializeOwned>(body: &[u8]) -> Result<R, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}"), None))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object",
            None,
        ));
    }
    serde_json::from_value(v).map_err(|e| ApiError::bad_request(e.to_string(), None))
}

/// One optional field as sent.
#[derive(Debug, Default)]
pub enum Field<T> {
    /// Absent, or `null`.
    #[default]
    Absent,
    Given(T),
    /// Of another JSON type than `T`.
    Invalid,
}

impl<'de, T: DeserializeOwned> Deserialize<'de> for Field<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match Value::deserialize(d)? {
            Value::Null => Self::Absent,
            v => T::deserialize(v).map_or(Self::Invalid, Self::Given),
        })
    }
}

impl<T> Field<T> {
    /// The value, if given; `message` for `param` if it had another type.
    pub fn get(
        self,
        param: &'static str,
        message: impl Into<String>,
    ) -> Result<Option<T>, ApiError> {
        match self {
            Self::Absent => Ok(None),
            Self::Given(v) => Ok(Some(v)),
            Self::Invalid => Err(ApiError::bad_request(message, Some(param))),
        }
    }

    /// The value; `message` for `param` if it was absent or had another type.
    pub fn require(self, param: &'static str, message: &str) -> Result<T, ApiError> {
        self.get(param, message)?
            .ok_or_else(|| ApiError::bad_request(message, Some(param)))
    }
}

impl Field<f64> {
    /// Any JSON number.
    pub fn number(self, param: &'static str) -> Result<Option<f64>, ApiError> {
        self.get(param, format!("`{param}` must be a number"))
    }
}

/// `prompt`: one string or a list (each prompt gets `n` choices).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Prompt {
    One(String),
    Many(Vec<String>),
}

/// Most prompts in one completion request.
const MAX_PROMPTS: usize = 16;

/// A `/v1/completions` body: `prompt` and the shared [`Params`].
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    #[serde(default)]
    prompt: Field<Prompt>,
    #[serde(flatten)]
    params: Params,
}

/// A `/v1/chat/completions` body: `messages` and the shared [`Params`].
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    #[serde(default)]
    messages: Field<Vec<Message>>,
    #[serde(flatten)]
    params: Params,
}

/// A valid request: its prompt (text, messages, then token ids) and how to generate.
#[derive(Debug)]
pub struct Generation<P> {
    pub prompt: P,
    pub options: GenerateOptions,
    pub stream: bool,
    /// Choices per prompt.
    pub n: usize,
    /// Log-probabilities with this many alternatives per token.
    pub logprobs: Option<usize>,
    /// A last streamed chunk with the usage.
    pub include_usage: bool,
    pub ignore_eos: bool,
    /// Whether the client sent `max_tokens`: the default (256) is shortened to the
    /// context a prompt leaves, where a value sent is refused if it does not fit.
    pub max_tokens_sent: bool,
}

impl<P> Generation<P> {
    /// The same generation with another form of its prompt.
    pub fn with_prompt<Q>(self, prompt: Q) -> Generation<Q> {
        Generation {
            prompt,
            options: self.options,
            stream: self.stream,
            n: self.n,
            logprobs: self.logprobs,
            include_usage: self.include_usage,
            ignore_eos: self.ignore_eos,
            max_tokens_sent: self.max_tokens_sent,
        }
    }
}

impl CompletionRequest {
    /// Checks the fields against a model with `context_length` tokens.
    pub fn validate(self, context_length: usize) -> Result<Generation<Vec<String>>, ApiError> {
        let g = self.params.validate(context_length, Api::Completions)?;
        let m = "`prompt` must be a string or a list of up to 16 strings";
        let prompts = match self.prompt.require("prompt", m)? {
            Prompt::One(p) => vec![p],
            Prompt::Many(v) if !v.is_empty() && v.len() <= MAX_PROMPTS => v,
            Prompt::Many(_) => return Err(ApiError::bad_request(m, Some("prompt"))),
        };
        if prompts.iter().any(|p| p.is_empty()) {
            return Err(ApiError::bad_request("`prompt` is empty", Some("prompt")));
        }
        Ok(g.with_prompt(prompts))
    }
}

impl ChatRequest {
    /// Checks the fields against a model with `context_length` tokens.
    pub fn validate(self, context_length: usize) -> Result<Generation<Vec<Message>>, ApiError> {
        let g = self.params.validate(context_length, Api::Chat)?;
        let messages = self.messages.require(
            "messages",
            "`messages` must be a list of {role, content} strings",
        )?;
        if messages.is_empty() {
            return Err(ApiError::bad_request(
                "`messages` is empty",
                Some("messages"),
            ));
        }
        if let Some(m) = messages.iter().find(|m| !ROLES.contains(&m.role.as_str())) {
            return Err(ApiError::bad_request(
                format!("unknown role `{}`", m.role),
                Some("messages"),
            ));
        }
        Ok(g.with_prompt(messages))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const CTX: usize = 2048;

    fn completion(body: Value) -> Result<Generation<Vec<String>>, ApiError> {
        parse::<CompletionRequest>(body.to_string().as_bytes())?.validate(CTX)
    }

    fn chat(body: Value) -> Result<Generation<Vec<Message>>, ApiError> {
        parse::<ChatRequest>(body.to_string().as_bytes())?.validate(CTX)
    }

    /// The message and param of the 400 a completion body gets.
    fn refusal(body: Value) -> (String, Option<&'static str>) {
        let e = completion(body).expect_err("accepted");
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        (e.message, e.param)
    }

    #[test]
    fn completion_prompts() {
        let g = completion(json!({"prompt": "Hi", "model": "zoo", "echo": false})).unwrap();
        assert_eq!(
            (g.prompt, g.options.max_tokens),
            (vec!["Hi".to_string()], 256)
        );
        let g = completion(json!({"prompt": ["a", "b"]})).unwrap();
        assert_eq!(g.prompt, ["a", "b"]);
        let string = "`prompt` must be a string or a list of up to 16 strings";
        for (body, message) in [
            (json!({}), string),
            (json!({"prompt": null}), string),
            (json!({"prompt": [1]}), string),
            (json!({"prompt": []}), string),
            (json!({"prompt": ""}), "`prompt` is empty"),
            (json!({"prompt": ["a", ""]}), "`prompt` is empty"),
        ] {
            assert_eq!(refusal(body), (message.into(), Some("prompt")));
        }
    }

    #[test]
    fn the_shared_fields_are_checked_before_the_prompt() {
        let refused = refusal(json!({"prompt": 1, "stream": 1}));
        assert_eq!(
            refused,
            ("`stream` must be a boolean".into(), Some("stream"))
        );
    }

    #[test]
    fn bodies_that_are_not_objects() {
        let e = parse::<CompletionRequest>(b"{").unwrap_err();
        assert!(
            e.message.starts_with("the body is not valid JSON: "),
            "{e:?}"
        );
        let e = parse::<CompletionRequest>(b"[1]").unwrap_err();
        assert_eq!(
            (e.message.as_str(), e.param),
            ("the body must be a JSON object", None)
        );
    }

    #[test]
    fn chat_messages() {
        let g =
            chat(json!({"messages": [{"role": "user", "content": "Hi", "name": "x"}]})).unwrap();
        assert_eq!(g.prompt, [Message::new("user", "Hi")]);
        let list = "`messages` must be a list of {role, content} strings";
        for (messages, message) in [
            (json!(null), list.to_string()),
            (json!([{"role": "user"}]), list.into()),
            (json!([]), "`messages` is empty".into()),
            (
                json!([{"role": "tool", "content": "x"}]),
                "unknown role `tool`".into(),
            ),
        ] {
            let e = chat(json!({ "messages": messages })).unwrap_err();
            assert_eq!((e.message, e.param), (message, Some("messages")));
        }
    }
}
