//! What readers may see: a message becomes visible (to GET, long-polls and
//! WebSockets) only once it is on disk, so nothing a client was shown can
//! vanish in a crash. Written-but-not-yet-durable messages are tracked per
//! conversation; readers stop before the first of them.

use std::collections::{HashMap, VecDeque};

use parking_lot::Mutex;
use tokio::sync::watch;

type ConversationKey = (String, String);

/// Hidden messages and the long-polls waiting for new visible ones.
#[derive(Default)]
pub struct Visibility {
    hidden: Mutex<Hidden>,
    watchers: Mutex<HashMap<ConversationKey, watch::Sender<String>>>,
}

#[derive(Default)]
struct Hidden {
    /// Every journal record up to this one is durable.
    durable: u64,
    /// Per conversation, in id order: (message id, journal record it needs).
    messages: HashMap<ConversationKey, VecDeque<(String, u64)>>,
}

impl Visibility {
    /// Records a message written to the store in journal record `seq`.
    /// Called in id order within a conversation. A record already durable
    /// (the journal may be faster than the caller) reveals it at once.
    pub fn written(&self, bot: &str, conversation: &str, id: &str, seq: u64) {
        let key = (bot.to_owned(), conversation.to_owned());
        let mut hidden = self.hidden.lock();
        if seq > hidden.durable {
            hidden
                .messages
                .entry(key)
                .or_default()
                .push_back((id.to_owned(), seq));
            return;
        }
        drop(hidden);
        self.reveal(vec![(key, id.to_owned())]);
    }

    /// Journal record `seq` and all before it are durable: reveal what they
    /// hold and wake the watchers of those conversations.
    pub fn durable(&self, seq: u64) {
        let mut revealed = Vec::new();
        let mut hidden = self.hidden.lock();
        hidden.durable = hidden.durable.max(seq);
        hidden.messages.retain(|key, queue| {
            let mut last = None;
            while queue.front().is_some_and(|(_, needed)| *needed <= seq) {
                last = queue.pop_front().map(|(id, _)| id);
            }
            if let Some(id) = last {
                revealed.push((key.clone(), id));
            }
            !queue.is_empty()
        });
        drop(hidden);
        self.reveal(revealed);
    }

    fn reveal(&self, revealed: Vec<(ConversationKey, String)>) {
        let watchers = self.watchers.lock();
        for (key, id) in revealed {
            if let Some(sender) = watchers.get(&key) {
                sender.send_replace(id);
            }
        }
    }

    /// The first message id of a conversation that readers may not see yet.
    pub fn first_hidden(&self, bot: &str, conversation: &str) -> Option<String> {
        let hidden = self.hidden.lock();
        if hidden.messages.is_empty() {
            return None;
        }
        hidden
            .messages
            .get(&(bot.to_owned(), conversation.to_owned()))
            .and_then(|q| q.front())
            .map(|(id, _)| id.clone())
    }

    /// A receiver that changes whenever messages of a conversation become visible.
    pub fn subscribe(&self, bot: &str, conversation: &str) -> watch::Receiver<String> {
        let mut watchers = self.watchers.lock();
        if watchers.len() > 1024 {
            watchers.retain(|_, sender| sender.receiver_count() > 0);
        }
        watchers
            .entry((bot.to_owned(), conversation.to_owned()))
            .or_insert_with(|| watch::channel(String::new()).0)
            .subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_hidden_until_their_flush_and_wake_watchers_then() {
        let visibility = Visibility::default();
        let mut watcher = visibility.subscribe("b", "c");
        visibility.written("b", "c", "01", 1);
        visibility.written("b", "c", "02", 2);
        assert_eq!(visibility.first_hidden("b", "c").as_deref(), Some("01"));
        visibility.durable(1);
        assert_eq!(visibility.first_hidden("b", "c").as_deref(), Some("02"));
        assert!(watcher.has_changed().unwrap());
        assert_eq!(*watcher.borrow_and_update(), "01");
        visibility.durable(2);
        assert_eq!(visibility.first_hidden("b", "c"), None);
        assert_eq!(*watcher.borrow_and_update(), "02");
        // A record that became durable before the writer got here.
        visibility.written("b", "c", "03", 2);
        assert_eq!(visibility.first_hidden("b", "c"), None);
        assert_eq!(*watcher.borrow_and_update(), "03");
    }
}
