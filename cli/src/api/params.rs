//! The fields both generation endpoints share (sampling, `max_tokens`, `stop`, `n`,
//! `logprobs`, `stream`, `stream_options`) and their validation into
//! [`GenerateOptions`] and the rest of a [`Generation`].
//!
//! The fields OpenAI defines and zoo does not implement are looked at first
//! ([`super::unsupported`]). Each field is checked in a fixed order with its own
//! message and a 400 naming it;
//! the first refusal wins. `logprobs` is an integer (0-5 alternatives) on
//! completions and a boolean with `top_logprobs` (0-20) on chat completions, as in
//! OpenAI's API.

use serde::Deserialize;
use zoo::{GenerateOptions, SamplingParams};

use super::error::ApiError;
use super::request::{Field, Generation};
use super::unsupported::Unsupported;

/// Without `max_tokens`.
const DEFAULT_MAX_TOKENS: usize = 256;
/// Without `seed`.
const DEFAULT_SEED: u64 = 299792458;
/// Most choices per prompt (`n`).
const MAX_N: usize = 8;

/// Which API the fields came with (they differ in `logprobs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    Completions,
    Chat,
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StreamOptions {
    include_usage: Field<bool>,
}

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Stop {
    One(String),
    Many(Vec<String>),
}

/// The fields both endpoints share. Integers are read as numbers and checked, so
/// `"max_tokens": 8.0` is 8.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Params {
    temperature: Field<f64>,
    top_p: Field<f64>,
    presence_penalty: Field<f64>,
    frequency_penalty: Field<f64>,
    max_tokens: Field<f64>,
    /// The newer name of `max_tokens`; `max_tokens` wins if both are given.
    max_completion_tokens: Field<f64>,
    n: Field<f64>,
    /// A JSON number read as u64 where it is one, so that seeds past 2^53 stay exact.
    seed: Field<serde_json::Number>,
    stop: Field<Stop>,
    stream: Field<bool>,
    top_k: Field<f64>,
    min_p: Field<f64>,
    logprobs: Field<serde_json::Value>,
    top_logprobs: Field<f64>,
    stream_options: Field<StreamOptions>,
    /// Not OpenAI's: go on past the end-of-sequence token (llama.cpp's and vLLM's
    /// `ignore_eos`, for benchmarks).
    ignore_eos: Field<bool>,
    /// OpenAI's fields that zoo refuses when they ask for something.
    #[serde(flatten)]
    unsupported: Unsupported,
}

/// A non-negative integer field at most `max`.
fn count(
    field: Field<f64>,
    param: &'static str,
    min: usize,
    max: usize,
) -> Result<Option<usize>, ApiError> {
    match field.number(param)? {
        None => Ok(None),
        Some(v) if v.fract() == 0.0 && v >= min as f64 && v <= max as f64 => Ok(Some(v as usize)),
        Some(_) => Err(ApiError::bad_request(
            format!("`{param}` must be an integer from {min} to {max}"),
            Some(param),
        )),
    }
}

