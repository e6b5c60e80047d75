//! The API's one error type: a client mistake is a 4xx with a JSON body, a store failure a
//! 503 that names no internals.

use axum::Json;
use std::time::Duration;

use axum::http::header::{RETRY_AFTER, WWW_AUTHENTICATE};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::body::ErrorBody;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("this method is not served here")]
    MethodNotAllowed,
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this store keeps no outbox")]
    NoOutbox,
    #[error("this process takes no events: `up` takes them, or `serve --brokers …` into Kafka")]
    NoIngest,
    /// A failure no resend can mend; its message names no internals.
    #[error("{0}")]
    Internal(String),
    #[error("store unavailable")]
    Store(#[from] StoreError),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0} streams are open already")]
    TooManyStreams(usize),
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// The caller's key sent more events than its rate allows: try again after the wait.
    #[error("the key `{key}` sends more than {per_second} events/s")]
    RateLimited {
        key: String,
        per_second: u32,
        retry_after: Duration,
    },
    /// The pipeline is behind or stopping (nothing was taken), or what was taken is not
    /// durable yet: try again after the wait.
    #[error("{message}")]
    Busy {
        message: String,
        retry_after: Duration,
    },
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found", self.to_string()),
            ApiError::MethodNotAllowed => (
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                self.to_string(),
            ),
            ApiError::Unauthorized(m) => (StatusCode::UNAUTHORIZED, "unauthorized", m.clone()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            ApiError::NoOutbox => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_outbox",
                self.to_string(),
            ),
            ApiError::NoIngest => (StatusCode::NOT_FOUND, "no_ingest", self.to_string()),
            ApiError::Internal(m) => (StatusCode::INTERNAL_SERVER_ERROR, "internal", m.clone()),
            ApiError::Store(e) => {
                tracing::error!(error = %e.report(), "store query failed");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "store_unavailable",
                    "the result store could not answer; try again".to_owned(),
                )
            }
            ApiError::Timeout(limit) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "timeout",
                format!("no answer within {} ms; try again", limit.as_millis()),
            ),
            ApiError::TooManyStreams(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!("{self}; try again later"),
            ),
            ApiError::TooLarge(m) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large", m.clone()),
            ApiError::UnsupportedMediaType(m) => (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                m.clone(),
            ),
            ApiError::RateLimited { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("{self}; try again after Retry-After seconds"),
            ),
            ApiError::Busy { message, .. } => (
                StatusCode::SERVICE_UNAVAILABLE,
                "busy",
                format!("{message}; try again after Retry-After seconds"),
            ),
        };
        let body = ErrorBody {
            error,
            message,
            status: status.as_u16(),
        };
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Unauthorized(_) => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"citystream\""),
                );
            }
            ApiError::RateLimited { retry_after, .. } | ApiError::Busy { retry_after, .. } => {
                // Whole seconds, rounded up: a client that waits that long finds room.
                let secs = retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0);
                headers.insert(RETRY_AFTER, HeaderValue::from(secs.max(1)));
            }
            _ => {}
        }
        response
    }
}
