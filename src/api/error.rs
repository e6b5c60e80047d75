//! The API's one error type: a client mistake is a 4xx with a JSON body, a store failure a
//! 503 that names no internals.

use axum::Json;
use axum::http::StatusCode;
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
    #[error("give the admin token: Authorization: Bearer <token>")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("this store keeps no outbox")]
    NoOutbox,
    #[error("store unavailable")]
    Store(#[from] StoreError),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0} streams are open already")]
    TooManyStreams(usize),
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
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized", self.to_string()),
            ApiError::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden", m.clone()),
            ApiError::Conflict(m) => (StatusCode::CONFLICT, "conflict", m.clone()),
            ApiError::NoOutbox => (
                StatusCode::SERVICE_UNAVAILABLE,
                "no_outbox",
                self.to_string(),
            ),
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
        };
        let body = ErrorBody {
            error,
            message,
            status: status.as_u16(),
        };
        (status, Json(body)).into_response()
    }
}
