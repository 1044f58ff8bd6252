//! `GET .../ws?after=<id>&token=<token>`: a WebSocket that sends the
//! conversation's messages after `after`, then each new one as it is
//! stored, for as long as its token stays valid. Between them it sends the
//! bot's ephemeral signals, frames with a `kind`: `{"kind":"typing"}` and
//! `{"kind":"draft","text":...,"done":...}` (the growing text of an answer
//! being generated; the real message follows). Signals are never stored: a
//! socket opened later does not get them.

use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{close_code, CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde::Deserialize;

use super::api::{check_cursor, check_target};
use super::auth::{authorize, bearer};
use super::server::ConnectionSlot;
use super::{ApiError, WebState};
use crate::live::Signal;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WsQuery {
    after: Option<String>,
    /// Browsers cannot set headers on a WebSocket: the token may come here.
    token: Option<String>,
}

/// Checks the target, token and handshake, then hands the socket over.
pub async fn upgrade(
    State(state): State<WebState>,
    Path((bot, conversation)): Path<(String, String)>,
    Query(query): Query<WsQuery>,
    slot: Option<Extension<ConnectionSlot>>,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    check_target(&state, &bot, &conversation)?;
    let presented = bearer(&headers).or(query.token.as_deref());
    let caller = authorize(&state, presented, &bot, &conversation)?;
    let after = query
        .after
        .as_deref()
        .map(check_cursor)
        .transpose()?
        .map(str::to_owned);
    check_key(&headers)?;
    let upgrade =
        upgrade.map_err(|rejection| ApiError::new(rejection.status(), rejection.body_text()))?;
    let stream = Stream {
        state,
        bot,
        conversation,
        token_hash: caller.hash,
        expires_at: caller.record.expires_at,
        _slot: slot.map(|Extension(slot)| slot),
    };
    Ok(upgrade
        .on_upgrade(move |socket| stream.run(socket, after))
        .into_response())
}

/// `Sec-WebSocket-Key` must be the base64 of 16 bytes (RFC 6455 4.1).
fn check_key(headers: &HeaderMap) -> Result<(), ApiError> {
    let valid = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| key.as_bytes())
        .is_some_and(|key| {
            key.len() == 24
                && key.ends_with(b"==")
                && key[..22]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/'))
        });
    if valid {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "a WebSocket handshake needs `Sec-WebSocket-Key`: the base64 of 16 random bytes",
        ))
    }
}

/// One open socket of a conversation.
struct Stream {
    state: WebState,
    bot: String,
    conversation: String,
    token_hash: String,
    expires_at: u64,
    /// Counts the socket among the host's open connections until it closes.
    _slot: Option<ConnectionSlot>,
}

impl Stream {
    async fn run(self, mut socket: WebSocket, mut after: Option<String>) {
        let mut changes = self.state.store.subscribe(&self.bot, &self.conversation);
        let mut signals = self.state.signals.listen(&self.bot, &self.conversation);
        let expiry = tokio::time::sleep(self.time_left());
        tokio::pin!(expiry);
        loop {
            if !self.token_is_live() {
                let _ = socket.send(revoked()).await;
                return;
            }
            // Signals published before a message was committed go first:
            // a draft shown after its answer would stay on the page.
            while let Some(signal) = signals.try_next() {
                if socket.send(signal_frame(&signal)).await.is_err() {
                    return;
                }
            }
            let page = match self.state.store.messages_after(
                &self.bot,
                &self.conversation,
                after.as_deref(),
                1000,
            ) {
                Ok(page) => page,
                Err(error) => {
                    tracing::error!("websocket read failed: {error:#}");
                    return;
                }
            };
            for message in &page {
                let text =
                    super::api::message_json(&self.bot, &self.conversation, message).to_string();
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
                signal = signals.next() => {
                    if socket.send(signal_frame(&signal)).await.is_err() {
                        return;
                    }
                }
                _ = &mut expiry => {
                    // Checked at the top; wall and monotonic clocks may differ.
                    expiry.as_mut().reset(tokio::time::Instant::now() + std::time::Duration::from_secs(1));
                }
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                    Some(Ok(_)) => {}
                },
            }
        }
    }

    /// Whether the socket's token is still stored and unexpired (a refresh
    /// revokes it).
    fn token_is_live(&self) -> bool {
        matches!(self.state.store.token(&self.token_hash), Ok(Some(_)))
    }

    fn time_left(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.expires_at.saturating_sub(crate::store::now_ms()))
    }
}

fn revoked() -> Message {
    Message::Close(Some(CloseFrame {
        code: close_code::POLICY,
        reason: "the token expired or was replaced".into(),
    }))
}

/// The frame of an ephemeral signal (`{"kind": …}`).
fn signal_frame(signal: &Signal) -> Message {
    let text = serde_json::to_string(signal).expect("signals serialise");
    Message::Text(text.into())
}
