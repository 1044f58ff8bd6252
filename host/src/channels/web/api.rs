//! The JSON endpoints of the web channel.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{authorize, bearer};
use super::body::json_object;
use super::{uploads, ApiError, WebState};
use crate::ids::is_valid_id;
use crate::runtime::capabilities::messaging::MAX_TEXT_BYTES;
use crate::store::{Attachment, Inbound, MessageRecord};

/// Longest accepted long-poll, in seconds.
const MAX_WAIT_SECONDS: f64 = 60.0;
/// Most messages one page may hold.
const MAX_PAGE: usize = 1000;
/// Longest accepted `Idempotency-Key`.
const MAX_IDEMPOTENCY_KEY: usize = 255;

/// The body of `POST .../messages`; the sender is the token's user.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostMessage {
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
/// answer 202 with its id. The body is JSON `{"text": ...}`, or a
/// `multipart/form-data` form with a `text` field and `file` fields (see
/// [`uploads`]); files are checked whole and stored before the message.
/// A repeated `Idempotency-Key` answers 202 with the first message's id and
/// stores nothing.
pub async fn post_message(
    State(state): State<WebState>,
    Path((bot, conversation)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_target(&state, &bot, &conversation)?;
    let caller = authorize(&state, bearer(&headers), &bot, &conversation)?;
    let idempotency_key = idempotency_key(&headers)?;
    let (text, files) = match uploads::boundary(&headers) {
        Some(boundary) => {
            let loaded = state.bots.get(&bot).ok_or_else(|| no_bot(&bot))?;
            let upload = uploads::read(&loaded, boundary, body).await?;
            (upload.text, upload.files)
        }
        None => (
            json_object::<PostMessage>(&headers, &body)?.text,
            Vec::new(),
        ),
    };
    if text.len() > MAX_TEXT_BYTES {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("`text` must be at most {MAX_TEXT_BYTES} bytes"),
        ));
    }
    let sender = &caller.record.user;
    let reservation = state
        .router
        .reserve(&bot, &conversation, 2)
        .map_err(|full| ApiError::new(StatusCode::TOO_MANY_REQUESTS, full.to_string()))?;
    let attachments = uploads::store(&state.store, &files)?;
    let store = &state.store;
    let id = match idempotency_key {
        None => {
            let accepted =
                store.accept_inbound(&bot, &conversation, sender, &text, &attachments)?;
            reservation.push(accepted.events);
            accepted.message.id
        }
        Some(key) => {
            match store.accept_inbound_once(
                crate::channels::WEB,
                &bot,
                &conversation,
                sender,
                &text,
                &attachments,
                key,
            )? {
                Inbound::Accepted(accepted) => {
                    reservation.push(accepted.events);
                    accepted.message.id
                }
                // The reservation is dropped unused: nothing new was queued
                // (a blob it wrote is the first copy's, or collected).
                Inbound::Repeated { id } => id,
            }
        }
    };
    // A repeat waits too: its first copy may not be on disk yet.
    state.store.wait_durable().await?;
    let attachments: Vec<Value> = attachments
        .iter()
        .map(|a| attachment_json(&bot, &conversation, a))
        .collect();
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "id": id, "attachments": attachments })),
    ))
}

