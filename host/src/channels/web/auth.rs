//! Conversation tokens: who may read and write one conversation.
//!
//! A token is 256 random bits, shown once to the client that asked for it
//! and stored only as its sha256. Its record binds one bot, one
//! conversation and one user, who is the sender of everything posted with
//! it, until it expires.

use axum::http::{HeaderMap, StatusCode};

use super::{ApiError, WebState};
use crate::store::{now_ms, sha256_hex, TokenRecord};

/// Longest bearer value worth hashing; tokens are 64 hex digits.
const MAX_TOKEN_LEN: usize = 128;

/// A caller whose token was checked against the conversation of the path.
pub struct Caller {
    /// The sha256 of the presented token.
    pub hash: String,
    pub record: TokenRecord,
}

/// The value of `Authorization: Bearer <value>`, if the header has one.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

/// A fresh random token and its hash.
pub fn mint() -> Result<(String, String), ApiError> {
    let token = crate::ids::random_hex(32).map_err(ApiError::internal)?;
    let hash = sha256_hex(token.as_bytes());
    Ok((token, hash))
}

/// When a token minted now expires, in Unix milliseconds.
pub fn expiry(state: &WebState) -> u64 {
    now_ms() + state.web.token_lifetime_secs * 1000
}

/// Checks that `presented` is a live token of this conversation: 401 when
/// it is missing, unknown or expired, 403 when it belongs elsewhere.
pub fn authorize(
    state: &WebState,
    presented: Option<&str>,
    bot: &str,
    conversation: &str,
) -> Result<Caller, ApiError> {
    let Some(token) = presented.filter(|t| !t.is_empty()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "this conversation needs `Authorization: Bearer <token>`; \
                 POST /api/v1/bots/{bot}/conversations gives a conversation and its token"
            ),
        ));
    };
    let unknown = || {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the token is unknown or expired; start a conversation or refresh the token before it expires",
        )
    };
    if token.len() > MAX_TOKEN_LEN {
        return Err(unknown());
    }
    let hash = sha256_hex(token.as_bytes());
    let record = state.store.token(&hash)?.ok_or_else(unknown)?;
    if record.bot != bot || record.conversation != conversation {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "this token belongs to another conversation",
        ));
    }
    Ok(Caller { hash, record })
}

/// Whether `presented` equals `secret`, in time independent of where they
/// differ.
pub fn same_secret(presented: &str, secret: &str) -> bool {
    let (a, b) = (presented.as_bytes(), secret.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
