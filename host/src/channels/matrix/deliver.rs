//! Delivering: one task per room posts the bot's committed messages, in
//! order, once they are durable. The store's messages are the outbox:
//! each is sent with the transaction id `aviary-<message id>`, so a retry
//! (after a 429, a 5xx, a lost answer or a restart) never posts twice, and
//! the room's cursor moves past a batch only once the homeserver took it.

use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};

use super::Account;
use crate::store::{Direction, MessageRecord};

/// Messages read from the store per round.
const BATCH: usize = 64;

impl Account {
    /// Starts the delivery task of `room` unless it runs already.
    pub(super) fn deliver_to(&self, conversation: &str, room: &str) {
        let mut delivering = self.delivering.lock();
        if delivering.contains_key(conversation) {
            return;
        }
        delivering.insert(conversation.to_owned(), room.to_owned());
        drop(delivering);
        let account = self.me.upgrade().expect("the account outlives its rooms");
        let (conversation, room) = (conversation.to_owned(), room.to_owned());
        tokio::spawn(async move {
            if let Err(error) = account.deliver_forever(&conversation, &room).await {
                tracing::error!(bot = %account.bot, room, "Matrix delivery stopped: {error:#}");
            }
        });
    }

    async fn deliver_forever(&self, conversation: &str, room: &str) -> Result<()> {
        let mut changes = self.store.subscribe(&self.bot, conversation);
        loop {
            let after = self.rooms.delivered(conversation)?;
            let messages =
                self.store
                    .messages_after(&self.bot, conversation, after.as_deref(), BATCH)?;
            for message in messages.iter().filter(|m| m.direction == Direction::Out) {
                self.post(conversation, room, message).await?;
            }
            // One cursor write per batch: a crash before it posts the batch
            // again under the same transaction ids, which the homeserver
            // answers without posting twice.
            if let Some(last) = messages.last() {
                self.rooms.set_delivered(conversation, &last.id);
            }
            if messages.len() < BATCH {
                changes.changed().await?;
            }
        }
    }

    /// Posts one message, waiting out rate limits and outages; a message
    /// the homeserver refuses for good is logged and skipped.
    async fn post(&self, conversation: &str, room: &str, message: &MessageRecord) -> Result<()> {
        let mut contents = Vec::new();
        for (n, attachment) in message.attachments.iter().enumerate() {
            let bytes = self.store.blob(&attachment.id)?;
            let name = attachment.name.clone().unwrap_or_else(|| "file".into());
            let uri = self
                .retrying(|| {
                    self.client
                        .upload(bytes.clone(), &attachment.media_type, &name)
                })
                .await;
            if let Some(uri) = uri {
                let msgtype = if attachment.media_type.starts_with("image/") {
                    "m.image"
                } else {
                    "m.file"
                };
                let info = json!({ "mimetype": attachment.media_type, "size": attachment.size });
                let content = json!({ "msgtype": msgtype, "body": name, "url": uri, "info": info });
                contents.push((format!("aviary-{}-{n}", message.id), content));
            }
        }
        let mut shown_as = None;
        if !message.text.is_empty() || contents.is_empty() {
            let mut content = self.text_content(conversation, message)?;
            // The answer a draft showed replaces it: one message, edited.
            if let Some(draft) = self.finish_draft(conversation).await {
                content = super::drafts::edit(&draft, content);
                shown_as = Some(draft);
            }
            contents.insert(0, (format!("aviary-{}", message.id), content));
        }
        for (txn, content) in contents {
            let sent = self
                .retrying(|| self.client.send(room, &txn, content.clone()))
                .await;
            // An edit's own event is not the message people see and answer.
            if let Some(event) = shown_as.take().or(sent) {
                self.rooms.set_event(conversation, &message.id, &event);
            }
        }
        // The answer is there: the bot no longer shows as typing.
        if self.typed.lock().remove(conversation).is_some() {
            let _ = self.client.typing(room, &self.user, false).await;
        }
        Ok(())
    }

    /// An `m.notice` (what bots send, so that no bot answers another in a
    /// loop), with HTML from its Markdown and, for a reply, the relation to
    /// the message it answers.
    fn text_content(&self, conversation: &str, message: &MessageRecord) -> Result<Value> {
        let mut content = json!({ "msgtype": super::NOTICE, "body": message.text });
        let html = super::format::markdown_html(&message.text);
        if let Some(html) = html {
            content["format"] = "org.matrix.custom.html".into();
            content["formatted_body"] = html.into();
        }
        if let Some(reply_to) = &message.reply_to {
            if let Some(event) = self.rooms.event_of(conversation, reply_to)? {
                content["m.relates_to"] = json!({ "m.in_reply_to": { "event_id": event } });
            }
        }
        Ok(content)
    }

    /// Runs `call` until it succeeds (`Some`) or is refused for good (`None`).
    async fn retrying<T, F, Fut>(&self, mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, super::client::CallError>>,
    {
        let mut failures = 0;
        loop {
            match call().await {
                Ok(value) => return Some(value),
                Err(error) => {
                    failures += 1;
                    let Some(wait) = error.retry_after(failures) else {
                        tracing::error!(bot = %self.bot, "the homeserver refused a message for good: {error}");
                        return None;
                    };
                    tracing::warn!(bot = %self.bot, "Matrix send failed, again in {wait:?}: {error}");
                    tokio::time::sleep(wait.max(Duration::from_millis(10))).await;
                }
            }
        }
    }
}
