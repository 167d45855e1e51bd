//! The fields both generation endpoints share (sampling, `max_tokens`, `stop`,
//! `stream`) and their validation into [`GenerateOptions`].
//!
//! Each field is checked in a fixed order with its own message and a 400 naming it;
//! the first refusal wins. `presence_penalty` and `frequency_penalty` are accepted
//! only as 0, and `n` only as 1.

use serde::Deserialize;
use zoo::{GenerateOptions, SamplingParams};

use super::error::ApiError;
use super::request::{Field, Generation};

/// Without `max_tokens`.
const DEFAULT_MAX_TOKENS: usize = 256;
/// Without `seed`.
const DEFAULT_SEED: u64 = 299792458;

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
    seed: Field<f64>,
    stop: Field<Stop>,
    stream: Field<bool>,
}

impl Params {
    /// Checks the fields against a model with a context of `ctx` tokens.
    pub fn validate(self, ctx: usize) -> Result<Generation<()>, ApiError> {
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
        for (key, field) in [
            ("presence_penalty", self.presence_penalty),
            ("frequency_penalty", self.frequency_penalty),
        ] {
            if let Some(v) = field.number(key)? {
                if !(-2.0..=2.0).contains(&v) {
                    return Err(ApiError::bad_request(
                        format!("`{key}` must be between -2 and 2"),
                        Some(key),
                    ));
                }
                if v != 0.0 {
                    return Err(ApiError::bad_request(
                        format!("`{key}` other than 0 is not supported (candle's logits processor has a repeat penalty only)"),
                        Some(key),
                    ));
                }
            }
        }
        let max_tokens = self.max_tokens.number("max_tokens")?;
        let max_completion_tokens = self.max_completion_tokens.number("max_completion_tokens")?;
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
        if max_tokens >= ctx {
            return Err(ApiError::bad_request(
                format!(
                    "`max_tokens` {max_tokens} does not fit the model's context of {ctx} tokens"
                ),
                Some("max_tokens"),
            ));
        }
        if self.n.number("n")?.is_some_and(|n| n != 1.0) {
            return Err(ApiError::bad_request(
                "only `n` = 1 is supported",
                Some("n"),
            ));
        }
        let seed = match self.seed.number("seed")? {
            None => DEFAULT_SEED,
            Some(s) if s >= 0.0 && s.fract() == 0.0 => s as u64,
            Some(_) => {
                return Err(ApiError::bad_request(
                    "`seed` must be a non-negative integer",
                    Some("seed"),
                ))
            }
        };
        let stop_error = "`stop` must be a string or up to 4 strings";
        let stop = match self.stop.get("stop", stop_error)? {
            None => Vec::new(),
            Some(Stop::One(s)) => vec![s],
            Some(Stop::Many(v)) if v.len() <= 4 => v,
            Some(Stop::Many(_)) => return Err(ApiError::bad_request(stop_error, Some("stop"))),
        };
        let stream = self.stream.get("stream", "`stream` must be a boolean")?;
        Ok(Generation {
            prompt: (),
            options: GenerateOptions {
                max_tokens,
                sampling: SamplingParams {
                    temperature,
                    top_p,
                    seed,
                    ..Default::default()
                },
                skip_special: true,
                stop,
            },
            stream: stream.unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::serve::request::parse;

    fn params(body: Value) -> Result<Generation<()>, ApiError> {
        parse::<Params>(body.to_string().as_bytes())?.validate(2048)
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

    #[test]
    fn given_fields_are_used() {
        let g = params(
            json!({"temperature": 0, "top_p": 0.5, "max_tokens": 8.0, "seed": 7,
            "stop": ["a", "b"], "stream": true, "n": 1, "presence_penalty": 0,
            "frequency_penalty": null}),
        )
        .unwrap();
        let s = &g.options.sampling;
        assert_eq!((s.temperature, s.top_p, s.seed), (0.0, Some(0.5), 7));
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
        let penalty =
            "other than 0 is not supported (candle's logits processor has a repeat penalty only)";
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
                json!(0.5),
                format!("`frequency_penalty` {penalty}"),
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
            ("n", json!(2), "only `n` = 1 is supported".into()),
            (
                "seed",
                json!(-1),
                "`seed` must be a non-negative integer".into(),
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
    fn the_first_refusal_in_a_fixed_order_wins() {
        let (m, _) = refusal(json!({"stream": 1, "top_p": "x", "temperature": 9}));
        assert_eq!(m, "`temperature` must be between 0 and 2");
    }
}
