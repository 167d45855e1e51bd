//! Fuzz target `server_request`: the bytes as the JSON body of both generation
//! endpoints of `zoo serve` (`/v1/completions`, `/v1/chat/completions`), parsed and
//! validated by the server's own code (`zoo_cli::api`) against models of a few context
//! lengths.
//!
//! Beyond "no panic", it checks what the server promises: a refusal is a 400 with a
//! message, and an accepted request is within the bounds validation states (prompts,
//! messages and roles, a `max_tokens` sent inside the context, `n`, `temperature`, `top_p`,
//! `stop`).

use zoo_cli::api::error::ApiError;
use zoo_cli::api::request::{parse, ChatRequest, CompletionRequest, Generation};

/// Context lengths the bodies are validated against: tiny, usual, long.
const CONTEXTS: [usize; 3] = [8, 2048, 131_072];

/// One input.
pub fn run(data: &[u8]) {
    for ctx in CONTEXTS {
        match parse::<CompletionRequest>(data).and_then(|r| r.validate(ctx)) {
            Ok(g) => {
                assert!(!g.prompt.is_empty() && g.prompt.len() <= 16, "{g:?}");
                assert!(g.prompt.iter().all(|p| !p.is_empty()), "{g:?}");
                assert!(g.logprobs.is_none_or(|k| k <= 5), "{g:?}");
                accepted(&g, ctx);
            }
            Err(e) => refused(&e),
        }
        match parse::<ChatRequest>(data).and_then(|r| r.validate(ctx)) {
            Ok(g) => {
                assert!(!g.prompt.is_empty(), "{g:?}");
                let roles = ["system", "user", "assistant", "developer"];
                assert!(
                    g.prompt.iter().all(|m| roles.contains(&m.role.as_str())),
                    "{g:?}"
                );
                assert!(g.logprobs.is_none_or(|k| k <= 20), "{g:?}");
                accepted(&g, ctx);
            }
            Err(e) => refused(&e),
        }
    }
}

/// What every accepted request holds to.
fn accepted<P: std::fmt::Debug>(g: &Generation<P>, ctx: usize) {
    let o = &g.options;
    let s = &o.sampling;
    // A `max_tokens` sent must fit the context; the default is shortened to the room
    // each prompt leaves when the server submits it (serve/worker.rs).
    assert!(
        o.max_tokens >= 1 && (o.max_tokens < ctx || !g.max_tokens_sent),
        "{g:?}"
    );
    assert!((1..=8).contains(&g.n), "{g:?}");
    assert!((0.0..=2.0).contains(&s.temperature), "{g:?}");
    assert!(s.top_p.is_none_or(|p| p > 0.0 && p <= 1.0), "{g:?}");
    assert!(s.min_p.is_none_or(|p| (0.0..=1.0).contains(&p)), "{g:?}");
    assert!(s.top_k.is_none_or(|k| k >= 1), "{g:?}");
    assert!(o.stop.len() <= 4, "{g:?}");
    for p in [s.presence_penalty, s.frequency_penalty] {
        assert!((-2.0..=2.0).contains(&p), "{g:?}");
    }
}

/// What every refusal holds to: a 400 `invalid_request_error` that says something.
fn refused(e: &ApiError) {
    assert_eq!(e.status.as_u16(), 400, "{e:?}");
    assert_eq!(e.kind, "invalid_request_error", "{e:?}");
    assert!(!e.message.is_empty(), "{e:?}");
}
