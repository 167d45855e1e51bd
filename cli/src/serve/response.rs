//! The OpenAI response bodies: whole completions, streamed chunks, the model list.
//! Errors are in [`error`](super::error).
//!
//! Fields are declared in alphabetical order, the order the server has always
//! written them in, so responses are unchanged byte for byte. Which choice type an
//! endpoint answers with is its [`Endpoint`](super::endpoint::Endpoint)'s business.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use zoo::StopReason;

/// A whole response (`usage` set) or one streamed chunk (`usage` left out).
#[derive(Serialize)]
pub struct Body<'a, C> {
    pub choices: Vec<C>,
    /// Seconds since the Unix epoch ([`now_s`]).
    pub created: u64,
    pub id: &'a str,
    pub model: &'a str,
    /// `text_completion`, `chat.completion` or `chat.completion.chunk`.
    pub object: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Serialize)]
pub struct Usage {
    completion_tokens: usize,
    prompt_tokens: usize,
    total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            completion_tokens,
            prompt_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A `/v1/completions` choice, whole or streamed.
#[derive(Serialize)]
pub struct TextChoice {
    finish_reason: Option<&'static str>,
    index: usize,
    /// Null unless the request asked for `logprobs`.
    logprobs: Option<serde_json::Value>,
    text: String,
}

impl TextChoice {
    pub fn new(text: String, finish_reason: Option<&'static str>) -> Self {
        Self {
            finish_reason,
            index: 0,
            logprobs: None,
            text,
        }
    }
}

/// The index and log-probabilities every choice type carries.
pub trait Choice: Sized {
    /// The choice's place among the request's (`prompt * n + j`).
    fn at(self, index: usize) -> Self;
    /// Its tokens' log-probabilities, in the API's shape.
    fn with_logprobs(self, logprobs: Option<serde_json::Value>) -> Self;
}

macro_rules! choice {
    ($($t:ty),*) => {$(
        impl Choice for $t {
            fn at(mut self, index: usize) -> Self {
                self.index = index;
                self
            }
            fn with_logprobs(mut self, logprobs: Option<serde_json::Value>) -> Self {
                self.logprobs = logprobs;
                self
            }
        }
    )*};
}
choice!(TextChoice, ChatChoice, ChatDelta);

/// A whole `/v1/chat/completions` choice: the assistant's message.
#[derive(Serialize)]
pub struct ChatChoice {
    finish_reason: &'static str,
    index: usize,
    logprobs: Option<serde_json::Value>,
    message: ChatMessage,
}

#[derive(Serialize)]
struct ChatMessage {
    content: String,
    role: &'static str,
}

impl ChatChoice {
    pub fn new(content: String, finish_reason: &'static str) -> Self {
        Self {
            finish_reason,
            index: 0,
            logprobs: None,
            message: ChatMessage {
                content,
                role: "assistant",
            },
        }
    }
}

/// A streamed `/v1/chat/completions` choice: the role first, then content, then the
/// finish reason, each in its own chunk.
#[derive(Serialize)]
pub struct ChatDelta {
    delta: Delta,
    finish_reason: Option<&'static str>,
    index: usize,
    logprobs: Option<serde_json::Value>,
}

#[derive(Serialize, Default)]
struct Delta {
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
}

impl ChatDelta {
    fn new(delta: Delta, finish_reason: Option<&'static str>) -> Self {
        Self {
            delta,
            finish_reason,
            index: 0,
            logprobs: None,
        }
    }

