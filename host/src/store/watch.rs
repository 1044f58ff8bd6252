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
    /// Per conversation, in id order: (message id, flush generation it needs).
    hidden: Mutex<HashMap<ConversationKey, VecDeque<(String, u64)>>>,
    watchers: Mutex<HashMap<ConversationKey, watch::Sender<String>>>,
}

impl Visibility {
    /// Records a message written to the store; `request_flush` asks for the
    /// flush that will carry it and returns that flush's generation. Called
    /// in id order within a conversation.
    ///
    /// The flush is requested with the lock held so that [`Self::durable`]
    /// for that generation cannot run before the message is recorded (it
    /// would then stay hidden until some later flush).
    pub fn written(
        &self,
        bot: &str,
        conversation: &str,
        id: &str,
        request_flush: impl FnOnce() -> u64,
    ) {
        let mut hidden = self.hidden.lock();
        let generation = request_flush();
        hidden
            .entry((bot.to_owned(), conversation.to_owned()))
            .or_default()
            .push_back((id.to_owned(), generation));
    }

    /// Flush `generation` finished: reveal what it made durable and wake
    /// the watchers of those conversations.
    pub fn durable(&self, generation: u64) {
        let mut revealed = Vec::new();
        self.hidden.lock().retain(|key, queue| {
            let mut last = None;
            while queue
                .front()
                .is_some_and(|(_, needed)| *needed <= generation)
            {
                last = queue.pop_front().map(|(id, _)| id);
            }
            if let Some(id) = last {
                revealed.push((key.clone(), id));
            }
            !queue.is_empty()
        });
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
        if hidden.is_empty() {
            return None;
        }
        hidden
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
        visibility.written("b", "c", "01", || 1);
        visibility.written("b", "c", "02", || 2);
        assert_eq!(visibility.first_hidden("b", "c").as_deref(), Some("01"));
        visibility.durable(1);
        assert_eq!(visibility.first_hidden("b", "c").as_deref(), Some("02"));
        assert!(watcher.has_changed().unwrap());
        assert_eq!(*watcher.borrow_and_update(), "01");
        visibility.durable(2);
        assert_eq!(visibility.first_hidden("b", "c"), None);
        assert_eq!(*watcher.borrow_and_update(), "02");
    }
}
