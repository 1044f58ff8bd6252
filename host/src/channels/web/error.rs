//! Errors of the web API: an HTTP status and a JSON `{"error": "..."}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answer of the web API.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn internal(error: anyhow::Error) -> ApiError {
        tracing::error!("internal error: {error:#}");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("internal error: {error:#}"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response()
    }
}

impl From<anyhow::Error> for ApiError {
    /// A store that takes nothing new (disk full, journal failing) is a 503
    /// the client may retry; anything else is a 500.
    fn from(error: anyhow::Error) -> ApiError {
        match error.downcast_ref::<crate::store::Unavailable>() {
            Some(unavailable) => {
                tracing::warn!("refused a write: {unavailable}");
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, unavailable.to_string())
            }
            None => ApiError::internal(error),
        }
    }
}
