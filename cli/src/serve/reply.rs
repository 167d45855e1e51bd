//! Answering a generation: [`collect`] waits for all of it and answers with one JSON
//! object, [`sse`] streams it as server-sent events ending with `data: [DONE]`.
//!
//! Both read the merged output of the request's choices ([`Out`], each piece tagged
//! with its choice's index); the [`Endpoint`] supplies the choices, log-probability
//! shapes and object names of its API.

use std::collections::VecDeque;
use std::convert::Infallible;

use axum::response::sse::Event;
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::Stream;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::endpoint::{Endpoint, Shape};
use super::error::{stream_error, ApiError};
use super::response::{finish_reason, now_s, Body, Choice, Usage};
use super::worker::{Out, TokenLp};

/// Usage over the choices: each prompt's tokens once, every choice's completion.
#[derive(Default)]
struct Tally {
    prompt_tokens: usize,
    completion_tokens: usize,
}

impl Tally {
    fn add(&mut self, shape: &Shape, index: usize, prompt: usize, completion: usize) {
        if index.is_multiple_of(shape.n) {
            self.prompt_tokens += prompt;
        }
        self.completion_tokens += completion;
    }

    fn usage(&self) -> Usage {
        Usage::new(self.prompt_tokens, self.completion_tokens)
    }
}

/// Waits for every choice and answers with one JSON object (500 if one failed).
pub async fn collect<E: Endpoint>(
    mut rx: UnboundedReceiver<Out>,
    shape: Shape,
    id: &str,
    model: &str,
) -> Response {
    let mut text = vec![String::new(); shape.choices];
    let mut tokens: Vec<Vec<TokenLp>> = vec![Vec::new(); shape.choices];
    let mut reasons = vec![None; shape.choices];
    let mut tally = Tally::default();
    let mut done = 0;
    while let Some(out) = rx.recv().await {
        match out {
            Out::Piece {
                index,
                text: t,
                logprobs,
            } => {
                text[index].push_str(&t);
                tokens[index].extend(logprobs);
            }
            Out::Error(e) => return ApiError::server(e).into_response(),
            Out::Done {
                index,
                stop,
                prompt_tokens,
                completion_tokens,
            } => {
                reasons[index] = Some(finish_reason(stop));
                tally.add(&shape, index, prompt_tokens, completion_tokens);
                done += 1;
                if done == shape.choices {
                    let choices = text
                        .into_iter()
                        .zip(tokens)
                        .zip(reasons)
                        .enumerate()
                        .map(|(i, ((t, lp), r))| {
                            E::choice(t, r.unwrap_or("stop"))
                                .at(i)
                                .with_logprobs(shape.logprobs.then(|| E::logprobs(&lp, 0)))
                        })
                        .collect();
                    return Json(Body {
                        choices,
                        created: now_s(),
                        id,
                        model,
                        object: E::OBJECT,
                        usage: Some(tally.usage()),
                    })
                    .into_response();
                }
            }
        }
    }
    ApiError::server("generation ended without a result").into_response()
}

/// Streams the generation as server-sent events: the endpoint's opening chunk for each
/// choice if it has one, a chunk per piece, a chunk with each choice's finish reason,
/// with `stream_options.include_usage` a last chunk with no choices and the usage,
/// then `[DONE]`. An error after the 200 went out is an error event, then `[DONE]`.
pub fn sse<E: Endpoint>(
    rx: UnboundedReceiver<Out>,
    shape: Shape,
    id: String,
    model: String,
) -> impl Stream<Item = Result<Event, Infallible>> {
    let opening: VecDeque<Event> = match E::opening() {
        Some(_) => (0..shape.choices)
            .filter_map(|i| E::opening().map(|c| c.at(i)))
            .map(|c| chunk::<E, _>(&id, &model, now_s(), vec![c], None))
            .collect(),
        None => VecDeque::new(),
    };
    let state = Streaming {
        rx,
        shape,
        created: now_s(),
        id,
        model,
        queued: opening,
        offsets: vec![0; shape.choices],
        done: 0,
        tally: Tally::default(),
        ended: false,
    };
    // Dropping this stream (the client went away) drops `rx`, which ends the choices'
    // tasks and so cancels them in the engine.
    futures::stream::unfold(state, |mut s| async move {
        let event = s.next::<E>().await?;
        Some((Ok(event), s))
    })
}

struct Streaming {
    rx: UnboundedReceiver<Out>,
    shape: Shape,
    created: u64,
    id: String,
    model: String,
    /// Events to send before reading more.
    queued: VecDeque<Event>,
    /// Characters of each choice's text sent so far (completions' `text_offset`).
    offsets: Vec<usize>,
    done: usize,
    tally: Tally,
    ended: bool,
}

fn chunk<E: Endpoint, C: Serialize>(
    id: &str,
    model: &str,
    created: u64,
    choices: Vec<C>,
    usage: Option<Usage>,
) -> Event {
    let body = Body {
        choices,
        created,
        id,
        model,
        object: E::CHUNK_OBJECT,
        usage,
    };
    Event::default().data(serde_json::to_string(&body).expect("serializable"))
}

impl Streaming {
    async fn next<E: Endpoint>(&mut self) -> Option<Event> {
        if let Some(e) = self.queued.pop_front() {
            return Some(e);
        }
        if self.ended {
            return None;
        }
        let event =
            |s: &Self, c: E::Chunk| chunk::<E, _>(&s.id, &s.model, s.created, vec![c], None);
        match self.rx.recv().await {
            Some(Out::Piece {
                index,
                text,
                logprobs,
            }) => {
                let lp = self
                    .shape
                    .logprobs
                    .then(|| E::logprobs(&logprobs, self.offsets[index]));
                self.offsets[index] += text.chars().count();
                Some(event(self, E::piece(text).at(index).with_logprobs(lp)))
            }
            Some(Out::Done {
                index,
                stop,
                prompt_tokens,
                completion_tokens,
            }) => {
                self.tally
                    .add(&self.shape, index, prompt_tokens, completion_tokens);
                self.done += 1;
                let e = event(self, E::finish(finish_reason(stop)).at(index));
                if self.done == self.shape.choices {
                    if self.shape.include_usage {
                        let usage = Some(self.tally.usage());
                        let c: Vec<E::Chunk> = Vec::new();
                        self.queued.push_back(chunk::<E, _>(
                            &self.id,
                            &self.model,
                            self.created,
                            c,
                            usage,
                        ));
                    }
                    self.queued.push_back(Event::default().data("[DONE]"));
                    self.ended = true;
                }
                Some(e)
            }
            Some(Out::Error(e)) => {
                self.queued.push_back(Event::default().data("[DONE]"));
                self.ended = true;
                Some(Event::default().data(stream_error(&e)))
            }
            None => {
                self.queued.push_back(Event::default().data("[DONE]"));
                self.ended = true;
                Some(Event::default().data(stream_error("generation stopped")))
            }
        }
    }
}
