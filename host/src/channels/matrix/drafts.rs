//! Drafts as edits: Matrix has no ephemeral "text so far", so a bot's
//! drafts (llm-chat's answer as it is generated) are shown as one message
//! that is edited (`m.replace`) as the text grows, at most once per
//! [`EDIT_EVERY`] to stay within the homeserver's rate limits. The bot's
//! real message, when it is delivered, becomes the last edit of that
//! message rather than a second one ([`Account::finish_draft`]).
//!
//! Drafts are best effort, like every signal: a draft send that fails is
//! not retried (the next draft carries the whole text anyway), and a
//! restart forgets them (the real message then comes as a new one).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::CallError;
use super::Account;

/// Least time between two edits of a draft; the first draft goes out at once.
pub const EDIT_EVERY: Duration = Duration::from_secs(1);

/// The draft shown in one room.
#[derive(Default)]
pub struct Draft {
    state: parking_lot::Mutex<State>,
    /// The draft's event once posted; held while a draft send runs, so
    /// that [`Account::finish_draft`] waits for one in flight.
    event: tokio::sync::Mutex<Option<String>>,
}

#[derive(Default)]
struct State {
    /// The newest text not shown yet.
    pending: Option<String>,
    /// A task is showing the pending text.
    running: bool,
    /// The bot's message arrived: show nothing more.
    closed: bool,
}

impl Account {
    /// Shows `text` as the draft of `conversation` (in `room`).
    pub(super) fn draft(&self, conversation: &str, room: &str, text: &str) {
        let draft = self
            .drafts
            .lock()
            .entry(conversation.to_owned())
            .or_default()
            .clone();
        let mut state = draft.state.lock();
        state.pending = Some(text.to_owned());
        if state.running {
            return;
        }
        state.running = true;
        let account = self.me.upgrade().expect("the account outlives its signals");
        let (room, shown) = (room.to_owned(), draft.clone());
        self.runtime
            .spawn(async move { account.show_drafts(&room, &shown).await });
    }

    /// Shows the pending text of `draft` until none is left.
    async fn show_drafts(&self, room: &str, draft: &Draft) {
        loop {
            let mut event = draft.event.lock().await;
            let text = {
                let mut state = draft.state.lock();
                match state.pending.take().filter(|_| !state.closed) {
                    Some(text) => text,
                    None => {
                        state.running = false;
                        return;
                    }
                }
            };
            let content = match event.as_deref() {
                None => json!({ "msgtype": super::NOTICE, "body": text }),
                Some(original) => edit(original, json!({ "msgtype": super::NOTICE, "body": text })),
            };
            let txn = match crate::ids::random_hex(8) {
                Ok(random) => format!("aviary-draft-{random}"),
                Err(_) => continue,
            };
            let wait = match self.client.send(room, &txn, content).await {
                Ok(id) => {
                    event.get_or_insert(id);
                    EDIT_EVERY
                }
                Err(error) => {
                    tracing::debug!(bot = %self.bot, room, "a draft was not shown: {error}");
                    match error {
                        CallError::RateLimited(Some(wait)) => wait.max(EDIT_EVERY),
                        _ => EDIT_EVERY,
                    }
                }
            };
            drop(event);
            tokio::time::sleep(wait).await;
        }
    }

    /// Ends the draft of `conversation`, if it has one, and returns its
    /// event: the bot's message then replaces it.
    pub(super) async fn finish_draft(&self, conversation: &str) -> Option<String> {
        let draft: Arc<Draft> = self.drafts.lock().remove(conversation)?;
        draft.state.lock().closed = true;
        let event = draft.event.lock().await;
        event.clone()
    }
}

/// `content` as an edit replacing event `original` (clients that do not
/// know edits show the `* ` fallback body).
pub fn edit(original: &str, mut content: Value) -> Value {
    // An edit cannot change what the message relates to (a reply stays
    // what the draft was).
    if let Some(fields) = content.as_object_mut() {
        fields.remove("m.relates_to");
    }
    let mut fallback = content.clone();
    for field in ["body", "formatted_body"] {
        if let Some(text) = content[field].as_str() {
            fallback[field] = format!("* {text}").into();
        }
    }
    fallback["m.new_content"] = content;
    fallback["m.relates_to"] = json!({ "rel_type": "m.replace", "event_id": original });
    fallback
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_edit_carries_the_new_content_and_a_starred_fallback() {
        let mut content = json!({
            "msgtype": "m.text",
            "body": "**hi**",
            "format": "org.matrix.custom.html",
            "formatted_body": "<strong>hi</strong>",
        });
        let reply = json!({ "m.in_reply_to": { "event_id": "$question" } });
        content["m.relates_to"] = reply;
        let edit = edit("$draft", content.clone());
        content.as_object_mut().unwrap().remove("m.relates_to");
        assert_eq!(
            edit["m.new_content"], content,
            "no relation in the new content"
        );
        assert_eq!(edit["m.relates_to"]["rel_type"], "m.replace");
        assert_eq!(edit["m.relates_to"]["event_id"], "$draft");
        assert_eq!(edit["body"], "* **hi**");
        assert_eq!(edit["formatted_body"], "* <strong>hi</strong>");
        assert_eq!(edit["msgtype"], "m.text");
    }
}