impl Params {
    /// Checks the fields against a model with a context of `ctx` tokens.
    pub fn validate(self, ctx: usize, api: Api) -> Result<Generation<()>, ApiError> {
        self.unsupported.check(api)?;
        let temperature = self.temperature.number("temperature")?.unwrap_or(1.0);
        if !(0.0..=2.0).contains(&temperature) {
            return Err(ApiError::bad_request(
                "`temperature` must be between 0 and 2",
                Some("temperature"),
            ));
        }
        let top_p = self.top_p.number("top_p")?;
        if top_p.is_some_and(|p| !(p > 0.0 && p <= 1.0)) {
            return Err(ApiError::bad_request(
                "`top_p` must be in (0, 1]",
                Some("top_p"),
            ));
        }
        let top_k = count(self.top_k, "top_k", 1, usize::MAX >> 12)?;
        let min_p = self.min_p.number("min_p")?;
        if min_p.is_some_and(|p| !(0.0..=1.0).contains(&p)) {
            return Err(ApiError::bad_request(
                "`min_p` must be in [0, 1]",
                Some("min_p"),
            ));
        }
        let mut penalties = [0f32; 2];
        for (i, (key, field)) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ]
        .into_iter()
        .enumerate()
        {
            if let Some(v) = field.number(key)? {
                if !(-2.0..=2.0).contains(&v) {
                    return Err(ApiError::bad_request(
                        format!("`{key}` must be between -2 and 2"),
                        Some(key),
                    ));
                }
                penalties[i] = v as f32;
            }
        }
        let max_tokens = self.max_tokens.number("max_tokens")?;
        let max_completion_tokens = self.max_completion_tokens.number("max_completion_tokens")?;
        let max_tokens_sent = max_tokens.or(max_completion_tokens).is_some();
        let max_tokens = match max_tokens.or(max_completion_tokens) {
            None => DEFAULT_MAX_TOKENS,
            Some(m) if m >= 1.0 && m.fract() == 0.0 => m as usize,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "`max_tokens` must be a positive integer",
                    Some("max_tokens"),
                ))
            }
        };
        // A default too large for a small model's context is shortened per prompt later.
        if max_tokens_sent && max_tokens >= ctx {
            return Err(ApiError::bad_request(
                format!(
                    "`max_tokens` {max_tokens} does not fit the model's context of {ctx} tokens"
                ),
                Some("max_tokens"),
            ));
        }
        let n = count(self.n, "n", 1, MAX_N)?.unwrap_or(1);
        let seed = match self.seed.get("seed", "`seed` must be a number")? {
            None => DEFAULT_SEED,
            // An integer, or one written as a float (`7.0`) below 2^64: a larger float
            // would saturate to u64::MAX, silently.
            Some(s) => s
                .as_u64()
                .or_else(|| {
                    s.as_f64()
                        .filter(|f| {
                            *f >= 0.0 && f.fract() == 0.0 && *f < 18_446_744_073_709_551_616.0
                        })
                        .map(|f| f as u64)
                })
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "`seed` must be a non-negative integer below 2^64",
                        Some("seed"),
                    )
                })?,
        };
        let stop_error = "`stop` must be a string or up to 4 strings";
        let stop = match self.stop.get("stop", stop_error)? {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) if v.len() <= 4 => v,
            Some(Stop::Many(_)) => return Err(ApiError::bad_request(stop_error, Some("stop"))),
        };
        let stream = self.stream.get("stream", "`stream` must be a boolean")?;
        let logprobs = match api {
            Api::Completions => {
                let m = "`logprobs` must be an integer from 0 to 5";
                match self.logprobs.get("logprobs", m)? {
                    None => None,
                    Some(v) => match v.as_f64() {
                        Some(k) if k.fract() == 0.0 && (0.0..=5.0).contains(&k) => Some(k as usize),
                        _ => return Err(ApiError::bad_request(m, Some("logprobs"))),
                    },
                }
            }
            Api::Chat => {
                let m = "`logprobs` must be a boolean";
                let on = match self.logprobs.get("logprobs", m)? {
                    None => false,
                    Some(serde_json::Value::Bool(b)) => b,
                    Some(_) => return Err(ApiError::bad_request(m, Some("logprobs"))),
                };
                let top = count(self.top_logprobs, "top_logprobs", 0, 20)?;
                if top.is_some() && !on {
                    return Err(ApiError::bad_request(
                        "`top_logprobs` needs `logprobs`: true",
                        Some("top_logprobs"),
                    ));
                }
                on.then_some(top.unwrap_or(0))
            }
        };
        let options = self
            .stream_options
            .get("stream_options", "`stream_options` must be an object")?;
        if options.is_some() && stream != Some(true) {
            return Err(ApiError::bad_request(
                "`stream_options` needs `stream`: true",
                Some("stream_options"),
            ));
        }
        let options = options.unwrap_or_default();
        let include_usage = options
            .include_usage
            .get(
                "stream_options",
                "`stream_options.include_usage` must be a boolean",
            )?
            .unwrap_or(false);
        let ignore_eos = self
            .ignore_eos
            .get("ignore_eos", "`ignore_eos` must be a boolean")?
            .unwrap_or(false);
        Ok(Generation {
            prompt: (),
            ignore_eos,
            options: GenerateOptions {
                max_tokens,
                sampling: SamplingParams {
                    temperature,
                    top_p,
                    top_k,
                    min_p,
                    presence_penalty: penalties[0],
                    frequency_penalty: penalties[1],
                    seed,
                    ..Default::default()
                },
                skip_special: true,
                stop,
            },
            stream: stream.unwrap_or(false),
            n,
            logprobs,
            include_usage,
            max_tokens_sent,
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::api::request::parse;

    fn params(body: Value) -> Result<Generation<()>, ApiError> {
        parse::<Params>(body.to_string().as_bytes())?.validate(2048, Api::Completions)
    }

    /// The message and param of the 400 a body gets.
    fn refusal(body: Value) -> (String, Option<&'static str>) {
        let e = params(body).expect_err("accepted");
        assert_eq!(e.status, axum::http::StatusCode::BAD_REQUEST);
        (e.message, e.param)
    }

    #[test]
    fn defaults() {
        let g = params(json!({"model": "zoo", "user": "u", "temperature": null})).unwrap();
        assert!(!g.stream);
        let o = g.options;
        assert_eq!(
            (o.max_tokens, o.sampling.temperature, o.sampling.top_p),
            (256, 1.0, None)
        );
        assert_eq!(o.sampling.seed, 299792458);
        assert!(o.skip_special && o.stop.is_empty());
    }

    /// Seeds past 2^53 (where an f64 loses integers) stay exact, up to u64::MAX.
    #[test]
    fn large_seeds_are_exact() {
        for seed in [9_007_199_254_740_993u64, u64::MAX] {
            let g = params(json!({ "seed": seed })).unwrap();
            assert_eq!(g.options.sampling.seed, seed);
        }
        assert_eq!(
            params(json!({"seed": 7.0})).unwrap().options.sampling.seed,
            7
        );
    }

    #[test]
    fn given_fields_are_used() {
        let g = params(
            json!({"temperature": 0, "top_p": 0.5, "max_tokens": 8.0, "seed": 7,
            "stop": ["a", "b"], "stream": true, "n": 2, "presence_penalty": 0.5,
            "frequency_penalty": null, "top_k": 40, "min_p": 0.05, "logprobs": 2,
            "stream_options": {"include_usage": true}}),
        )
        .unwrap();
        let s = &g.options.sampling;
        assert_eq!((s.temperature, s.top_p, s.seed), (0.0, Some(0.5), 7));
        assert_eq!(
            (s.top_k, s.min_p, s.presence_penalty),
            (Some(40), Some(0.05), 0.5)
        );
        assert_eq!((g.n, g.logprobs, g.include_usage), (2, Some(2), true));
        assert_eq!(
            (g.options.max_tokens, g.options.stop),
            (8, vec!["a".into(), "b".into()])
        );
        assert!(g.stream);
        let o = params(json!({"max_completion_tokens": 9, "stop": "x"}))
            .unwrap()
            .options;
        assert_eq!((o.max_tokens, o.stop), (9, vec!["x".into()]));
        let o = params(json!({"max_tokens": 3, "max_completion_tokens": 9}))
            .unwrap()
            .options;
        assert_eq!(o.max_tokens, 3);
    }

    #[test]
    fn each_field_is_refused_with_its_message() {
        let stop = "`stop` must be a string or up to 4 strings";
        let cases = [
            (
                "temperature",
                json!("hot"),
                "`temperature` must be a number".into(),
            ),
            (
                "temperature",
                json!(7),
                "`temperature` must be between 0 and 2".into(),
            ),
            ("top_p", json!(0), "`top_p` must be in (0, 1]".into()),
            ("top_p", json!([]), "`top_p` must be a number".into()),
            (
                "presence_penalty",
                json!(3),
                "`presence_penalty` must be between -2 and 2".into(),
            ),
            (
                "frequency_penalty",
                json!(-2.5),
                "`frequency_penalty` must be between -2 and 2".into(),
            ),
            (
                "top_k",
                json!(0),
                "`top_k` must be an integer from 1 to 4503599627370495".into(),
            ),
            ("min_p", json!(2), "`min_p` must be in [0, 1]".into()),
            (
                "logprobs",
                json!(6),
                "`logprobs` must be an integer from 0 to 5".into(),
            ),
            (
                "logprobs",
                json!(true),
                "`logprobs` must be an integer from 0 to 5".into(),
            ),
            (
                "max_tokens",
                json!(0),
                "`max_tokens` must be a positive integer".into(),
            ),
            (
                "max_tokens",
                json!(2048),
                "`max_tokens` 2048 does not fit the model's context of 2048 tokens".into(),
            ),
            ("n", json!(9), "`n` must be an integer from 1 to 8".into()),
            (
                "seed",
                json!(-1),
                "`seed` must be a non-negative integer below 2^64".into(),
            ),
            (
                "seed",
                json!(18_446_744_073_709_551_616.0f64),
                "`seed` must be a non-negative integer below 2^64".into(),
            ),
            ("seed", json!("7"), "`seed` must be a number".into()),
            (
                "stream_options",
                json!({"include_usage": true}),
                "`stream_options` needs `stream`: true".into(),
            ),
            ("stop", json!(["a", "b", "c", "d", "e"]), stop.into()),
            ("stop", json!([1]), stop.into()),
            ("stream", json!("yes"), "`stream` must be a boolean".into()),
        ];
        for (param, value, message) in cases {
            let body = json!({ param: value });
            assert_eq!(refusal(body.clone()), (message, Some(param)), "{body}");
        }
        let refused = refusal(json!({"max_completion_tokens": 1.5}));
        assert_eq!(refused.1, Some("max_tokens"));
        // Both names are read before either is used.
        let refused = refusal(json!({"max_tokens": 4, "max_completion_tokens": "x"}));
        assert_eq!(refused.1, Some("max_completion_tokens"));
    }

    #[test]
    fn chat_logprobs_are_a_boolean_with_top_logprobs() {
        let chat = |b: serde_json::Value| {
            parse::<Params>(b.to_string().as_bytes())?.validate(2048, Api::Chat)
        };
        assert_eq!(
            chat(json!({"logprobs": true, "top_logprobs": 3}))
                .unwrap()
                .logprobs,
            Some(3)
        );
        assert_eq!(chat(json!({"logprobs": false})).unwrap().logprobs, None);
        let e = chat(json!({"top_logprobs": 3})).unwrap_err();
        assert_eq!(e.param, Some("top_logprobs"));
        let e = chat(json!({"logprobs": 2})).unwrap_err();
        assert_eq!(e.message, "`logprobs` must be a boolean");
    }

    #[test]
    fn the_first_refusal_in_a_fixed_order_wins() {
        let (m, _) = refusal(json!({"stream": 1, "top_p": "x", "temperature": 9}));
        assert_eq!(m, "`temperature` must be between 0 and 2");
    }
}
