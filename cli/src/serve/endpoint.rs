//! The two generation endpoints, `/v1/completions` and `/v1/chat/completions`: what
//! differs between them is the [`Endpoint`] trait and its two implementations; the
//! handler they share is [`handle`].

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::reply;
use super::request::{self, ChatRequest, CompletionRequest, Generation};
use super::response::{response_id, ChatChoice, ChatDelta, Choice, TextChoice};
use super::worker::{Out, TokenLp};
use super::AppState;

/// One OpenAI generation API: its request, how its prompt becomes token ids, and the
/// shapes of its answers.
pub trait Endpoint: Send + Sync + 'static {
    type Request: DeserializeOwned;
    /// A choice of the whole response.
    type Choice: Serialize + Choice;
    /// A choice of a streamed chunk.
    type Chunk: Serialize + Send + Choice;
    /// Begins the response's `id`.
    const ID_PREFIX: &'static str;
    /// The `object` of the whole response.
    const OBJECT: &'static str;
    /// The `object` of a streamed chunk.
    const CHUNK_OBJECT: &'static str;

    /// Validates the request and turns its prompt(s) into token ids.
    fn prepare(
        request: Self::Request,
        state: &AppState,
    ) -> Result<Generation<Vec<Vec<u32>>>, ApiError>;
    /// Tokens' log-probabilities in the API's shape; `offset`: where the first token's
    /// text starts in the choice's text.
    fn logprobs(tokens: &[TokenLp], offset: usize) -> serde_json::Value;
    /// The choice of the whole response: all the text, and why it ended.
    fn choice(text: String, finish_reason: &'static str) -> Self::Choice;
    /// The chunk streamed before the first piece, if the API has one.
    fn opening() -> Option<Self::Chunk>;
    /// The chunk of one piece of text.
    fn piece(text: String) -> Self::Chunk;
    /// The last chunk before `[DONE]`.
    fn finish(reason: &'static str) -> Self::Chunk;
}

/// A tokenizer error, as a 400.
fn tokenizer_error(e: zoo::Error) -> ApiError {
    ApiError::bad_request(e.to_string(), None)
}

/// `/v1/completions`: a text prompt continued.
pub struct Completions;

impl Endpoint for Completions {
    type Request = CompletionRequest;
    type Choice = TextChoice;
    type Chunk = TextChoice;
    const ID_PREFIX: &'static str = "cmpl";
    const OBJECT: &'static str = "text_completion";
    const CHUNK_OBJECT: &'static str = "text_completion";

    fn prepare(
        request: CompletionRequest,
        state: &AppState,
    ) -> Result<Generation<Vec<Vec<u32>>>, ApiError> {
        let g = request.validate(state.context_length)?;
        let ids = g
            .prompt
            .iter()
            .map(|p| state.tokenizer.encode_prompt(p).map_err(tokenizer_error))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(g.with_prompt(ids))
    }

    /// The legacy completions shape: parallel lists of tokens, their log-probabilities,
    /// the alternatives (token to log-probability) and each token's text offset, in
    /// characters of the answer (as vLLM counts them).
    fn logprobs(tokens: &[TokenLp], offset: usize) -> serde_json::Value {
        let mut at = offset;
        let offsets: Vec<usize> = tokens
            .iter()
            .map(|t| {
                let o = at;
                at += t.token.chars().count();
                o
            })
            .collect();
        serde_json::json!({
            "text_offset": offsets,
            "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
            "tokens": tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
            "top_logprobs": tokens.iter().map(|t| {
                t.top.iter().map(|(s, l)| (s.clone(), serde_json::json!(l))).collect::<serde_json::Map<_, _>>()
            }).collect::<Vec<_>>(),
        })
    }

    fn choice(text: String, finish_reason: &'static str) -> TextChoice {
        TextChoice::new(text, Some(finish_reason))
    }

    fn opening() -> Option<TextChoice> {
        None
    }

    fn piece(text: String) -> TextChoice {
        TextChoice::new(text, None)
    }

    fn finish(reason: &'static str) -> TextChoice {
        TextChoice::new(String::new(), Some(reason))
    }
}

/// `/v1/chat/completions`: messages rendered with the model's chat template, and the
/// assistant's answer.
pub struct ChatCompletions;

impl Endpoint for ChatCompletions {
    type Request = ChatRequest;
    type Choice = ChatChoice;
    type Chunk = ChatDelta;
    const ID_PREFIX: &'static str = "chatcmpl";
    const OBJECT: &'static str = "chat.completion";
    const CHUNK_OBJECT: &'static str = "chat.completion.chunk";

    fn prepare(
        request: ChatRequest,
        state: &AppState,
    ) -> Result<Generation<Vec<Vec<u32>>>, ApiError> {
        let g = request.validate(state.context_length)?;
        let Some(template) = &state.template else {
            let why = state
                .template_error
                .as_deref()
                .unwrap_or("no chat template");
            return Err(ApiError::bad_request(why, Some("messages")));
        };
        let text = template
            .render(&g.prompt, true)
            .map_err(|e| ApiError::bad_request(e.to_string(), Some("messages")))?;
        let ids = state
            .tokenizer
            .encode_chat(&text, template.bos_token())
            .map_err(tokenizer_error)?;
        Ok(g.with_prompt(vec![ids]))
    }

    /// The chat shape: `content`, a list of tokens with their log-probability, bytes
    /// and alternatives.
    fn logprobs(tokens: &[TokenLp], _offset: usize) -> serde_json::Value {
        let entry = |token: &str, logprob: f32| serde_json::json!({"bytes": token.as_bytes(), "logprob": logprob, "token": token});
        serde_json::json!({
            "content": tokens.iter().map(|t| {
                let mut e = entry(&t.token, t.logprob);
                e["top_logprobs"] = t.top.iter().map(|(s, l)| entry(s, *l)).collect();
                e
            }).collect::<Vec<_>>(),
        })
    }

    fn choice(text: String, finish_reason: &'static str) -> ChatChoice {
        ChatChoice::new(text, finish_reason)
    }

    fn opening() -> Option<ChatDelta> {
        Some(ChatDelta::role())
    }

    fn piece(text: String) -> ChatDelta {
        ChatDelta::content(text)
    }

    fn finish(reason: &'static str) -> ChatDelta {
        ChatDelta::finish(reason)
    }
}

/// `POST` handler of an endpoint: validate, admit, then answer whole or streamed.
pub async fn handle<E: Endpoint>(State(state): State<Arc<AppState>>, body: Body) -> Response {
    if let Some(refused) = state.life.refuse() {
        return refused.into_response();
    }
    let body = match read_body(body).await {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let (rx, shape) = match admit::<E>(&state, &body) {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    let id = response_id(E::ID_PREFIX);
    if shape.stream {
        Sse::new(reply::sse::<E>(rx, shape, id, state.model_id.clone())).into_response()
    } else {
        reply::collect::<E>(rx, shape, &id, &state.model_id).await
    }
}

/// The largest request body, bytes: a prompt of a 128k-token context is under 1 MiB.
pub const BODY_LIMIT: usize = 2 << 20;
/// How long a client may take to send its body: 2 MiB at 70 KB/s. A client that sends
/// headers and then stalls must not hold a connection (and its buffer) for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// The request body within [`BODY_LIMIT`] and [`BODY_TIMEOUT`], as OpenAI error bodies
/// when it is not (413, 408, 400).
async fn read_body(body: Body) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Ok(Ok(b)) => Ok(b),
        Ok(Err(e)) => {
            let too_long = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            Err(if too_long {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "invalid_request_error",
                    format!("the request body is over {} MiB", BODY_LIMIT >> 20),
                )
            } else {
                ApiError::bad_request(format!("the request body could not be read: {e}"), None)
            })
        }
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "invalid_request_error",
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// What the reply needs to know of the request.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub stream: bool,
    /// Choices in all (prompts times `n`).
    pub choices: usize,
    /// Choices per prompt.
    pub n: usize,
    pub logprobs: bool,
    pub include_usage: bool,
}

/// The receiver of the generation's output, and the shape of the reply.
fn admit<E: Endpoint>(
    state: &AppState,
    body: &[u8],
) -> Result<(UnboundedReceiver<Out>, Shape), ApiError> {
    let g = E::prepare(request::parse(body)?, state)?;
    let shape = Shape {
        stream: g.stream,
        choices: g.prompt.len() * g.n,
        n: g.n,
        logprobs: g.logprobs.is_some(),
        include_usage: g.include_usage,
    };
    let rx = state.queue.submit(
        g.prompt,
        &g.options,
        g.n,
        g.logprobs,
        (g.ignore_eos, g.max_tokens_sent),
    )?;
    Ok((rx, shape))
}
