//! Receiving: one `/sync` long-poll loop per account. Invites from allowed
//! users are joined (others declined); each joined room's new messages are
//! stored as the bot's inbound messages, a `limited` timeline first filled
//! back to the previous batch through `/messages`, so a burst the server
//! cut short loses nothing. Each message is stored once per event id, so
//! the token written after a batch never replays one after a crash.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::client::CallError;
use super::Account;
use crate::store::{Attachment, Inbound};

impl Account {
    /// Syncs until the host stops, waiting out errors.
    pub async fn sync_forever(self: std::sync::Arc<Self>) {
        let mut failures = 0;
        loop {
            match self.sync_once().await {
                Ok(()) => failures = 0,
                Err(error) => {
                    failures += 1;
                    let wait = error
                        .downcast_ref::<CallError>()
                        .and_then(|e| e.retry_after(failures))
                        .unwrap_or(Duration::from_secs(30));
                    tracing::warn!(bot = %self.bot, "Matrix sync failed, again in {wait:?}: {error:#}");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }

    async fn sync_once(&self) -> Result<()> {
        let since = self.rooms.since()?;
        let answer = self
            .client
            .sync(since.as_deref(), self.config.sync_timeout())
            .await?;
        if let Some(invites) = answer["rooms"]["invite"].as_object() {
            for (room, invite) in invites {
                self.answer_invite(room, invite).await;
            }
        }
        if let Some(joined) = answer["rooms"]["join"].as_object() {
            for (room, joined) in joined {
                self.receive_room(room, joined, since.as_deref()).await?;
            }
        }
        if let Some(token) = answer["next_batch"].as_str() {
            self.rooms.set_since(token);
            self.store.wait_durable().await?;
        }
        Ok(())
    }

    /// Joins a room an allowed user invited the bot to; declines others.
    async fn answer_invite(&self, room: &str, invite: &Value) {
        let inviter = invite["invite_state"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| {
                e["type"] == "m.room.member"
                    && e["state_key"] == self.user.as_str()
                    && e["content"]["membership"] == "invite"
            })
            .and_then(|e| e["sender"].as_str())
            .unwrap_or_default();
        let outcome = if self.config.allows(inviter) {
            tracing::info!(bot = %self.bot, room, inviter, "joining a Matrix room");
            self.client.join(room).await
        } else {
            tracing::warn!(bot = %self.bot, room, inviter, "declining an invite from a user not allowed (`matrix.allow_inviters`, `matrix.allow_servers`)");
            self.client.leave(room).await
        };
        if let Err(error) = outcome {
            tracing::warn!(bot = %self.bot, room, "cannot answer the invite: {error}");
        }
    }

    /// Stores the new messages of one joined room, in order.
    async fn receive_room(&self, room: &str, joined: &Value, since: Option<&str>) -> Result<()> {
        let (conversation, known) = self.rooms.add_room(&self.user, room)?;
        self.deliver_to(&conversation, room);
        let timeline = &joined["timeline"];
        let mut events: Vec<Value> = Vec::new();
        if timeline["limited"] == true && known {
            if let (Some(from), Some(to)) = (timeline["prev_batch"].as_str(), since) {
                events = self.gap(room, from, to).await?;
            }
        }
        events.extend(timeline["events"].as_array().into_iter().flatten().cloned());
        let mut last = None;
        for event in &events {
            if self.receive(&conversation, event).await? {
                last = event["event_id"].as_str();
            }
        }
        if let Some(event) = last {
            let (client, room, event) = (self.client.clone(), room.to_owned(), event.to_owned());
            tokio::spawn(async move { client.receipt(&room, &event).await });
        }
        Ok(())
    }

    /// The events between a cut timeline and the previous batch, oldest first.
    async fn gap(&self, room: &str, from: &str, to: &str) -> Result<Vec<Value>> {
        let mut from = from.to_owned();
        let mut newest_first = Vec::new();
        loop {
            let page = self.client.messages_back(room, &from, to).await?;
            let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
            let end = page["end"].as_str().map(str::to_owned);
            let done = chunk.is_empty() || end.is_none() || end.as_deref() == Some(&from);
            newest_first.extend(chunk);
            match end {
                Some(end) if !done => from = end,
                _ => break,
            }
        }
        tracing::info!(bot = %self.bot, room, count = newest_first.len(), "filled a cut Matrix timeline");
        newest_first.reverse();
        Ok(newest_first)
    }

    /// Stores one timeline event if it is a message from someone else;
    /// returns whether it was one.
    async fn receive(&self, conversation: &str, event: &Value) -> Result<bool> {
        let sender = event["sender"].as_str().unwrap_or_default();
        let Some(event_id) = event["event_id"].as_str() else {
            return Ok(false);
        };
        let content = &event["content"];
        if event["type"] != "m.room.message"
            || sender == self.user
            || content["msgtype"] == super::NOTICE
            || content["m.relates_to"]["rel_type"] == "m.replace"
        {
            return Ok(false);
        }
        let (text, attachments) = self.content(content).await;
        let reservation = loop {
            match self.router.reserve(&self.bot, conversation, 2) {
                Ok(reservation) => break reservation,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let stored = self.store.accept_inbound_once(
            super::super::MATRIX,
            &self.bot,
            conversation,
            sender,
            &text,
            &attachments,
            event_id,
        )?;
        if let Inbound::Accepted(accepted) = stored {
            self.rooms
                .set_event(conversation, &accepted.message.id, event_id);
            reservation.push(accepted.events);
        }
        Ok(true)
    }

    /// The text and files of a message's content. A file that cannot be
    /// fetched is named in the text instead, so the bot still hears of it.
    async fn content(&self, content: &Value) -> (String, Vec<Attachment>) {
        let body = content["body"].as_str().unwrap_or_default();
        let msgtype = content["msgtype"].as_str().unwrap_or_default();
        if !matches!(msgtype, "m.image" | "m.file") {
            return (inbound_text(body), Vec::new());
        }
        let url = content["url"].as_str().unwrap_or_default();
        match self.fetch(url, body).await {
            Ok(attachment) => (String::new(), vec![attachment]),
            Err(error) => {
                tracing::warn!(bot = %self.bot, url, "cannot fetch a Matrix file: {error:#}");
                (
                    format!("[a file that could not be fetched: {body}]"),
                    Vec::new(),
                )
            }
        }
    }

    async fn fetch(&self, url: &str, name: &str) -> Result<Attachment> {
        let bytes = self.client.download(url, self.max_file_bytes).await?;
        let id = self.store.put_blob(&bytes)?;
        Ok(Attachment {
            id,
            name: Some(name.chars().filter(|c| !c.is_control()).take(200).collect()),
            media_type: aviary_vision::sniff(&bytes)
                .unwrap_or("application/octet-stream")
                .to_owned(),
            size: bytes.len() as u64,
        })
    }
}

/// What a bot gets of a text message's `body`: the answer without a reply's
/// quote, cut to the size every channel keeps to (a homeserver takes events
/// of up to 64 KiB; the web channel refuses texts over
/// [`MAX_TEXT_BYTES`](aviary_rules::text::MAX_TEXT_BYTES), but a message
/// already in a room can only be cut, not refused).
fn inbound_text(body: &str) -> String {
    let text = strip_reply_fallback(body);
    aviary_rules::text::trim(text, aviary_rules::text::MAX_TEXT_BYTES).into_owned()
}

/// A reply's body starts with the quoted original (`> ` lines and a blank
/// line); the bot gets the answer alone.
fn strip_reply_fallback(body: &str) -> &str {
    if !body.starts_with("> ") {
        return body;
    }
    match body.split_once("\n\n") {
        Some((quote, rest)) if quote.lines().all(|l| l.starts_with('>')) => rest,
        _ => body,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_reply_loses_its_quoted_fallback_only() {
        use super::strip_reply_fallback as strip;
        assert_eq!(strip("> <@a:hs> hi\n> there\n\nanswer"), "answer");
        assert_eq!(
            strip("> not a quote\nsame paragraph"),
            "> not a quote\nsame paragraph"
        );
        assert_eq!(strip("plain"), "plain");
    }

    #[test]
    fn a_text_over_the_channel_bound_is_cut_with_a_marker() {
        use aviary_rules::text::{MAX_TEXT_BYTES, TRIM_MARKER};
        let long = "é".repeat(MAX_TEXT_BYTES);
        let text = super::inbound_text(&long);
        assert!(text.len() <= MAX_TEXT_BYTES, "{}", text.len());
        assert!(text.ends_with(TRIM_MARKER));
        assert_eq!(super::inbound_text("> <@a:hs> q\n\nshort"), "short");
    }
}