    pub fn role() -> Self {
        Self::new(
            Delta {
                role: Some("assistant"),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn content(piece: String) -> Self {
        Self::new(
            Delta {
                content: Some(piece),
                ..Delta::default()
            },
            None,
        )
    }

    pub fn finish(reason: &'static str) -> Self {
        Self::new(Delta::default(), Some(reason))
    }
}

/// Seconds since the Unix epoch (`created`, and the response id).
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A response's `id`: `PREFIX-<unix seconds>-<n>`, `n` counting this process's
/// responses, so that two requests of the same second do not share one.
pub fn response_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", now_s())
}

/// OpenAI's `finish_reason` for a stop.
pub fn finish_reason(stop: StopReason) -> &'static str {
    match stop {
        StopReason::Eos | StopReason::StopString | StopReason::Cancelled => "stop",
        StopReason::MaxTokens | StopReason::ContextFull => "length",
    }
}

/// `GET /v1/models`: the one model this server runs.
#[derive(Serialize)]
pub struct ModelList<'a> {
    data: [ModelCard<'a>; 1],
    object: &'static str,
}

#[derive(Serialize)]
struct ModelCard<'a> {
    created: u64,
    id: &'a str,
    object: &'static str,
    owned_by: &'static str,
}

impl<'a> ModelList<'a> {
    pub fn new(id: &'a str) -> Self {
        Self {
            data: [ModelCard {
                created: 0,
                id,
                object: "model",
                owned_by: "zoo",
            }],
            object: "list",
        }
    }
}

#[cfg(test)]
mod tests {
    //! Each shape against the `json!` the server used to build it with.

    use serde_json::{json, Value};

    use super::*;

    /// Two responses of the same second get different ids.
    #[test]
    fn response_ids_are_unique() {
        let ids: std::collections::HashSet<String> =
            (0..100).map(|_| response_id("cmpl")).collect();
        assert_eq!(ids.len(), 100);
        assert!(ids.iter().all(|id| id.starts_with("cmpl-")));
    }

    fn same(ours: impl Serialize, theirs: Value) {
        assert_eq!(serde_json::to_string(&ours).unwrap(), theirs.to_string());
    }

    fn body<C>(choice: C, object: &'static str, usage: Option<Usage>) -> Body<'static, C> {
        Body {
            choices: vec![choice],
            created: 7,
            id: "x-7",
            model: "m",
            object,
            usage,
        }
    }

    /// The old `json!` of a body around `choice`.
    fn old(object: &str, choice: Value, usage: bool) -> Value {
        let mut v =
            json!({"id": "x-7", "object": object, "created": 7, "model": "m", "choices": [choice]});
        if usage {
            v["usage"] = json!({"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5});
        }
        v
    }

    #[test]
    fn whole_responses() {
        same(
            body(
                TextChoice::new("hi".into(), Some("length")),
                "text_completion",
                Some(Usage::new(3, 2)),
            ),
            old(
                "text_completion",
                json!({"index": 0, "text": "hi", "finish_reason": "length", "logprobs": null}),
                true,
            ),
        );
        same(
            body(
                ChatChoice::new("hi".into(), "stop"),
                "chat.completion",
                Some(Usage::new(3, 2)),
            ),
            old(
                "chat.completion",
                json!({"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop", "logprobs": null}),
                true,
            ),
        );
    }

    #[test]
    fn chunks() {
        let chat = |choice, delta: Value, finish: Option<&str>| {
            same(
                body(choice, "chat.completion.chunk", None),
                old(
                    "chat.completion.chunk",
                    json!({"index": 0, "delta": delta, "finish_reason": finish, "logprobs": null}),
                    false,
                ),
            )
        };
        chat(ChatDelta::role(), json!({"role": "assistant"}), None);
        chat(
            ChatDelta::content("a".into()),
            json!({"content": "a"}),
            None,
        );
        chat(ChatDelta::finish("stop"), json!({}), Some("stop"));
        let text = |choice, text: &str, finish: Option<&str>| {
            same(
                body(choice, "text_completion", None),
                old(
                    "text_completion",
                    json!({"index": 0, "text": text, "finish_reason": finish, "logprobs": null}),
                    false,
                ),
            )
        };
        text(TextChoice::new("a".into(), None), "a", None);
        text(
            TextChoice::new(String::new(), Some("stop")),
            "",
            Some("stop"),
        );
    }

    #[test]
    fn model_list() {
        same(
            ModelList::new("smol"),
            json!({"object": "list", "data": [{"id": "smol", "object": "model", "created": 0, "owned_by": "zoo"}]}),
        );
    }
}
