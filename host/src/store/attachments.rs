//! Attachments in the store: the blob files (see [`blobs`](super::blobs))
//! and the index of which messages refer to which blob, written in the same
//! write as the message so a message and its references never part.

use std::time::Duration;

use anyhow::Result;

use super::state::Op;
use super::{keys, Attachment, MessageRecord, Store};

impl Store {
    /// Stores the bytes of an attachment durably and returns their blob id.
    /// Refused with [`Unavailable`](super::Unavailable) while the disk is
    /// under its reserve.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<String> {
        self.inner.state.admit()?;
        self.inner.blobs.put(bytes)
    }

    /// The bytes of blob `id`.
    pub fn blob(&self, id: &str) -> Result<Vec<u8>> {
        self.inner.blobs.read(id)
    }

    /// Attachment `id` as a message of one of `bot`'s conversations carries
    /// it, if one does.
    pub fn attachment_of(&self, bot: &str, id: &str) -> Result<Option<Attachment>> {
        self.first_carried(bot, id, &keys::blob_refs_of(id, bot))
    }

    /// Attachment `id` as a message of this conversation carries it, if one
    /// does: only then may the conversation's token download it.
    pub fn attachment_in(
        &self,
        bot: &str,
        conversation: &str,
        id: &str,
    ) -> Result<Option<Attachment>> {
        self.first_carried(bot, id, &keys::blob_refs_in(id, bot, conversation))
    }

    /// The attachment `id` of the first message whose reference to it is
    /// under `prefix` (within `b/<id>/<bot>/`).
    fn first_carried(&self, bot: &str, id: &str, prefix: &[u8]) -> Result<Option<Attachment>> {
        let Some(item) = self.inner.state.scan_prefix(prefix).next() else {
            return Ok(None);
        };
        let (key, _) = item?;
        let rest = std::str::from_utf8(&key[keys::blob_refs_of(id, bot).len()..])?;
        let Some((conversation, message)) = rest.rsplit_once('/') else {
            return Ok(None);
        };
        let Some(record) = self
            .inner
            .state
            .get(&keys::message(bot, conversation, message))?
        else {
            return Ok(None);
        };
        let record = MessageRecord::decode(&record)?;
        Ok(record.attachments.into_iter().find(|a| a.id == id))
    }

    /// Deletes the blobs no message refers to that are older than `grace`
    /// (younger ones may belong to a message being stored); returns how
    /// many it deleted.
    pub fn collect_blobs(&self, grace: Duration) -> Result<usize> {
        let state = &self.inner.state;
        self.inner.blobs.sweep(grace, |id| {
            Ok(state
                .scan_prefix(&keys::blob_refs(id))
                .next()
                .transpose()?
                .is_some())
        })
    }
}

/// The index entries that say `message` of a conversation refers to its
/// attachments' blobs.
pub(super) fn refs(bot: &str, conversation: &str, message: &MessageRecord) -> Vec<Op> {
    message
        .attachments
        .iter()
        .map(|a| {
            Op::Put(
                keys::blob_ref(&a.id, bot, conversation, &message.id),
                Vec::new(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Effects, Outgoing};

    fn attachment(id: String) -> Attachment {
        Attachment {
            id,
            name: Some("a.png".into()),
            media_type: "image/png".into(),
            size: 3,
        }
    }

    #[test]
    fn attached_blobs_are_kept_and_reachable_only_from_their_conversation() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let sent = store.put_blob(b"in").unwrap();
        let made = store.put_blob(b"out").unwrap();
        let orphan = store.put_blob(b"orphan").unwrap();
        let accepted = store
            .accept_inbound("b", "c", "alice", "look", &[attachment(sent.clone())])
            .unwrap();
        assert_eq!(accepted.message.attachments[0].id, sent);
        let effects = Effects {
            sends: vec![Outgoing {
                conversation: "c".into(),
                text: "here".into(),
                reply_to: None,
                attachments: vec![attachment(made.clone())],
            }],
            ..Effects::default()
        };
        store.commit("b", accepted.events[1].seq, &effects).unwrap();
        store.flush().unwrap();
        let found = |bot: &str, conversation: &str, id: &str| {
            store
                .attachment_in(bot, conversation, id)
                .unwrap()
                .map(|a| a.id)
        };
        assert_eq!(found("b", "c", &sent).as_deref(), Some(sent.as_str()));
        assert_eq!(found("b", "c", &made).as_deref(), Some(made.as_str()));
        assert_eq!(found("b", "other", &sent), None);
        assert_eq!(found("other", "c", &sent), None);
        assert_eq!(found("b", "c", &orphan), None);
        let found = store.attachment_of("b", &made).unwrap().unwrap();
        assert_eq!(found.id, made);
        assert!(store.attachment_of("other", &made).unwrap().is_none());

        assert_eq!(store.collect_blobs(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(store.collect_blobs(Duration::ZERO).unwrap(), 1);
        assert_eq!(store.blob(&sent).unwrap(), b"in");
        assert_eq!(store.blob(&made).unwrap(), b"out");
        assert!(store.blob(&orphan).is_err());
        let messages = store.messages_after("b", "c", None, 10).unwrap();
        assert_eq!(messages[1].attachments[0].id, made);
    }
}
