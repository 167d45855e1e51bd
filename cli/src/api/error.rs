//! OpenAI error responses: a status and `{"error": {"code", "message", "param",
//! "type"}}`, or, once a stream has begun, an error event.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;

/// An OpenAI error: a status and `{"error": {"code", "message", "param", "type"}}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    /// The `type` field: `invalid_request_error`, `rate_limit_error`, `server_error`.
    pub kind: &'static str,
    pub message: String,
    /// The request field at fault, if one is.
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            kind,
            message: message.into(),
            param: None,
        }
    }

    /// A 400 `invalid_request_error`.
    pub fn bad_request(message: impl Into<String>, param: Option<&'static str>) -> Self {
        Self {
            param,
            ..Self::new(StatusCode::BAD_REQUEST, "invalid_request_error", message)
        }
    }

    /// A 500 `server_error`.
    pub fn server(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "server_error", message)
    }

    fn body(&self) -> ErrorBody<ErrorObject<'_>> {
        ErrorBody {
            error: ErrorObject {
                code: (),
                message: &self.message,
                param: self.param,
                r#type: self.kind,
            },
        }
    }
}

#[derive(Serialize)]
struct ErrorBody<E> {
    error: E,
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    /// Always null.
    code: (),
    message: &'a str,
    param: Option<&'a str>,
    r#type: &'a str,
}

/// An error in the middle of a stream, after the 200 status went out.
#[derive(Serialize)]
struct StreamError<'a> {
    message: &'a str,
    r#type: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}

/// The data of the event that ends a stream with an error (`server_error`).
pub fn stream_error(message: &str) -> String {
    let error = StreamError {
        message,
        r#type: "server_error",
    };
    serde_json::to_string(&ErrorBody { error }).expect("serializable")
}

#[cfg(test)]
mod tests {
    //! Against the `json!` the server used to build errors with.

    use serde_json::json;

    use super::*;

    fn same(ours: impl Serialize, theirs: serde_json::Value) {
        assert_eq!(serde_json::to_string(&ours).unwrap(), theirs.to_string());
    }

    #[test]
    fn bodies_are_unchanged() {
        let e = ApiError::bad_request("`top_p` must be in (0, 1]", Some("top_p"));
        same(
            e.body(),
            json!({"error": {"message": "`top_p` must be in (0, 1]", "type": "invalid_request_error", "param": "top_p", "code": null}}),
        );
        let e = ApiError::server("boom");
        same(
            e.body(),
            json!({"error": {"message": "boom", "type": "server_error", "param": null, "code": null}}),
        );
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(
            stream_error("generation stopped"),
            json!({"error": {"message": "generation stopped", "type": "server_error"}}).to_string()
        );
    }
}
