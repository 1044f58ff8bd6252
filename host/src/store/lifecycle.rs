//! What the store keeps of each bot's lifecycle: the versions it ran (for
//! `aviary plugin rollback`), whether the admin disabled it, and the kv
//! writes of a `migrate` call, which belong to no event.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::state::Op;
use super::{keys, now_ms, CommitError, Effects, Store};

/// One time a version of a bot started to serve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionEntry {
    pub version: String,
    pub sha256: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    /// What made it serve: `load`, `rollback` or `approve`.
    pub how: String,
}

/// Keys deleted per write when purging a bot's kv.
const PURGE_BATCH: usize = 1024;

impl Store {
    /// Records that `version` (`sha256`) of `bot` started to serve.
    pub fn record_version(&self, bot: &str, version: &str, sha256: &str, how: &str) -> Result<()> {
        let entry = VersionEntry {
            version: version.into(),
            sha256: sha256.into(),
            at: now_ms(),
            how: how.into(),
        };
        let key = keys::version(bot, &self.next_id()?);
        self.inner
            .state
            .write(vec![Op::Put(key, serde_json::to_vec(&entry)?)]);
        Ok(())
    }

    /// Every version `bot` served, oldest first.
    pub fn versions(&self, bot: &str) -> Result<Vec<VersionEntry>> {
        self.inner
            .state
            .scan_prefix(&keys::version_prefix(bot))
            .map(|item| {
                let (_, value) = item?;
                serde_json::from_slice(&value).context("corrupt version record")
            })
            .collect()
    }

    /// Whether the admin disabled `bot`.
    pub fn is_disabled(&self, bot: &str) -> Result<bool> {
        Ok(self.inner.state.get(&keys::disabled(bot))?.is_some())
    }

    /// Disables or enables `bot`, durably.
    pub fn set_disabled(&self, bot: &str, disabled: bool) -> Result<()> {
        let key = keys::disabled(bot);
        let op = if disabled {
            Op::Put(key, Vec::new())
        } else {
            Op::Delete(key)
        };
        self.inner.state.write(vec![op]);
        self.flush()
    }

    /// Deletes every kv key of `bot`; returns how many there were.
    pub fn purge_kv(&self, bot: &str) -> Result<usize> {
        let keys: Vec<Vec<u8>> = self
            .inner
            .state
            .scan_prefix(&keys::kv_prefix(bot))
            .map(|item| item.map(|(key, _)| key))
            .collect::<Result<_>>()?;
        for batch in keys.chunks(PURGE_BATCH) {
            let ops = batch.iter().map(|k| Op::Delete(k.clone())).collect();
            self.inner.state.write(ops);
        }
        self.flush()?;
        Ok(keys.len())
    }

    /// Commits the kv writes of a `migrate` call, its reads checked as an
    /// event's are. Sends are not allowed there, so there are none. Not
    /// waited on: the journal is ordered, so any event the new version
    /// commits later is durable only once these writes are.
    pub fn commit_kv(&self, effects: &Effects) -> Result<(), CommitError> {
        let writes: Vec<Op> = effects
            .kv_writes
            .iter()
            .map(|(k, v)| Op::from((k.clone(), v.clone())))
            .collect();
        self.inner
            .state
            .write_checked(&effects.kv_reads, writes)
            .ok_or(CommitError::Conflict)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_back_in_order_and_disable_and_purge_hold() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store.record_version("b", "1", "aa", "load").unwrap();
        store.record_version("b", "2", "bb", "load").unwrap();
        store.record_version("bc", "9", "cc", "load").unwrap();
        let seen: Vec<String> = store
            .versions("b")
            .unwrap()
            .into_iter()
            .map(|v| v.version)
            .collect();
        assert_eq!(seen, ["1", "2"], "another bot's versions stay apart");

        assert!(!store.is_disabled("b").unwrap());
        store.set_disabled("b", true).unwrap();
        assert!(store.is_disabled("b").unwrap() && !store.is_disabled("bc").unwrap());
        store.set_disabled("b", false).unwrap();
        assert!(!store.is_disabled("b").unwrap());

        let ops = (0..3000)
            .map(|i| Op::Put(keys::kv("b", &format!("k{i}")), vec![1]))
            .chain([Op::Put(keys::kv("bc", "keep"), vec![2])])
            .collect();
        store.inner.state.write(ops);
        assert_eq!(store.purge_kv("b").unwrap(), 3000);
        assert_eq!(store.purge_kv("b").unwrap(), 0);
        assert!(store
            .inner
            .state
            .get(&keys::kv("bc", "keep"))
            .unwrap()
            .is_some());
    }
}
