//! The admin API (bearer token) behind the `aviary` CLI's admin commands.
//!
//! The token comes from `admin_token` in aviary.toml or, when unset, is
//! generated once into `<data_dir>/admin.token` (mode 0600), where the CLI
//! on the same machine reads it.

mod bots;
mod client;
mod outbox;

use std::path::Path;

use anyhow::{Context, Result};
use axum::extract::{Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Json, Router as HttpRouter};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::channels::web::{ApiError, WebState};

pub use client::AdminClient;

/// Name of the token file inside the data directory.
pub const TOKEN_FILE: &str = "admin.token";

/// The configured token, or the one in the data directory (made on first use).
pub fn load_or_create_token(configured: Option<&str>, data_dir: &Path) -> Result<String> {
    if let Some(token) = configured {
        return Ok(token.to_owned());
    }
    let path = data_dir.join(TOKEN_FILE);
    if let Ok(token) = std::fs::read_to_string(&path) {
        return Ok(token.trim().to_owned());
    }
    let token = crate::ids::random_hex(24).context("cannot make the admin token")?;
    std::fs::create_dir_all(data_dir)?;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    std::io::Write::write_all(&mut file, token.as_bytes())?;
    Ok(token)
}

/// Admin routes, each behind the bearer token.
pub fn routes(state: WebState, token: String) -> HttpRouter {
    HttpRouter::new()
        .route("/api/v1/admin/reload", post(reload))
        .route("/api/v1/admin/policy/audit", get(policy_audit))
        .route("/api/v1/admin/policy/approve", post(approve))
        .route("/api/v1/admin/policy/reject", post(reject))
        .route("/api/v1/admin/audit", get(audit_tail))
        .route("/api/v1/admin/audit/verify", get(audit_verify))
        .merge(bots::routes())
        .merge(outbox::routes())
        .route_layer(axum::middleware::from_fn_with_state(token, require_token))
        .with_state(state)
}

async fn require_token(
    State(token): State<String>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let presented = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if presented.is_some_and(|p| crate::channels::web::auth::same_secret(p, &token)) {
        Ok(next.run(request).await)
    } else {
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "admin endpoints need `Authorization: Bearer <token>` (the token is in <data_dir>/admin.token)"))
    }
}

/// Runs blocking registry work (compiling, loading) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, format!("{e:#}")))
}

async fn reload(State(state): State<WebState>) -> Result<Json<Value>, ApiError> {
    let bots = state.bots.clone();
    blocking(move || bots.reload()).await?;
    Ok(Json(json!({ "bots": state.bots.list() })))
}

#[derive(Deserialize)]
struct BotQuery {
    bot: Option<String>,
}

async fn policy_audit(
    State(state): State<WebState>,
    Query(query): Query<BotQuery>,
) -> Result<Json<Value>, ApiError> {
    let audits = state
        .bots
        .audits(query.bot.as_deref())
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, format!("{e:#}")))?;
    Ok(Json(json!({ "bots": audits })))
}

#[derive(Deserialize)]
struct Decision {
    bot: String,
    version: String,
}

async fn approve(
    State(state): State<WebState>,
    Json(decision): Json<Decision>,
) -> Result<Json<Value>, ApiError> {
    let bots = state.bots.clone();
    blocking(move || bots.approve(&decision.bot, &decision.version)).await?;
    Ok(Json(json!({ "bots": state.bots.list() })))
}

async fn reject(
    State(state): State<WebState>,
    Json(decision): Json<Decision>,
) -> Result<Json<Value>, ApiError> {
    let bots = state.bots.clone();
    blocking(move || bots.reject(&decision.bot, &decision.version)).await?;
    Ok(Json(json!({ "bots": state.bots.list() })))
}

#[derive(Deserialize)]
struct TailQuery {
    n: Option<usize>,
}

async fn audit_tail(
    State(state): State<WebState>,
    Query(query): Query<TailQuery>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "records": state.store.audit_tail(query.n.unwrap_or(20))? }),
    ))
}

async fn audit_verify(State(state): State<WebState>) -> Result<Json<Value>, ApiError> {
    Ok(Json(match state.store.audit_verify()? {
        Ok(count) => json!({ "ok": true, "records": count }),
        Err(broken) => json!({ "ok": false, "broken_at": broken.seq, "reason": broken.reason }),
    }))
}
