//! Ephemeral signals from a bot to the people in a conversation: "typing"
//! and drafts (the growing text of an answer being generated). They are
//! never stored: a channel that has someone listening shows them, nobody
//! else ever sees them, and a restart forgets them. Signals are keyed by
//! bot and conversation, so a bot reaches only its own conversations.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::broadcast;

/// Signals buffered per listener before the oldest are skipped; a draft
/// carries the whole text so far, so a skipped one loses nothing.
const BUFFER: usize = 64;

/// One ephemeral signal.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Signal {
    /// The bot is working on an answer.
    Typing,
    /// The answer so far. `done` marks the last draft of a generation;
    /// the bot's real message follows when its event commits.
    Draft { text: String, done: bool },
}

type Key = (String, String);

/// Where signals are published and listened to.
#[derive(Default)]
pub struct LiveHub {
    listeners: Mutex<HashMap<Key, broadcast::Sender<Arc<Signal>>>>,
    /// Channels that show signals themselves (Matrix), told of every one.
    channels: parking_lot::RwLock<Vec<Arc<dyn crate::channels::Channel>>>,
}

/// A listener of one conversation; stops listening when dropped.
pub struct Listener {
    hub: Arc<LiveHub>,
    key: Key,
    receiver: broadcast::Receiver<Arc<Signal>>,
}

impl LiveHub {
    /// Shows `signal` to whoever listens to `bot`'s `conversation` now.
    pub fn publish(&self, bot: &str, conversation: &str, signal: Signal) {
        for channel in self.channels.read().iter() {
            channel.signal(bot, conversation, &signal);
        }
        let key = (bot.to_owned(), conversation.to_owned());
        if let Some(sender) = self.listeners.lock().get(&key) {
            // No receiver left is not an error: nobody is watching.
            let _ = sender.send(Arc::new(signal));
        }
    }

    /// Tells `channel` of every signal from now on; it shows those of its
    /// own conversations.
    pub fn tap(&self, channel: Arc<dyn crate::channels::Channel>) {
        self.channels.write().push(channel);
    }

    /// Starts listening to `bot`'s `conversation`.
    pub fn listen(self: &Arc<Self>, bot: &str, conversation: &str) -> Listener {
        let key = (bot.to_owned(), conversation.to_owned());
        let receiver = self
            .listeners
            .lock()
            .entry(key.clone())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe();
        Listener {
            hub: self.clone(),
            key,
            receiver,
        }
    }

    /// How many conversations have listeners (for tests of the clean-up).
    pub fn listened(&self) -> usize {
        self.listeners.lock().len()
    }
}

impl Listener {
    /// The next signal already buffered, if any, without waiting.
    pub fn try_next(&mut self) -> Option<Arc<Signal>> {
        loop {
            match self.receiver.try_recv() {
                Ok(signal) => return Some(signal),
                Err(broadcast::error::TryRecvError::Lagged(_)) => continue,
                Err(_) => return None,
            }
        }
    }

    /// The next signal; after a burst it skips to the ones still buffered.
    pub async fn next(&mut self) -> Arc<Signal> {
        loop {
            match self.receiver.recv().await {
                Ok(signal) => return signal,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
            }
        }
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        let mut listeners = self.hub.listeners.lock();
        if let Some(sender) = listeners.get(&self.key) {
            // This receiver is still alive while it drops: it is the last one
            // when the count is 1.
            if sender.receiver_count() <= 1 {
                listeners.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_listener_gets_its_own_conversation_only_and_cleans_up() {
        let hub = Arc::new(LiveHub::default());
        let mut mine = hub.listen("llm-chat", "c1");
        let other = hub.listen("llm-chat", "c2");
        hub.publish("llm-chat", "c2", Signal::Typing);
        hub.publish("echo", "c1", Signal::Typing);
        hub.publish(
            "llm-chat",
            "c1",
            Signal::Draft {
                text: "Hel".into(),
                done: false,
            },
        );
        assert_eq!(
            *mine.next().await,
            Signal::Draft {
                text: "Hel".into(),
                done: false
            }
        );
        assert_eq!(hub.listened(), 2);
        drop(other);
        drop(mine);
        assert_eq!(hub.listened(), 0, "no listener keeps no entry");
        hub.publish("llm-chat", "c1", Signal::Typing);
    }

    #[test]
    fn buffered_signals_are_taken_without_waiting_then_none() {
        let hub = Arc::new(LiveHub::default());
        let mut listener = hub.listen("llm-chat", "c1");
        assert!(listener.try_next().is_none());
        hub.publish("llm-chat", "c1", Signal::Typing);
        assert_eq!(listener.try_next().as_deref(), Some(&Signal::Typing));
        assert!(listener.try_next().is_none());
    }

    #[test]
    fn signals_serialise_with_their_kind() {
        let draft = serde_json::to_value(Signal::Draft {
            text: "a".into(),
            done: true,
        })
        .unwrap();
        assert_eq!(
            draft,
            serde_json::json!({"kind": "draft", "text": "a", "done": true})
        );
        let typing = serde_json::to_value(Signal::Typing).unwrap();
        assert_eq!(typing, serde_json::json!({"kind": "typing"}));
    }
}
