//! The web channel: a JSON HTTP API, a WebSocket per conversation and the
//! built-in chat page, all served by axum.

mod api;
mod error;
mod ws;

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::Html;
use axum::routing::get;
use axum::Router as HttpRouter;

use crate::bots::Bots;
use crate::router::Router;
use crate::store::Store;

pub use error::ApiError;

/// What the handlers share.
#[derive(Clone)]
pub struct WebState {
    pub store: Store,
    pub router: Router,
    pub bots: Arc<Bots>,
}

/// The channel's routes.
pub fn routes(state: WebState, max_body_bytes: usize) -> HttpRouter {
    HttpRouter::new()
        .route("/", get(|| async { Html(include_str!("chat.html")) }))
        .route(
            "/healthz",
            get(|| async { axum::Json(serde_json::json!({ "status": "ok" })) }),
        )
        .route("/api/v1/bots", get(api::list_bots))
        .route(
            "/api/v1/bots/{bot}/conversations/{conversation}/messages",
            get(api::get_messages).post(api::post_message),
        )
        .route(
            "/api/v1/bots/{bot}/conversations/{conversation}/ws",
            get(ws::upgrade),
        )
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "no such endpoint; see /api/v1/bots")
        })
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
}
