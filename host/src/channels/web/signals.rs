//! The web channel's side of the ephemeral signals: each open WebSocket
//! listens to its conversation, and [`Signals`] (a [`Channel`]) hands it
//! the signals of that conversation as they are published. Nobody
//! listening means the signal is dropped, as signals are never stored.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::broadcast;

use crate::channels::Channel;
use crate::live::Signal;

/// Signals buffered per listener before the oldest are skipped; a draft
/// carries the whole text so far, so a skipped one loses nothing.
const BUFFER: usize = 64;

type Key = (String, String);

/// The WebSockets listening to each conversation.
#[derive(Default)]
pub struct Signals {
    listeners: Mutex<HashMap<Key, broadcast::Sender<Arc<Signal>>>>,
}

impl Channel for Signals {
    fn signal(&self, bot: &str, conversation: &str, signal: &Arc<Signal>) {
        let key = (bot.to_owned(), conversation.to_owned());
        if let Some(sender) = self.listeners.lock().get(&key) {
            // No receiver left is not an error: nobody is watching.
            let _ = sender.send(signal.clone());
        }
    }
}

impl Signals {
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
            signals: self.clone(),
            key,
            receiver,
        }
    }

    /// How many conversations have listeners (for tests of the clean-up).
    #[cfg(test)]
    fn listened(&self) -> usize {
        self.listeners.lock().len()
    }
}

/// A listener of one conversation; stops listening when dropped.
pub struct Listener {
    signals: Arc<Signals>,
    key: Key,
    receiver: broadcast::Receiver<Arc<Signal>>,
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
        let mut listeners = self.signals.listeners.lock();
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
    use crate::live::LiveHub;

    fn draft(text: &str) -> Signal {
        Signal::Draft {
            text: text.into(),
            done: false,
        }
    }

    #[tokio::test]
    async fn a_listener_gets_its_own_conversation_only_and_cleans_up() {
        let hub = LiveHub::default();
        let web = Arc::new(Signals::default());
        hub.tap(web.clone());
        let mut mine = web.listen("llm-chat", "c1");
        let other = web.listen("llm-chat", "c2");
        hub.publish("llm-chat", "c2", Signal::Typing);
        hub.publish("echo", "c1", Signal::Typing);
        hub.publish("llm-chat", "c1", draft("Hel"));
        assert_eq!(*mine.next().await, draft("Hel"));
        assert_eq!(web.listened(), 2);
        drop(other);
        drop(mine);
        assert_eq!(web.listened(), 0, "no listener keeps no entry");
        hub.publish("llm-chat", "c1", Signal::Typing);
    }

    #[test]
    fn buffered_signals_are_taken_without_waiting_then_none() {
        let hub = LiveHub::default();
        let web = Arc::new(Signals::default());
        hub.tap(web.clone());
        let mut listener = web.listen("llm-chat", "c1");
        assert!(listener.try_next().is_none());
        hub.publish("llm-chat", "c1", Signal::Typing);
        assert_eq!(listener.try_next().as_deref(), Some(&Signal::Typing));
        assert!(listener.try_next().is_none());
    }
}
