//! `zoo serve` at the edge of a model's context, on the conformance fixture whose
//! context is 64 tokens: a request that leaves `max_tokens` out gets the default
//! shortened to the room its prompt leaves (it was refused with a 400 naming a
//! `max_tokens` the client never sent); a `max_tokens` sent that does not fit is
//! refused by name; a prompt that fills the context is refused.

use std::process::Child;
use std::time::Duration;

use serde_json::Value;
use zoo_tests::http::{request, wait_ready};

#[test]
fn the_default_max_tokens_fits_the_room_left_and_a_sent_one_must_fit() {
    let model = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/quantized-llama/q4_k_m/model.gguf");
    let (server, base) =
        zoo_tests::http::start_serve(env!("CARGO_BIN_EXE_zoo"), &["--no-warmup"], &model);
    let _server = Killed(server);
    wait_ready(&base, Duration::from_secs(120));
    let post = |body: Value| {
        let (status, text) =
            request(&base, "POST", "/v1/completions", Some(&body.to_string())).unwrap();
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    // How many tokens a prompt of `words` words has, and the context.
    let (status, probe) = post(serde_json::json!({"prompt": "a b c", "max_tokens": 1}));
    assert_eq!(status, 200, "{probe}");
    let context = 64;
    let prompt_of = |tokens: usize| {
        // Each " a" after the first word is one token of this vocabulary or more;
        // grow the text until the server reports the wanted length.
        (1..context * 4)
            .map(|w| vec!["a"; w].join(" "))
            .find(|p| {
                let (_, r) = post(serde_json::json!({"prompt": p, "max_tokens": 1}));
                r["usage"]["prompt_tokens"].as_u64().unwrap_or(u64::MAX) as usize >= tokens
            })
            .unwrap()
    };
    let near = prompt_of(context - 6);
    let (status, r) = post(serde_json::json!({"prompt": near, "ignore_eos": true}));
    assert_eq!(status, 200, "{r}");
    let used = r["usage"]["prompt_tokens"].as_u64().unwrap() as usize;
    let made = r["usage"]["completion_tokens"].as_u64().unwrap() as usize;
    assert!(used < context, "{r}");
    assert_eq!(made, context - used, "the default fills the room left: {r}");
    assert_eq!(r["choices"][0]["finish_reason"], "length", "{r}");
    // Sent, the same number past the room is refused, naming it.
    let (status, r) = post(serde_json::json!({"prompt": near, "max_tokens": context - used + 1}));
    assert_eq!(
        (status, r["error"]["param"].as_str()),
        (400, Some("max_tokens")),
        "{r}"
    );
    // A prompt that fills the context leaves no room for any answer.
    let full = prompt_of(context);
    let (status, r) = post(serde_json::json!({"prompt": full}));
    assert_eq!(status, 400, "{r}");
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("fills the model's context"),
        "{r}"
    );
}

/// The server, killed when the test ends, failed or not (a server left running would
/// keep the test's output open).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
