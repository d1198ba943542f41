//! Data API errors as the AWS SDKs read them: HTTP status plus a JSON body with `__type` and
//! `message` (awsJson1_1).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// One error response of the Data API.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ApiError {
    pub kind: &'static str,
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn validation(message: impl Into<String>) -> Self {
        ApiError {
            kind: "ValidationException",
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    /// Unknown statement id. The Smithy model says 404, the API reference 400; the SDKs decode
    /// by `__type`, and the live service answers 400.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError {
            kind: "ResourceNotFoundException",
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub fn throttling() -> Self {
        ApiError {
            kind: "ThrottlingException",
            status: StatusCode::BAD_REQUEST,
            message: "Rate exceeded".into(),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ApiError {
            kind: "InternalServerException",
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }

    pub fn unknown_operation(target: &str) -> Self {
        ApiError {
            kind: "UnknownOperationException",
            status: StatusCode::BAD_REQUEST,
            message: format!("unknown operation {target:?}"),
        }
    }

    pub fn serialization(message: impl Into<String>) -> Self {
        ApiError {
            kind: "SerializationException",
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "__type": self.kind, "message": self.message }).to_string();
        let mut resp = (self.status, body).into_response();
        let headers = resp.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-amz-json-1.1"),
        );
        headers.insert("x-amzn-errortype", HeaderValue::from_static(self.kind));
        resp
    }
}
