//! The two generation endpoints, `/v1/completions` and `/v1/chat/completions`: what
//! differs between them is the [`Endpoint`] trait and its two implementations; the
//! handler they share is [`handle`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::response::sse::Sse;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::reply;
use super::request::{self, ChatRequest, CompletionRequest, Generation};
use super::response::{now_s, ChatChoice, ChatDelta, TextChoice};
use super::worker::Out;
use super::AppState;

/// One OpenAI generation API: its request, how its prompt becomes token ids, and the
/// shapes of its answers.
pub trait Endpoint: Send + Sync + 'static {
    type Request: DeserializeOwned;
    /// A choice of the whole response.
    type Choice: Serialize;
    /// A choice of a streamed chunk.
    type Chunk: Serialize + Send;
    /// Begins the response's `id`.
    const ID_PREFIX: &'static str;
    /// The `object` of the whole response.
    const OBJECT: &'static str;
    /// The `object` of a streamed chunk.
    const CHUNK_OBJECT: &'static str;

    /// Validates the request and turns its prompt into token ids.
    fn prepare(request: Self::Request, state: &AppState) -> Result<Generation<Vec<u32>>, ApiError>;
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
    ) -> Result<Generation<Vec<u32>>, ApiError> {
        let g = request.validate(state.context_length)?;
        let ids = state
            .tokenizer
            .encode_prompt(&g.prompt)
            .map_err(tokenizer_error)?;
        Ok(g.with_prompt(ids))
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

    fn prepare(request: ChatRequest, state: &AppState) -> Result<Generation<Vec<u32>>, ApiError> {
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
        Ok(g.with_prompt(ids))
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
pub async fn handle<E: Endpoint>(State(state): State<Arc<AppState>>, body: Bytes) -> Response {
    let (rx, stream) = match admit::<E>(&state, &body) {
        Ok(admitted) => admitted,
        Err(e) => return e.into_response(),
    };
    let id = format!("{}-{}", E::ID_PREFIX, now_s());
    if stream {
        Sse::new(reply::sse::<E>(rx, id, state.model_id.clone())).into_response()
    } else {
        reply::collect::<E>(rx, &id, &state.model_id).await
    }
}

/// The receiver of the generation's output, and whether to stream it.
fn admit<E: Endpoint>(
    state: &AppState,
    body: &[u8],
) -> Result<(UnboundedReceiver<Out>, bool), ApiError> {
    let g = E::prepare(request::parse(body)?, state)?;
    let rx = state.queue.submit(g.prompt, g.options)?;
    Ok((rx, g.stream))
}
