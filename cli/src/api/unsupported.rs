//! The OpenAI fields `zoo serve` does not implement and refuses when they ask for
//! something: a 400 naming the field, rather than an answer that silently ignores it
//! (`echo: true` answered without the prompt, a `logit_bias` not applied, tools never
//! called). Their neutral values (`null`, `false`, `1`, empty) are accepted, as clients
//! send them by default; fields OpenAI does not define are ignored (see [`super::request`]).

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;
use super::params::Api;

/// The fields, as sent (absent is `None`).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Unsupported {
    echo: Option<Value>,
    best_of: Option<Value>,
    suffix: Option<Value>,
    logit_bias: Option<Value>,
    response_format: Option<Value>,
    tools: Option<Value>,
    tool_choice: Option<Value>,
    functions: Option<Value>,
    function_call: Option<Value>,
    modalities: Option<Value>,
    audio: Option<Value>,
    prediction: Option<Value>,
}

impl Unsupported {
    /// The first field of `api` that asks for what zoo does not do.
    pub fn check(&self, api: Api) -> Result<(), ApiError> {
        let empty = |v: &Value| match v {
            Value::Null => true,
            Value::String(s) => s.is_empty(),
            Value::Array(a) => a.is_empty(),
            Value::Object(o) => o.is_empty(),
            _ => false,
        };
        let none_or_auto = |v: &Value| v.is_null() || v == "none" || v == "auto";
        let logit_bias = (
            "logit_bias",
            &self.logit_bias,
            self.logit_bias.iter().all(empty),
            "logits are not biased",
        );
        let fields: Vec<(&'static str, &Option<Value>, bool, &str)> = match api {
            Api::Completions => vec![
                (
                    "echo",
                    &self.echo,
                    self.echo.iter().all(|v| v.is_null() || v == false),
                    "the answer never repeats the prompt",
                ),
                (
                    "best_of",
                    &self.best_of,
                    self.best_of.iter().all(|v| v.is_null() || v == 1),
                    "ask for several choices with `n`",
                ),
                (
                    "suffix",
                    &self.suffix,
                    self.suffix.iter().all(empty),
                    "there is no fill-in-the-middle",
                ),
                logit_bias,
            ],
            Api::Chat => vec![
                logit_bias,
                (
                    "response_format",
                    &self.response_format,
                    self.response_format
                        .iter()
                        .all(|v| v.is_null() || v.get("type").is_some_and(|t| t == "text")),
                    "only free text (`{\"type\": \"text\"}`) is answered",
                ),
                (
                    "tools",
                    &self.tools,
                    self.tools.iter().all(empty),
                    "there is no tool calling",
                ),
                (
                    "tool_choice",
                    &self.tool_choice,
                    self.tool_choice.iter().all(none_or_auto),
                    "there is no tool calling",
                ),
                (
                    "functions",
                    &self.functions,
                    self.functions.iter().all(empty),
                    "there is no function calling",
                ),
                (
                    "function_call",
                    &self.function_call,
                    self.function_call.iter().all(none_or_auto),
                    "there is no function calling",
                ),
                (
                    "modalities",
                    &self.modalities,
                    self.modalities
                        .iter()
                        .all(|v| v.is_null() || *v == serde_json::json!(["text"])),
                    "only text is answered",
                ),
                (
                    "audio",
                    &self.audio,
                    self.audio.iter().all(Value::is_null),
                    "only text is answered",
                ),
                (
                    "prediction",
                    &self.prediction,
                    self.prediction.iter().all(Value::is_null),
                    "there is no predicted-output decoding",
                ),
            ],
        };
        match fields.into_iter().find(|(_, _, neutral, _)| !neutral) {
            None => Ok(()),
            Some((name, value, _, why)) => Err(ApiError::bad_request(
                format!(
                    "`{name}` {} is not supported by zoo serve ({why}): leave it out",
                    value.as_ref().map_or(String::new(), compact)
                ),
                Some(name),
            )),
        }
    }
}

/// A value as sent, cut short if long.
fn compact(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(40) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(body: Value, api: Api) -> Result<(), (String, Option<&'static str>)> {
        serde_json::from_value::<Unsupported>(body)
            .unwrap()
            .check(api)
            .map_err(|e| (e.message, e.param))
    }

    #[test]
    fn neutral_values_pass_and_the_rest_is_refused_by_name() {
        let neutral = json!({"echo": false, "best_of": 1, "suffix": "", "logit_bias": {},
            "response_format": {"type": "text"}, "tools": [], "tool_choice": "none",
            "functions": null, "function_call": "auto", "modalities": ["text"],
            "audio": null, "prediction": null, "model": "m", "user": "u"});
        assert_eq!(check(neutral.clone(), Api::Completions), Ok(()));
        assert_eq!(check(neutral, Api::Chat), Ok(()));
        for (body, api, field) in [
            (json!({"echo": true}), Api::Completions, "echo"),
            (json!({"best_of": 3}), Api::Completions, "best_of"),
            (json!({"suffix": "}"}), Api::Completions, "suffix"),
            (
                json!({"logit_bias": {"50256": -100}}),
                Api::Completions,
                "logit_bias",
            ),
            (json!({"logit_bias": {"1": 5}}), Api::Chat, "logit_bias"),
            (
                json!({"response_format": {"type": "json_object"}}),
                Api::Chat,
                "response_format",
            ),
            (json!({"tools": [{"type": "function"}]}), Api::Chat, "tools"),
            (json!({"tool_choice": "required"}), Api::Chat, "tool_choice"),
            (
                json!({"functions": [{"name": "f"}]}),
                Api::Chat,
                "functions",
            ),
            (
                json!({"function_call": {"name": "f"}}),
                Api::Chat,
                "function_call",
            ),
            (
                json!({"modalities": ["text", "audio"]}),
                Api::Chat,
                "modalities",
            ),
            (json!({"audio": {"voice": "alloy"}}), Api::Chat, "audio"),
            (
                json!({"prediction": {"type": "content"}}),
                Api::Chat,
                "prediction",
            ),
        ] {
            let (message, param) = check(body.clone(), api).expect_err(&body.to_string());
            assert_eq!(param, Some(field), "{body}");
            assert!(
                message.starts_with(&format!("`{field}` ")) && message.contains("not supported"),
                "{message}"
            );
        }
        // A field of the other API is not this one's: chat has no `echo`.
        assert_eq!(check(json!({"echo": true}), Api::Chat), Ok(()));
    }
}
