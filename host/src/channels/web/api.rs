//! The JSON endpoints of the web channel.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, WebState};
use crate::ids::is_valid_id;
use crate::runtime::capabilities::messaging::MAX_TEXT_BYTES;
use crate::store::MessageRecord;

/// Longest accepted long-poll, in seconds.
const MAX_WAIT_SECONDS: f64 = 60.0;
/// Most messages one page may hold.
const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
    sender: String,
    text: String,
}

#[derive(Deserialize)]
pub struct PageQuery {
    after: Option<String>,
    wait: Option<f64>,
    limit: Option<usize>,
}

/// `GET /api/v1/bots`
pub async fn list_bots(State(state): State<WebState>) -> Json<Value> {
    Json(json!({ "bots": state.bots.list() }))
}

/// `POST .../messages`: store the message durably, queue it for the bot,
/// answer 202 with its id.
pub async fn post_message(
    State(state): State<WebState>,
    Path((bot, conversation)): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let body =
        body.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    check_target(&state, &bot, &conversation)?;
    let message: PostMessage = parse_json(&body)?;
    if message.sender.is_empty() || message.sender.len() > 128 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "`sender` must be 1 to 128 bytes",
        ));
    }
    if message.text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`text` must be at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    let reservation = state
        .router
        .reserve(&bot, &conversation, 2)
        .map_err(|full| ApiError::new(StatusCode::TOO_MANY_REQUESTS, full.to_string()))?;
    let accepted =
        state
            .store
            .accept_inbound(&bot, &conversation, &message.sender, &message.text)?;
    reservation.push(accepted.events);
    state.store.wait_durable().await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": accepted.message.id })),
    ))
}

/// `GET .../messages?after=&wait=&limit=`: a page of messages, long-polling
/// up to `wait` seconds for the first one.
pub async fn get_messages(
    State(state): State<WebState>,
    Path((bot, conversation)): Path<(String, String)>,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    check_target(&state, &bot, &conversation)?;
    let after = query.after.as_deref().map(check_cursor).transpose()?;
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and {MAX_PAGE}"
        )));
    }
    let wait = query.wait.unwrap_or(0.0);
    if !(0.0..=MAX_WAIT_SECONDS).contains(&wait) {
        return Err(ApiError::bad_request(format!(
            "`wait` must be between 0 and {MAX_WAIT_SECONDS} seconds"
        )));
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(wait);
    let mut changes = state.store.subscribe(&bot, &conversation);
    loop {
        let messages = state
            .store
            .messages_after(&bot, &conversation, after, limit)?;
        if !messages.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(json!({ "messages": messages })));
        }
        if tokio::time::timeout_at(deadline, changes.changed())
            .await
            .is_err()
        {
            return Ok(Json(json!({ "messages": Vec::<MessageRecord>::new() })));
        }
    }
}

/// Unknown bots are 404; malformed conversation ids 400.
pub fn check_target(state: &WebState, bot: &str, conversation: &str) -> Result<(), ApiError> {
    if state.bots.get(bot).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no bot named `{bot}` is running; GET /api/v1/bots lists them"),
        ));
    }
    if !is_valid_id(conversation) {
        return Err(ApiError::bad_request(
            "conversation ids are 1 to 128 of the characters A-Z a-z 0-9 . _ : -",
        ));
    }
    Ok(())
}

/// A message id used as a paging cursor: 16 hex digits.
pub fn check_cursor(after: &str) -> Result<&str, ApiError> {
    if after.len() == 16 && after.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(after)
    } else {
        Err(ApiError::bad_request(
            "`after` must be a message id (16 hex digits)",
        ))
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|error| match error.classify() {
        serde_json::error::Category::Data => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("invalid message: {error}"),
        ),
        _ => ApiError::bad_request(format!("malformed JSON: {error}")),
    })
}