/// `GET .../attachments/{id}`: the bytes of a file a message of this
/// conversation carries. The token may come as `?token=` so that an `<img>`
/// can show it; the answer is never sniffed, framed or run by a browser.
pub async fn get_attachment(
    State(state): State<WebState>,
    Path((bot, conversation, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    Query(query): Query<TokenQuery>,
) -> Result<Response, ApiError> {
    check_target(&state, &bot, &conversation)?;
    authorize(
        &state,
        bearer(&headers).or(query.token.as_deref()),
        &bot,
        &conversation,
    )?;
    let missing = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no attachment `{id}` in this conversation"),
        )
    };
    if !crate::store::is_blob_id(&id) {
        return Err(missing());
    }
    let attachment = state
        .store
        .attachment_in(&bot, &conversation, &id)?
        .ok_or_else(missing)?;
    let bytes = state.store.blob(&id)?;
    let inline = aviary_vision::decodes(&attachment.media_type);
    let disposition = match (&attachment.name, inline) {
        (_, true) => "inline".to_owned(),
        (Some(name), false) => format!(
            "attachment; filename=\"{}\"",
            name.replace(['"', '\\'], "_")
        ),
        (None, false) => "attachment".to_owned(),
    };
    let headers = [
        (header::CONTENT_TYPE, attachment.media_type),
        (header::CONTENT_DISPOSITION, disposition),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_owned()),
        (
            header::CONTENT_SECURITY_POLICY,
            "sandbox; default-src 'none'".to_owned(),
        ),
        (
            header::CACHE_CONTROL,
            "private, max-age=86400, immutable".to_owned(),
        ),
        (header::REFERRER_POLICY, "no-referrer".to_owned()),
    ];
    Ok((headers, bytes).into_response())
}

#[derive(Deserialize)]
pub struct TokenQuery {
    token: Option<String>,
}

/// An attachment as the API shows it: its record and where to download it.
pub fn attachment_json(bot: &str, conversation: &str, attachment: &Attachment) -> Value {
    let mut value = serde_json::to_value(attachment).expect("attachments serialise");
    value["url"] = json!(format!(
        "/api/v1/bots/{bot}/conversations/{conversation}/attachments/{}",
        attachment.id
    ));
    value
}

/// A message as the API and the WebSocket show it: its record, with a
/// download URL on each attachment.
pub fn message_json(bot: &str, conversation: &str, message: &MessageRecord) -> Value {
    let mut value = serde_json::to_value(message).expect("message records serialise");
    if !message.attachments.is_empty() {
        value["attachments"] = message
            .attachments
            .iter()
            .map(|a| attachment_json(bot, conversation, a))
            .collect();
    }
    value
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<&str>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    match value.to_str() {
        Ok(key)
            if (1..=MAX_IDEMPOTENCY_KEY).contains(&key.len())
                && key.bytes().all(|b| b.is_ascii_graphic()) =>
        {
            Ok(Some(key))
        }
        _ => Err(ApiError::bad_request(format!(
            "`Idempotency-Key` must be 1 to {MAX_IDEMPOTENCY_KEY} visible ASCII characters"
        ))),
    }
}

/// `GET .../messages?after=&wait=&limit=`: a page of messages, long-polling
/// up to `wait` seconds for the first one.
pub async fn get_messages(
    State(state): State<WebState>,
    Path((bot, conversation)): Path<(String, String)>,
    headers: HeaderMap,
    query: Result<Query<PageQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| ApiError::bad_request(rejection.body_text()))?;
    check_target(&state, &bot, &conversation)?;
    authorize(&state, bearer(&headers), &bot, &conversation)?;
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
            let messages: Vec<Value> = messages
                .iter()
                .map(|m| message_json(&bot, &conversation, m))
                .collect();
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

/// Unknown bots are 404.
pub fn check_bot(state: &WebState, bot: &str) -> Result<(), ApiError> {
    if state.bots.get(bot).is_none() {
        return Err(no_bot(bot));
    }
    Ok(())
}

fn no_bot(bot: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no bot named `{bot}` is running; GET /api/v1/bots lists them"),
    )
}

/// Unknown bots are 404; malformed conversation ids 400.
pub fn check_target(state: &WebState, bot: &str, conversation: &str) -> Result<(), ApiError> {
    check_bot(state, bot)?;
    if !is_valid_id(conversation) {
        return Err(ApiError::bad_request(
            "conversation ids are 1 to 128 of the characters A-Z a-z 0-9 . _ : -, not only dots",
        ));
    }
    Ok(())
}

/// A message id used as a paging cursor: 16 hex digits.
pub fn check_cursor(after: &str) -> Result<&str, ApiError> {
    if aviary_rules::ids::is_message_id(after) {
        Ok(after)
    } else {
        Err(ApiError::bad_request(
            "`after` must be a message id (16 hex digits)",
        ))
    }
}
