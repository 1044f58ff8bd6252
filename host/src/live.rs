//! Ephemeral signals from a bot to the people in a conversation: "typing"
//! and drafts (the growing text of an answer being generated). They are
//! never stored: the [`LiveHub`] hands each one to every channel, the
//! channel of the conversation shows it to whoever is there (the web
//! channel to its open WebSockets, Matrix in the room), and a restart
//! forgets them. Signals are keyed by bot and conversation, so a bot
//! reaches only its own conversations.

use std::sync::Arc;

use parking_lot::RwLock;
use serde::Serialize;

use crate::channels::Channel;

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

/// Where the bots publish signals: the channels that show them.
#[derive(Default)]
pub struct LiveHub {
    channels: RwLock<Vec<Arc<dyn Channel>>>,
}

impl LiveHub {
    /// Shows `signal` in `bot`'s `conversation`, through whichever channel
    /// it is on.
    pub fn publish(&self, bot: &str, conversation: &str, signal: Signal) {
        let signal = Arc::new(signal);
        for channel in self.channels.read().iter() {
            channel.signal(bot, conversation, &signal);
        }
    }

    /// Hands `channel` every signal from now on; it shows those of its own
    /// conversations.
    pub fn tap(&self, channel: Arc<dyn Channel>) {
        self.channels.write().push(channel);
    }
}

/// A channel that records every signal, for tests of what publishes them.
#[cfg(test)]
#[derive(Default)]
pub struct Recorder(pub parking_lot::Mutex<Vec<(String, String, Signal)>>);

#[cfg(test)]
impl Channel for Recorder {
    fn signal(&self, bot: &str, conversation: &str, signal: &Arc<Signal>) {
        let record = (bot.to_owned(), conversation.to_owned(), (**signal).clone());
        self.0.lock().push(record);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_tapped_channel_gets_every_signal() {
        let hub = LiveHub::default();
        let (a, b) = (Arc::new(Recorder::default()), Arc::new(Recorder::default()));
        hub.publish("echo", "c0", Signal::Typing);
        hub.tap(a.clone());
        hub.tap(b.clone());
        hub.publish("echo", "c1", Signal::Typing);
        let expected = [("echo".to_owned(), "c1".to_owned(), Signal::Typing)];
        assert_eq!(*a.0.lock(), expected);
        assert_eq!(*b.0.lock(), expected);
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
