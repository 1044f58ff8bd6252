//! `POST /api/v1/bots/{bot}/conversations` starts a conversation and gives
//! its first token; `POST .../conversations/{c}/token` renews a token.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::api::{check_bot, check_target};
use super::auth::{self, authorize, bearer};
use super::body::json_object;
use super::{ApiError, WebState};
use crate::ids::is_valid_id;
use crate::store::TokenRecord;

/// Longest user id or name, in bytes.
const MAX_USER_BYTES: usize = 128;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewConversation {
    user: Option<User>,
    /// Only for the holder of `conversation_secret`: the conversation to
    /// join (or name), instead of a new random one.
    conversation: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    id: String,
    name: Option<String>,
}

/// `POST /api/v1/bots/{bot}/conversations`: 201 with the conversation id,
/// a token for its user and when the token expires.
pub async fn create(
    State(state): State<WebState>,
    Path(bot): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_bot(&state, &bot)?;
    let trusted = check_secret(&state, &headers)?;
    let request: NewConversation = if body.is_empty() {
        NewConversation::default()
    } else {
        json_object(&headers, &body)?
    };
    let conversation = match request.conversation {
        Some(_) if !trusted => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "only a backend holding `web.conversation_secret` may name the conversation",
            ))
        }
        Some(named) => named,
        None => random_id("c-")?,
    };
    check_target(&state, &bot, &conversation)?;
    let (user, name) = match request.user {
        Some(User { id, name }) => {
            let name = name.unwrap_or_else(|| id.clone());
            (id, name)
        }
        None => {
            let id = random_id("user-")?;
            (id.clone(), id)
        }
    };
    for (what, value) in [("user.id", &user), ("user.name", &name)] {
        if value.is_empty() || value.len() > MAX_USER_BYTES {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!("`{what}` must be 1 to {MAX_USER_BYTES} bytes"),
            ));
        }
    }
    let record = TokenRecord {
        bot,
        conversation,
        user,
        name,
        expires_at: auth::expiry(&state),
    };
    let (token, hash) = auth::mint()?;
    state.store.put_token(&hash, &record)?;
    state.store.wait_durable().await?;
    Ok((StatusCode::CREATED, Json(answer(&record, &token))))
}

/// `POST .../conversations/{c}/token`: a new token for the same user and
/// conversation with a fresh lifetime; the presented one stops working.
pub async fn refresh(
    State(state): State<WebState>,
    Path((bot, conversation)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_target(&state, &bot, &conversation)?;
    let caller = authorize(&state, bearer(&headers), &bot, &conversation)?;
    let record = TokenRecord {
        expires_at: auth::expiry(&state),
        ..caller.record
    };
    let (token, hash) = auth::mint()?;
    state.store.replace_token(&caller.hash, &hash, &record)?;
    state.store.wait_durable().await?;
    Ok(Json(answer(&record, &token)))
}

/// Whether the caller presented the configured conversation secret; 401
/// when one is configured and was not presented.
fn check_secret(state: &WebState, headers: &HeaderMap) -> Result<bool, ApiError> {
    let Some(secret) = &state.web.conversation_secret else {
        return Ok(false);
    };
    match bearer(headers) {
        Some(presented) if auth::same_secret(presented, secret) => Ok(true),
        _ => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "creating a conversation on this host needs `Authorization: Bearer <web.conversation_secret>`; \
             ask the website's backend for a token",
        )),
    }
}

fn answer(record: &TokenRecord, token: &str) -> Value {
    json!({
        "conversation": record.conversation,
        "token": token,
        "expires_at": record.expires_at,
        "user": { "id": record.user, "name": record.name },
    })
}

/// `prefix` and 128 random bits in hex: a conversation or user id.
fn random_id(prefix: &str) -> Result<String, ApiError> {
    let random = crate::ids::random_hex(16).map_err(ApiError::internal)?;
    let id = format!("{prefix}{random}");
    debug_assert!(is_valid_id(&id));
    Ok(id)
}
