//! Conversation references: which conversations a bot has seen, through
//! which channel and when last. A bot may send into those (proactive
//! messages), never into one it has not seen.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::{keys, Op, Store};

/// Where and when a bot last saw a conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConversationRef {
    pub channel: String,
    /// Milliseconds since the Unix epoch of its last inbound message.
    pub last_seen: u64,
}

/// The write that records an inbound message of `conversation`, through
/// `channel`, at `at`.
pub(super) fn seen(bot: &str, conversation: &str, channel: &str, at: u64) -> Result<Op> {
    let reference = ConversationRef {
        channel: channel.into(),
        last_seen: at,
    };
    Ok(Op::Put(
        keys::conversation_ref(bot, conversation),
        serde_json::to_vec(&reference)?,
    ))
}

impl Store {
    /// The reference of a conversation `bot` has seen, if it has. A
    /// conversation from before references were kept counts as seen
    /// through its senders.
    pub fn conversation_ref(
        &self,
        bot: &str,
        conversation: &str,
    ) -> Result<Option<ConversationRef>> {
        if let Some(value) = self
            .inner
            .state
            .get(&keys::conversation_ref(bot, conversation))?
        {
            return serde_json::from_slice(&value)
                .map(Some)
                .context("corrupt conversation reference");
        }
        let mut senders = self
            .inner
            .state
            .scan_prefix(&keys::senders_prefix(bot, conversation));
        Ok(senders.next().transpose()?.map(|_| ConversationRef {
            channel: crate::channels::WEB.into(),
            last_seen: 0,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_conversation_is_seen_by_its_own_bot_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .accept_inbound("echo", "c1", "alice", "hi", &[])
            .unwrap();
        let seen = store.conversation_ref("echo", "c1").unwrap().unwrap();
        assert_eq!(seen.channel, "web");
        assert!(seen.last_seen > 0);
        assert!(store.conversation_ref("echo", "c2").unwrap().is_none());
        assert!(
            store.conversation_ref("other", "c1").unwrap().is_none(),
            "another bot's conversation of the same id"
        );
    }
}
