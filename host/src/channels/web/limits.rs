//! What every request goes through: a body of bounded size read within a
//! deadline, and errors always as JSON `{"error": "..."}`, including those
//! that axum's extractors and router answer in plain text (405, malformed
//! paths, WebSocket handshakes, admin input).

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};

use super::ApiError;

/// Where the webhooks channel takes its requests.
const HOOKS_PATH: &str = "/api/v1/hooks/";

/// How big and how slow a request body may be.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// The bound of a `multipart/form-data` body (a message with files)
    /// and of a `text/csv` one (a bot's data table, on the admin API).
    pub max_upload_bytes: usize,
    /// The bound of a webhook's body: the largest `max_body_bytes` of any
    /// configured hook (each hook then checks its own).
    pub max_hook_bytes: usize,
    pub timeout: Duration,
}

impl BodyLimits {
    /// The bound of `request`'s body.
    fn max_for(&self, request: &Request) -> usize {
        if request.uri().path().starts_with(HOOKS_PATH) {
            return self.max_hook_bytes;
        }
        let is_upload = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(str::trim)
            .is_some_and(|mime| {
                mime.eq_ignore_ascii_case("multipart/form-data")
                    || mime.eq_ignore_ascii_case("text/csv")
            });
        if is_upload {
            self.max_upload_bytes
        } else {
            self.max_bytes
        }
    }
}

/// Reads the whole body before the handler runs: 413 when the declared
/// `Content-Length` (checked before reading) or the bytes sent exceed the
/// limit, 408 when the body is not complete within the deadline. Those
/// answers close the connection: the rest of the body is never read.
pub async fn read_body(State(limits): State<BodyLimits>, request: Request, next: Next) -> Response {
    match buffer(limits, request).await {
        Ok(request) => next.run(request).await,
        Err(error) => {
            let mut response = error.into_response();
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            response
        }
    }
}

async fn buffer(limits: BodyLimits, request: Request) -> Result<Request, ApiError> {
    let max_bytes = limits.max_for(&request);
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over {max_bytes} bytes"),
        )
    };
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .map(|value| value.parse::<u64>());
    match declared {
        Some(Ok(length)) if length > max_bytes as u64 => return Err(too_large()),
        Some(Err(_)) => return Err(ApiError::bad_request("`Content-Length` is not a number")),
        _ => {}
    }
    let (parts, body) = request.into_parts();
    let collected = tokio::time::timeout(limits.timeout, Limited::new(body, max_bytes).collect())
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!("the body did not arrive within {:?}", limits.timeout),
            )
        })?;
    let bytes = match collected {
        Ok(collected) => collected.to_bytes(),
        Err(error) if error.downcast_ref::<LengthLimitError>().is_some() => return Err(too_large()),
        Err(error) => {
            return Err(ApiError::bad_request(format!(
                "cannot read the body: {error}"
            )))
        }
    };
    Ok(Request::from_parts(parts, Body::from(bytes)))
}

/// Longest plain-text error that is carried over into the JSON answer.
const MAX_ERROR_TEXT: usize = 4096;

/// Turns an error answer that is not JSON into `{"error": <its text>}`,
/// keeping its status and headers (such as `Allow` of a 405).
pub async fn json_errors(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|value| value.as_bytes().starts_with(b"application/json"));
    if !(response.status().is_client_error() || response.status().is_server_error()) || is_json {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let text = match Limited::new(body, MAX_ERROR_TEXT).collect().await {
        Ok(collected) => String::from_utf8_lossy(&collected.to_bytes())
            .trim()
            .to_owned(),
        Err(_) => String::new(),
    };
    let message = if text.is_empty() {
        parts
            .status
            .canonical_reason()
            .unwrap_or("request refused")
            .to_owned()
    } else {
        text
    };
    let body = Bytes::from(serde_json::json!({ "error": message }).to_string());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(body)).into_response()
}
