//! The admin API of the bot lifecycle, behind `aviary plugin …`: list,
//! versions, rollback, disable, enable, remove, logs and stats.

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router as HttpRouter};
use serde::Deserialize;
use serde_json::{json, Value};

use super::blocking;
use crate::channels::web::{ApiError, WebState};

/// Longest `wait` of a logs request (`--follow` asks again after it).
const MAX_LOG_WAIT: Duration = Duration::from_secs(25);
/// Most log lines in one answer.
const MAX_LOG_LINES: usize = 1000;

/// The routes under `/api/v1/admin/bots`.
pub fn routes() -> HttpRouter<WebState> {
    HttpRouter::new()
        .route("/api/v1/admin/bots", get(list))
        .route("/api/v1/admin/bots/{bot}/versions", get(versions))
        .route("/api/v1/admin/bots/{bot}/rollback", post(rollback))
        .route("/api/v1/admin/bots/{bot}/disable", post(disable))
        .route("/api/v1/admin/bots/{bot}/enable", post(enable))
        .route("/api/v1/admin/bots/{bot}/remove", post(remove))
        .route("/api/v1/admin/bots/{bot}/logs", get(logs))
        .route("/api/v1/admin/bots/{bot}/stats", get(stats))
        .route(
            "/api/v1/admin/bots/{bot}/data/{table}",
            get(export_data).put(import_data),
        )
}

/// `PUT .../data/{table}` with a CSV body: replaces the table whole.
async fn import_data(
    State(state): State<WebState>,
    Path((bot, table)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let loaded = running(&state, &bot)?;
    let imported =
        checked(move || crate::bots::data::import(&state.store, &loaded, &table, &body)).await?;
    Ok(Json(json!({ "imported": imported })))
}

/// `GET .../data/{table}`: the table as CSV (in JSON, under `csv`).
async fn export_data(
    State(state): State<WebState>,
    Path((bot, table)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let loaded = running(&state, &bot)?;
    let csv = checked(move || crate::bots::data::export(&state.store, &loaded, &table)).await?;
    Ok(Json(json!({ "csv": csv })))
}

/// The serving build of `bot`, or 404.
fn running(
    state: &WebState,
    bot: &str,
) -> Result<std::sync::Arc<crate::runtime::LoadedBot>, ApiError> {
    state.bots.get(bot).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no bot `{bot}` is serving; `aviary plugin list` shows the bots"),
        )
    })
}

/// Runs `work` off the async threads; its error is the input's fault (422).
async fn checked<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal(e.into()))?
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("{e:#}")))
}

/// 404 unless the registry knows `bot`.
fn known(state: &WebState, bot: &str) -> Result<(), ApiError> {
    match state.bots.slot(bot) {
        Some(_) => Ok(()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no bot `{bot}` is installed (see `aviary plugin list`)"),
        )),
    }
}

async fn list(State(state): State<WebState>) -> Json<Value> {
    let dir = state.bots.plugins_dir();
    let plugins_dir = std::path::absolute(dir).unwrap_or_else(|_| dir.to_owned());
    Json(json!({
        "plugins_dir": plugins_dir,
        "watch": state.bots.watches(),
        "bots": state.bots.list(),
    }))
}

async fn versions(
    State(state): State<WebState>,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &bot)?;
    let versions = state.bots.kept_versions(&bot).map_err(ApiError::internal)?;
    Ok(Json(json!({ "bot": bot, "versions": versions })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// A version or a sha256 prefix; the build before the current by default.
    to: Option<String>,
}

async fn rollback(
    State(state): State<WebState>,
    Path(bot): Path<String>,
    body: Option<Json<RollbackBody>>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &bot)?;
    let to = body.unwrap_or_default().0.to;
    let bots = state.bots.clone();
    let done = blocking(move || bots.rollback(&bot, to.as_deref())).await?;
    Ok(Json(json!({ "rolled_back": done })))
}

async fn disable(
    State(state): State<WebState>,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &bot)?;
    let bots = state.bots.clone();
    blocking(move || bots.disable(&bot)).await?;
    Ok(Json(json!({ "bots": state.bots.list() })))
}

async fn enable(
    State(state): State<WebState>,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &bot)?;
    let bots = state.bots.clone();
    blocking(move || bots.enable(&bot)).await?;
    Ok(Json(json!({ "bots": state.bots.list() })))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RemoveBody {
    /// Delete the bot's kv too.
    #[serde(default)]
    purge: bool,
    /// Must be true with `purge`: the kv cannot be brought back.
    #[serde(default)]
    confirm: bool,
}

async fn remove(
    State(state): State<WebState>,
    Path(bot): Path<String>,
    body: Option<Json<RemoveBody>>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &bot)?;
    let body = body.unwrap_or_default().0;
    if body.purge && !body.confirm {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "purging deletes the bot's kv for good: send `\"confirm\": true` with `\"purge\": true` (`aviary plugin remove <bot> --purge --yes`)",
        ));
    }
    let bots = state.bots.clone();
    let removed = blocking(move || bots.remove(&bot, body.purge)).await?;
    Ok(Json(json!({ "removed": removed })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LogsQuery {
    /// Only lines after this one (`seq`).
    #[serde(default)]
    after: u64,
    /// Seconds to wait for a line when there is none yet (at most 25).
    #[serde(default)]
    wait: f64,
}

async fn logs(
    State(state): State<WebState>,
    Path(bot): Path<String>,
    Query(query): Query<LogsQuery>,
) -> Result<Json<Value>, ApiError> {
    let Some(slot) = state.bots.slot(&bot) else {
        return Err(known(&state, &bot).unwrap_err());
    };
    if !(0.0..=MAX_LOG_WAIT.as_secs_f64()).contains(&query.wait) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("`wait` is in seconds, from 0 to {}", MAX_LOG_WAIT.as_secs()),
        ));
    }
    if query.wait > 0.0 {
        slot.logs
            .wait_after(query.after, Duration::from_secs_f64(query.wait))
            .await;
    }
    let lines = slot.logs.after(query.after, MAX_LOG_LINES);
    Ok(Json(json!({ "bot": bot, "lines": lines })))
}

async fn stats(
    State(state): State<WebState>,
    Path(bot): Path<String>,
) -> Result<Json<Value>, ApiError> {
    known(&state, &bot)?;
    let stats = state.bots.stats(&bot).map_err(ApiError::internal)?;
    Ok(Json(json!({ "stats": stats })))
}
