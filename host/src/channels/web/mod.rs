//! The web channel: a JSON HTTP API, a WebSocket per conversation and the
//! built-in chat page, served by axum on hyper.
//!
//! Per-conversation calls need the conversation's token (see [`auth`]),
//! which `POST /api/v1/bots/{bot}/conversations` gives.

mod api;
pub mod auth;
mod body;
mod conversations;
mod error;
mod limits;
pub mod server;
mod signals;
mod uploads;
mod ws;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::{get, post};
use axum::Router as HttpRouter;

use crate::bots::Bots;
use crate::config::WebConfig;
use crate::router::Router;
use crate::store::Store;

pub use error::ApiError;
use limits::BodyLimits;
pub use signals::Signals;

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    pub store: Store,
    pub router: Router,
    pub bots: Arc<Bots>,
    /// The `[web]` section of the configuration.
    pub web: Arc<WebConfig>,
    /// Typing and drafts, sent to open WebSockets and never stored.
    pub signals: Arc<Signals>,
    /// The inbound webhooks of each bot, by bot and hook name.
    pub hooks: Arc<crate::config::Hooks>,
    /// The outbox's delivery engine, for the admin's commands.
    pub outbox: crate::outbox::Outbox,
}

/// The channel's routes.
pub fn routes(state: WebState) -> HttpRouter {
    HttpRouter::new()
        .route("/", get(|| async { Html(include_str!("chat.html")) }))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/api/v1/bots", get(api::list_bots))
        .route(
            "/api/v1/bots/{bot}/conversations",
            post(conversations::create),
        )
        .route(
            "/api/v1/bots/{bot}/conversations/{conversation}/token",
            post(conversations::refresh),
        )
        .route(
            "/api/v1/bots/{bot}/conversations/{conversation}/messages",
            get(api::get_messages).post(api::post_message),
        )
        .route(
            "/api/v1/bots/{bot}/conversations/{conversation}/attachments/{id}",
            get(api::get_attachment),
        )
        .route(
            "/api/v1/bots/{bot}/conversations/{conversation}/ws",
            get(ws::upgrade),
        )
        .route(
            "/api/v1/hooks/{bot}/{hook}",
            post(crate::channels::webhooks::receive),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/bots")
        })
        .with_state(state)
}

/// Wraps all routes (the channel's and the admin's) in the rules every
/// request follows: bounded bodies read within a deadline, JSON errors.
pub fn guard(
    routes: HttpRouter,
    max_body_bytes: usize,
    max_hook_bytes: usize,
    web: &WebConfig,
) -> HttpRouter {
    let limits = BodyLimits {
        max_bytes: max_body_bytes,
        max_upload_bytes: web.max_upload_bytes,
        max_hook_bytes,
        timeout: Duration::from_millis(web.body_timeout_ms),
    };
    routes
        // `read_body` bounds every body (forms with files by their own
        // bound); axum's default 2 MB cap would refuse a phone photo.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            limits,
            limits::read_body,
        ))
        .layer(axum::middleware::from_fn(limits::json_errors))
}
