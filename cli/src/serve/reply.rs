//! Answering a generation: [`collect`] waits for all of it and answers with one JSON
//! object, [`sse`] streams it as server-sent events ending with `data: [DONE]`.
//!
//! Both read what the model worker sends ([`Out`]); the [`Endpoint`] supplies the
//! choices and object names of its API.

use std::convert::Infallible;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::endpoint::Endpoint;
use super::error::{stream_error, ApiError};
use super::response::{finish_reason, now_s, Body, Usage};
use super::worker::Out;

/// Waits for the whole generation and answers with one JSON object (500 if the
/// generation failed).
pub async fn collect<E: Endpoint>(
    mut rx: UnboundedReceiver<Out>,
    id: &str,
    model: &str,
) -> Response {
    let mut text = String::new();
    while let Some(out) = rx.recv().await {
        match out {
            Out::Piece(p) => text.push_str(&p),
            Out::Error(e) => return ApiError::server(e).into_response(),
            Out::Done {
                stop,
                prompt_tokens,
                completion_tokens,
            } => {
                return Json(Body {
                    choices: [E::choice(text, finish_reason(stop))],
                    created: now_s(),
                    id,
                    model,
                    object: E::OBJECT,
                    usage: Some(Usage::new(prompt_tokens, completion_tokens)),
                })
                .into_response();
            }
        }
    }
    ApiError::server("generation ended without a result").into_response()
}

/// Streams the generation as server-sent events: the endpoint's opening chunk if it
/// has one, a chunk per piece, a chunk with the finish reason, then `[DONE]`. An
/// error after the 200 went out is an error event in place of the finish chunk.
pub fn sse<E: Endpoint>(
    rx: UnboundedReceiver<Out>,
    id: String,
    model: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let chunks = Chunks {
        id,
        model,
        created: now_s(),
    };
    // Dropping this stream (the client went away) drops `rx`, which the worker sees
    // at its next token and stops.
    futures::stream::unfold(
        (rx, Phase::Start, chunks),
        |(mut rx, phase, chunks)| async move {
            let (event, next) = match phase {
                Phase::Start => match E::opening() {
                    Some(c) => (chunks.event::<E, _>(c), Phase::Running),
                    None => chunks.next::<E>(&mut rx).await,
                },
                Phase::Running => chunks.next::<E>(&mut rx).await,
                Phase::Finished => (Event::default().data("[DONE]"), Phase::End),
                Phase::End => return None,
            };
            Some((Ok(event), (rx, next, chunks)))
        },
    )
}

/// Where a stream is: before its first chunk, among the pieces, past its last chunk
/// (`[DONE]` is next), or done.
enum Phase {
    Start,
    Running,
    Finished,
    End,
}

/// What every chunk of one stream repeats.
struct Chunks {
    id: String,
    model: String,
    created: u64,
}

impl Chunks {
    fn event<E: Endpoint, C: Serialize>(&self, choice: C) -> Event {
        let body = Body {
            choices: [choice],
            created: self.created,
            id: &self.id,
            model: &self.model,
            object: E::CHUNK_OBJECT,
            usage: None,
        };
        Event::default().data(serde_json::to_string(&body).expect("serializable"))
    }

    /// The event for the worker's next output.
    async fn next<E: Endpoint>(&self, rx: &mut UnboundedReceiver<Out>) -> (Event, Phase) {
        match rx.recv().await {
            Some(Out::Piece(p)) => (self.event::<E, _>(E::piece(p)), Phase::Running),
            Some(Out::Done { stop, .. }) => (
                self.event::<E, _>(E::finish(finish_reason(stop))),
                Phase::Finished,
            ),
            Some(Out::Error(e)) => (Event::default().data(stream_error(&e)), Phase::Finished),
            None => (
                Event::default().data(stream_error("generation stopped")),
                Phase::Finished,
            ),
        }
    }
}
