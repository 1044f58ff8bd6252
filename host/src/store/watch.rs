//! Wakes long-polls and WebSockets when a conversation gets a new message.

use std::collections::HashMap;

use parking_lot::Mutex;
use tokio::sync::watch;

/// One watch channel per conversation that somebody is watching. The value
/// is the id of the newest message.
#[derive(Default)]
pub struct Watchers {
    channels: Mutex<HashMap<(String, String), watch::Sender<String>>>,
}

impl Watchers {
    pub fn subscribe(&self, bot: &str, conversation: &str) -> watch::Receiver<String> {
        let mut channels = self.channels.lock();
        if channels.len() > 1024 {
            channels.retain(|_, sender| sender.receiver_count() > 0);
        }
        channels
            .entry((bot.to_owned(), conversation.to_owned()))
            .or_insert_with(|| watch::channel(String::new()).0)
            .subscribe()
    }

    pub fn notify(&self, bot: &str, conversation: &str, id: &str) {
        let channels = self.channels.lock();
        if channels.is_empty() {
            return;
        }
        if let Some(sender) = channels.get(&(bot.to_owned(), conversation.to_owned())) {
            sender.send_replace(id.to_owned());
        }
    }
}
