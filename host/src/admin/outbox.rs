//! The admin API of the outbox and the dead letters, behind `aviary outbox
//! list|retry|drop` and `aviary dead-letters [retry|drop]`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router as HttpRouter};
use serde_json::{json, Value};

use crate::channels::web::{ApiError, WebState};
use crate::store::outbox::parse_job_id;

/// How an outbox dead letter's id starts, beside the events' numbers.
pub const JOB_PREFIX: &str = "job:";

/// The routes under `/api/v1/admin/outbox` and `/api/v1/admin/dead-letters`.
pub fn routes() -> HttpRouter<WebState> {
    HttpRouter::new()
        .route("/api/v1/admin/outbox", get(list))
        .route("/api/v1/admin/outbox/{job}/retry", post(retry))
        .route("/api/v1/admin/outbox/{job}/drop", post(drop_job))
        .route("/api/v1/admin/dead-letters", get(dead_letters))
        .route("/api/v1/admin/dead-letters/{id}/retry", post(retry_dead))
        .route("/api/v1/admin/dead-letters/{id}/drop", post(drop_dead))
}

fn job_id(text: &str) -> Result<u64, ApiError> {
    parse_job_id(text).ok_or_else(|| {
        ApiError::bad_request(format!(
            "`{text}` is not a job id (16 hex digits, as `aviary outbox list` shows)"
        ))
    })
}

async fn list(State(state): State<WebState>) -> Json<Value> {
    let circuits: Vec<Value> = state
        .outbox
        .circuits()
        .into_iter()
        .map(|(destination, circuit)| json!({ "destination": destination, "circuit": circuit }))
        .collect();
    Json(json!({ "jobs": state.outbox.list(), "circuits": circuits }))
}

async fn retry(
    State(state): State<WebState>,
    Path(job): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .outbox
        .retry(job_id(&job)?)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, e))?;
    Ok(Json(json!({ "retried": job })))
}

async fn drop_job(
    State(state): State<WebState>,
    Path(job): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state
        .outbox
        .drop_job(job_id(&job)?)
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, e))?;
    Ok(Json(json!({ "dropped": job })))
}

async fn dead_letters(State(state): State<WebState>) -> Result<Json<Value>, ApiError> {
    let jobs: Vec<Value> = state
        .store
        .outbox_dead_letters()?
        .into_iter()
        .map(|job| json!({ "id": format!("{JOB_PREFIX}{}", job.name()), "job": job }))
        .collect();
    Ok(Json(
        json!({ "dead_letters": state.store.dead_letters()?, "outbox": jobs }),
    ))
}

/// What a dead letter's id names: an event (its number) or an outbox job.
enum Letter {
    Event(u64),
    Job(u64),
}

fn letter(id: &str) -> Result<Letter, ApiError> {
    match id.strip_prefix(JOB_PREFIX) {
        Some(job) => Ok(Letter::Job(job_id(job)?)),
        None => id.trim_start_matches('#').parse().map(Letter::Event).map_err(|_| {
            ApiError::bad_request(format!(
                "`{id}` is not a dead letter's id: an event's number (as `aviary dead-letters` shows it) or {JOB_PREFIX}<job>"
            ))
        }),
    }
}

fn missing(id: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no dead letter `{id}`; `aviary dead-letters` lists them"),
    )
}

async fn retry_dead(
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = match letter(&id)? {
        Letter::Job(job) => state.outbox.revive(job)?,
        Letter::Event(seq) => match state.store.revive_dead_letter(seq)? {
            Some(event) => {
                state.router.requeue(vec![event]);
                true
            }
            None => false,
        },
    };
    if !found {
        return Err(missing(&id));
    }
    Ok(Json(json!({ "retried": id })))
}

async fn drop_dead(
    State(state): State<WebState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let found = match letter(&id)? {
        Letter::Job(job) => state.store.drop_dead_job(job)?,
        Letter::Event(seq) => state.store.drop_dead_letter(seq)?,
    };
    if !found {
        return Err(missing(&id));
    }
    Ok(Json(json!({ "dropped": id })))
}
