//! `GET .../ws?after=<id>`: a WebSocket that sends the conversation's
//! messages after `after`, then each new one as it is stored.

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;

use super::api::{check_cursor, check_target};
use super::{ApiError, WebState};

#[derive(Deserialize)]
pub struct WsQuery {
    after: Option<String>,
}

pub async fn upgrade(
    State(state): State<WebState>,
    Path((bot, conversation)): Path<(String, String)>,
    Query(query): Query<WsQuery>,
    upgrade: WebSocketUpgrade,
) -> Result<Response, ApiError> {
    check_target(&state, &bot, &conversation)?;
    let after = query
        .after
        .as_deref()
        .map(check_cursor)
        .transpose()?
        .map(str::to_owned);
    Ok(upgrade.on_upgrade(move |socket| stream(socket, state, bot, conversation, after)))
}

async fn stream(
    mut socket: WebSocket,
    state: WebState,
    bot: String,
    conversation: String,
    mut after: Option<String>,
) {
    let mut changes = state.store.subscribe(&bot, &conversation);
    loop {
        let page = match state
            .store
            .messages_after(&bot, &conversation, after.as_deref(), 1000)
        {
            Ok(page) => page,
            Err(error) => {
                tracing::error!("websocket read failed: {error:#}");
                return;
            }
        };
        for message in &page {
            let text = serde_json::to_string(message).expect("message records serialise");
            if socket.send(Message::Text(text.into())).await.is_err() {
                return;
            }
        }
        if let Some(last) = page.last() {
            after = Some(last.id.clone());
            continue;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            },
        }
    }
}
