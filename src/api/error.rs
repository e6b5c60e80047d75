//! The API's one error type: a client mistake is a 4xx with a JSON body, a store failure a
//! 503 that names no internals.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("no route for {0}")]
    NotFound(String),
    #[error("store unavailable")]
    Store(#[from] StoreError),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error, message) = match &self {
            ApiError::BadRequest(m) => (StatusCode::BAD_REQUEST, "bad_request", m.clone()),
            ApiError::NotFound(m) => (
                StatusCode::NOT_FOUND,
                "not_found",
                format!("no route for {m}"),
            ),
            ApiError::Store(e) => {
                tracing::error!(error = %e, "store query failed");
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
        };
        (
            status,
            Json(json!({ "error": error, "message": message, "status": status.as_u16() })),
        )
            .into_response()
    }
}
