//! Commits the effects of one `handle` call atomically: its sends, its kv
//! writes and the removal of the event from the pending queue.

use std::collections::BTreeMap;

use super::state::Op;
use super::{keys, now_ms, Direction, MessageRecord, Store};

/// A message the bot asked to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub conversation: String,
    pub text: String,
    pub reply_to: Option<String>,
    /// Files already in the store's blobs (see [`Store::put_blob`]).
    pub attachments: Vec<super::Attachment>,
}

/// The value a kv read saw, checked again at commit.
pub type KvRead = Option<Vec<u8>>;

/// Everything one `handle` call did, buffered until it returns.
#[derive(Debug, Default)]
pub struct Effects {
    /// Messages to store, in the order the bot sent them.
    pub sends: Vec<Outgoing>,
    /// Full store key → the value first read there.
    pub kv_reads: BTreeMap<Vec<u8>, KvRead>,
    /// Full store key → new value, `None` to delete.
    pub kv_writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// How the writes change the bot's kv usage (for its quota).
    pub kv_delta: crate::policy::KvDelta,
    /// Ids of the timers set or cancelled (their writes are in
    /// `kv_writes`), for the scheduler.
    pub timers: Vec<String>,
    /// Outbox jobs enqueued (their writes are in `kv_writes`), for the
    /// delivery engine.
    pub jobs: Vec<u64>,
}

/// Why a commit did not happen.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Another event changed a key this one read; run the event again.
    #[error("a kv key read by this event changed before it committed")]
    Conflict,
    #[error(transparent)]
    Store(#[from] anyhow::Error),
}

impl Store {
    /// Applies `effects` of bot `bot` and removes pending event `seq`, all or
    /// nothing. Returns the stored messages, per conversation.
    pub fn commit(
        &self,
        bot: &str,
        seq: u64,
        effects: &Effects,
    ) -> Result<Vec<(String, MessageRecord)>, CommitError> {
        let conversations: std::collections::BTreeSet<usize> = effects
            .sends
            .iter()
            .map(|send| super::stripe(bot, &send.conversation))
            .collect();
        // Lock stripes in ascending order so two commits never deadlock.
        let _guards: Vec<_> = conversations
            .iter()
            .map(|&i| self.inner.lanes[i].lock())
            .collect();
        let mut messages = Vec::with_capacity(effects.sends.len());
        for send in &effects.sends {
            let record = MessageRecord {
                id: self.next_id()?,
                sender: bot.to_owned(),
                text: send.text.clone(),
                direction: Direction::Out,
                at: now_ms(),
                reply_to: send.reply_to.clone(),
                attachments: send.attachments.clone(),
            };
            messages.push((send.conversation.clone(), record));
        }
        let mut writes: Vec<Op> = Vec::with_capacity(messages.len() + effects.kv_writes.len() + 1);
        writes.push(Op::Delete(keys::pending(seq)));
        for (conversation, record) in &messages {
            writes.push(Op::New(
                keys::message(bot, conversation, &record.id),
                record.encode()?,
            ));
            writes.extend(super::attachments::refs(bot, conversation, record));
        }
        writes.extend(
            effects
                .kv_writes
                .iter()
                .map(|(k, v)| Op::from((k.clone(), v.clone()))),
        );
        let seq = self
            .inner
            .state
            .write_checked(&effects.kv_reads, writes)
            .ok_or(CommitError::Conflict)?;
        for (conversation, record) in &messages {
            self.written(bot, conversation, &record.id, seq);
        }
        Ok(messages)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventRecord;

    fn store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        (dir, store)
    }

    #[test]
    fn commit_stores_replies_and_clears_the_pending_event() {
        let (_dir, store) = store();
        let accepted = store
            .accept_inbound("echo", "c1", "alice", "hi", &[])
            .unwrap();
        assert_eq!(
            accepted.events.len(),
            2,
            "first message of a sender adds a contact"
        );
        assert!(matches!(
            accepted.events[0].event,
            EventRecord::ContactAdded { .. }
        ));
        assert_eq!(store.pending_events().unwrap().len(), 2);
        let seq = accepted.events[1].seq;
        let effects = Effects {
            sends: vec![Outgoing {
                conversation: "c1".into(),
                text: "echo: hi".into(),
                reply_to: Some(accepted.message.id.clone()),
                attachments: Vec::new(),
            }],
            ..Effects::default()
        };
        store.commit("echo", seq, &effects).unwrap();
        store.flush().unwrap();
        let messages = store.messages_after("echo", "c1", None, 100).unwrap();
        assert_eq!(messages.len(), 2);
        assert_eq!(messages[1].text, "echo: hi");
        assert_eq!(messages[1].direction, Direction::Out);
        assert!(messages[0].id < messages[1].id);
        assert_eq!(store.pending_events().unwrap().len(), 1);
        let after = store
            .messages_after("echo", "c1", Some(&messages[0].id), 100)
            .unwrap();
        assert_eq!(after, vec![messages[1].clone()]);
        assert!(store
            .messages_after("echo", "c2", None, 100)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_changed_read_is_a_conflict_and_commits_nothing() {
        let (_dir, store) = store();
        let key = keys::kv("echo", "n");
        let mut effects = Effects::default();
        effects.kv_reads.insert(key.clone(), None);
        effects.kv_writes.insert(key.clone(), Some(b"1".to_vec()));
        effects.sends.push(Outgoing {
            conversation: "c".into(),
            text: "1".into(),
            reply_to: None,
            attachments: Vec::new(),
        });
        store
            .state()
            .write(vec![Op::Put(key.clone(), b"7".to_vec())]);
        assert!(matches!(
            store.commit("echo", 1, &effects),
            Err(CommitError::Conflict)
        ));
        store.flush().unwrap();
        assert_eq!(store.state().get(&key).unwrap().unwrap(), b"7");
        assert!(store
            .messages_after("echo", "c", None, 10)
            .unwrap()
            .is_empty());
        effects.kv_reads.insert(key.clone(), Some(b"7".to_vec()));
        store.commit("echo", 1, &effects).unwrap();
        assert_eq!(store.state().get(&key).unwrap().unwrap(), b"1");
    }

    #[test]
    fn dead_letters_leave_the_pending_queue() {
        let (_dir, store) = store();
        let accepted = store
            .accept_inbound("echo", "c1", "alice", "/fail", &[])
            .unwrap();
        let event = accepted.events.last().unwrap();
        store.dead_letter(event, "failed on purpose", 3).unwrap();
        let letters = store.dead_letters().unwrap();
        assert_eq!(letters.len(), 1);
        assert_eq!(letters[0].error, "failed on purpose");
        assert!(store
            .pending_events()
            .unwrap()
            .iter()
            .all(|p| p.seq != event.seq));
    }
}
