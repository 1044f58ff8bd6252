//! Records with an expiry that the web channel keeps: conversation tokens
//! (by the hash of the token, never the token) and the `Idempotency-Key`s
//! of accepted messages.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{keys, now_ms, Op, Store};

/// What a conversation token grants: one user in one conversation of one
/// bot, until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    pub bot: String,
    pub conversation: String,
    /// The sender of every message posted with the token.
    pub user: String,
    /// A display name for the user.
    pub name: String,
    /// Unix milliseconds after which the token is refused.
    pub expires_at: u64,
}

/// A remembered `Idempotency-Key`: the message it created, until when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Remembered {
    pub id: String,
    pub expires_at: u64,
}

/// How long an `Idempotency-Key` is remembered: a day.
pub const IDEMPOTENCY_MS: u64 = 24 * 3600 * 1000;

/// Lower-case hex sha256 of `bytes`: how tokens and idempotency keys are
/// named in the store.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

impl Store {
    /// Stores a token record under the token's hash; durable once
    /// [`Store::wait_durable`] returns. Refused while the disk is under its
    /// reserve.
    pub fn put_token(&self, hash: &str, record: &TokenRecord) -> Result<()> {
        self.inner.state.admit()?;
        self.inner.state.write(vec![Op::Put(
            keys::token(hash),
            serde_json::to_vec(record)?,
        )]);
        Ok(())
    }

    /// Replaces the token `old` by `new` in one step: the old one stops
    /// working as the new one starts.
    pub fn replace_token(&self, old: &str, new: &str, record: &TokenRecord) -> Result<()> {
        self.inner.state.admit()?;
        self.inner.state.write(vec![
            Op::Delete(keys::token(old)),
            Op::Put(keys::token(new), serde_json::to_vec(record)?),
        ]);
        Ok(())
    }

    /// The live record of the token with this hash; `None` when unknown or
    /// expired.
    pub fn token(&self, hash: &str) -> Result<Option<TokenRecord>> {
        let Some(value) = self.inner.state.get(&keys::token(hash))? else {
            return Ok(None);
        };
        let record: TokenRecord = serde_json::from_slice(&value).context("corrupt token record")?;
        Ok((record.expires_at > now_ms()).then_some(record))
    }

    /// The message id remembered under `key`, unless it expired.
    pub(super) fn remembered(&self, key: &[u8]) -> Result<Option<String>> {
        let Some(value) = self.inner.state.get(key)? else {
            return Ok(None);
        };
        let record: Remembered =
            serde_json::from_slice(&value).context("corrupt idempotency record")?;
        Ok((record.expires_at > now_ms()).then_some(record.id))
    }

    /// Deletes expired tokens and idempotency keys; returns how many.
    pub fn purge_expired(&self) -> Result<usize> {
        #[derive(Deserialize)]
        struct Expiring {
            expires_at: u64,
        }
        let now = now_ms();
        let mut expired_keys = Vec::new();
        for prefix in [keys::TOKEN, keys::IDEMPOTENCY, keys::WEBHOOK_SIGNATURE] {
            for item in self.inner.state.scan_prefix(prefix) {
                let (key, value) = item?;
                let expired = serde_json::from_slice::<Expiring>(&value)
                    .map_or(true, |record| record.expires_at <= now);
                if expired {
                    expired_keys.push(Op::Delete(key));
                }
            }
        }
        let count = expired_keys.len();
        if count > 0 {
            self.inner.state.write(expired_keys);
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Inbound;

    fn record(expires_at: u64) -> TokenRecord {
        TokenRecord {
            bot: "echo".into(),
            conversation: "c1".into(),
            user: "alice".into(),
            name: "Alice".into(),
            expires_at,
        }
    }

    #[test]
    fn tokens_expire_and_are_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.put_token("aa", &record(now_ms() + 60_000)).unwrap();
        store.put_token("old", &record(now_ms() - 1)).unwrap();
        assert_eq!(store.token("aa").unwrap().unwrap().user, "alice");
        assert_eq!(store.token("old").unwrap(), None, "an expired token");
        assert_eq!(store.token("nope").unwrap(), None);

        store
            .replace_token("aa", "bb", &record(now_ms() + 60_000))
            .unwrap();
        assert_eq!(store.token("aa").unwrap(), None, "the old token is revoked");
        assert!(store.token("bb").unwrap().is_some());
        assert_eq!(store.purge_expired().unwrap(), 1);
        assert!(store
            .inner
            .state
            .get(&keys::token("old"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn an_idempotency_key_answers_with_the_first_message() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let first = store
            .accept_inbound_once("web", "echo", "c1", "alice", "hi", &[], "k-1")
            .unwrap();
        let Inbound::Accepted(first) = first else {
            panic!("the first post is a repeat");
        };
        let again = store
            .accept_inbound_once("web", "echo", "c1", "alice", "hi", &[], "k-1")
            .unwrap();
        assert!(
            matches!(&again, Inbound::Repeated { id } if *id == first.message.id),
            "{again:?}"
        );
        assert_eq!(
            store.pending_events().unwrap().len(),
            2,
            "a contact and one message"
        );
        // The same key in another conversation is another message.
        let other = store
            .accept_inbound_once("web", "echo", "c2", "alice", "hi", &[], "k-1")
            .unwrap();
        assert!(matches!(other, Inbound::Accepted(_)));
        assert_eq!(
            store.pending_events().unwrap().len(),
            4,
            "two contacts, two messages"
        );
    }
}
