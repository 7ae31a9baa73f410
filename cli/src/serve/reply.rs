//! Answers in eKuiper's shapes: plain text for a success that returns no object, and
//! `{"error": CODE, "message": "..."}` for a failure, with eKuiper's codes (1000: anything the
//! request got wrong, 1002: not found) and statuses (400, 404; 413 for a body over the limit).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// eKuiper's code for an error without a more specific one.
pub const UNDEFINED: u32 = 1000;
/// eKuiper's code for "not found".
pub const NOT_FOUND: u32 = 1002;

/// A failed request: its status, eKuiper's error code, and a message that names the problem.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: u32,
    pub message: String,
}

#[derive(Serialize)]
struct Body<'a> {
    error: u32,
    message: &'a str,
}

impl ApiError {
    /// 400, code 1000: `{context}: {detail}`, as eKuiper prefixes what failed with the command.
    pub fn bad_request(context: &str, detail: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            code: UNDEFINED,
            message: format!("{context}: {detail}"),
        }
    }

    /// 404, code 1002: `{context}: not found`.
    pub fn not_found(context: &str) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            code: NOT_FOUND,
            message: format!("{context}: not found"),
        }
    }

    /// 500, code 1000: the server itself failed (a worker task, the plugins directory).
    pub fn internal(context: &str, detail: impl std::fmt::Display) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            code: UNDEFINED,
            message: format!("{context}: {detail}"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::error!("{}", self.message);
        } else {
            tracing::info!("refused: {}", self.message);
        }
        let body = Body {
            error: self.code,
            message: &self.message,
        };
        (self.status, Json(body)).into_response()
    }
}

/// The request body, or the error that says it was too large or could not be read.
pub fn body(
    bytes: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
    limit: usize,
) -> Result<axum::body::Bytes, ApiError> {
    bytes.map_err(|rejection| {
        let status = rejection.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!("request body too large: the limit is {limit} bytes")
        } else {
            format!("cannot read the request body: {}", rejection.body_text())
        };
        ApiError {
            status,
            code: UNDEFINED,
            message,
        }
    })
}

/// Decodes a JSON body into `T`, failing as eKuiper does: 400 with `{what}` and serde's
/// explanation (which names a missing field or the bad position).
pub fn json<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request(&format!("Invalid body: Error decoding the {what}"), e))
}
