//! `aviary:bot/kv`: the bot's own key-value namespace.
//!
//! Writes are buffered and committed with the event; every key read is
//! remembered with the value seen, and the commit fails with a conflict (the
//! event then runs again) if another event changed it meanwhile. That makes
//! `increment` and `compare-and-swap` atomic without a lock held across a
//! bot call.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::policy::{BotPolicy, Denial, KvDelta};
use crate::runtime::bindings::aviary::bot::kv::Host;
use crate::runtime::bindings::BotError;
use crate::store::{keys, KvRead};

/// Per-event kv state.
pub struct Kv {
    tree: sled::Tree,
    prefix: Vec<u8>,
    /// Full key → value first seen; checked again at commit.
    pub reads: BTreeMap<Vec<u8>, KvRead>,
    /// Full key → buffered new value (`None` deletes).
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// How the buffered writes change the bot's usage.
    pub delta: KvDelta,
    policy: Arc<BotPolicy>,
    pub denials: Vec<Denial>,
}

impl Kv {
    pub fn new(tree: sled::Tree, bot: &str, policy: Arc<BotPolicy>) -> Kv {
        Kv {
            tree,
            prefix: keys::kv_prefix(bot),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            delta: KvDelta::default(),
            policy,
            denials: Vec::new(),
        }
    }

    fn full_key(&self, key: &str) -> Result<Vec<u8>, BotError> {
        aviary_rules::kv::check_key(key).map_err(BotError::Invalid)?;
        let mut full = self.prefix.clone();
        full.extend_from_slice(key.as_bytes());
        Ok(full)
    }

    /// The current value as this event sees it.
    fn read(&mut self, full: &[u8]) -> Result<Option<Vec<u8>>, BotError> {
        if let Some(value) = self.writes.get(full) {
            return Ok(value.clone());
        }
        let value = match self.reads.get(full) {
            Some(seen) => seen.clone(),
            None => {
                let seen = self.tree.get(full).map_err(unavailable)?;
                self.reads.insert(full.to_vec(), seen.clone());
                seen
            }
        };
        Ok(value.map(|v| v.to_vec()))
    }

    fn write(&mut self, full: Vec<u8>, value: Option<Vec<u8>>) -> Result<(), BotError> {
        if let Some(v) = &value {
            aviary_rules::kv::check_value(v).map_err(BotError::Invalid)?;
        }
        let old_value = self.read(&full)?;
        let key_len = full.len() - self.prefix.len();
        let size = |v: &Option<Vec<u8>>| {
            v.as_ref().map_or(KvDelta::default(), |v| KvDelta {
                bytes: (key_len + v.len()) as i64,
                keys: 1,
            })
        };
        let old = size(&old_value);
        let new = size(&value);
        let delta = KvDelta {
            bytes: self.delta.bytes + new.bytes - old.bytes,
            keys: self.delta.keys + new.keys - old.keys,
        };
        let growing = new.bytes > old.bytes || new.keys > old.keys;
        if growing {
            if let Err(reason) = self.policy.kv.check(delta) {
                let target = String::from_utf8_lossy(&full[self.prefix.len()..]).into_owned();
                self.denials.push(Denial {
                    capability: "kv",
                    target,
                    reason: reason.clone(),
                });
                return Err(if self.policy.grant.kv.is_some() {
                    BotError::QuotaExceeded(reason)
                } else {
                    BotError::Denied(reason)
                });
            }
        }
        self.delta = delta;
        self.writes.insert(full, value);
        Ok(())
    }
}

fn unavailable(error: sled::Error) -> BotError {
    BotError::Unavailable(format!("kv store error: {error}"))
}

impl Host for Kv {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, BotError> {
        let full = self.full_key(&key)?;
        self.read(&full)
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), BotError> {
        let full = self.full_key(&key)?;
        self.write(full, Some(value))
    }

    fn delete(&mut self, key: String) -> Result<bool, BotError> {
        let full = self.full_key(&key)?;
        let existed = self.read(&full)?.is_some();
        self.write(full, None)?;
        Ok(existed)
    }

    fn list_keys(&mut self, prefix: String) -> Result<Vec<String>, BotError> {
        let mut full_prefix = self.prefix.clone();
        full_prefix.extend_from_slice(prefix.as_bytes());
        let mut keys = std::collections::BTreeSet::new();
        for item in self.tree.scan_prefix(&full_prefix) {
            let (key, _) = item.map_err(unavailable)?;
            keys.insert(key.to_vec());
        }
        for (key, value) in self.writes.range(full_prefix.clone()..) {
            if !key.starts_with(&full_prefix) {
                break;
            }
            if value.is_some() {
                keys.insert(key.clone());
            } else {
                keys.remove(key);
            }
        }
        Ok(keys
            .into_iter()
            .map(|k| String::from_utf8_lossy(&k[self.prefix.len()..]).into_owned())
            .collect())
    }

    fn increment(&mut self, key: String, delta: i64) -> Result<i64, BotError> {
        let full = self.full_key(&key)?;
        let current = self.read(&full)?;
        let (next, stored) = aviary_rules::kv::increment(&key, current.as_deref(), delta)
            .map_err(BotError::Invalid)?;
        self.write(full, Some(stored))?;
        Ok(next)
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    ) -> Result<bool, BotError> {
        let full = self.full_key(&key)?;
        if self.read(&full)? != expected {
            return Ok(false);
        }
        self.write(full, new)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv_with(quota: Option<crate::policy::KvQuota>) -> (tempfile::TempDir, sled::Tree, Kv) {
        let dir = tempfile::tempdir().unwrap();
        let tree = sled::Config::new()
            .temporary(true)
            .path(dir.path().join("db"))
            .open()
            .unwrap()
            .open_tree("t")
            .unwrap();
        let grant = crate::policy::Capabilities {
            kv: quota,
            ..Default::default()
        };
        let policy = Arc::new(BotPolicy::new("bot", grant, &Default::default(), &tree).unwrap());
        let kv = Kv::new(tree.clone(), "bot", policy);
        (dir, tree, kv)
    }

    fn kv() -> (tempfile::TempDir, sled::Tree, Kv) {
        kv_with(Some(crate::policy::KvQuota {
            max_bytes: 1 << 20,
            max_keys: 100,
        }))
    }

    #[test]
    fn writes_past_the_quota_are_refused_and_recorded() {
        let (_dir, _tree, mut kv) = kv_with(Some(crate::policy::KvQuota {
            max_bytes: 20,
            max_keys: 2,
        }));
        kv.set("a".into(), b"123456789".to_vec()).unwrap();
        assert!(
            matches!(
                kv.set("b".into(), b"123456789012".to_vec()),
                Err(BotError::QuotaExceeded(_))
            ),
            "bytes"
        );
        kv.set("b".into(), b"1".to_vec()).unwrap();
        assert!(
            matches!(
                kv.set("c".into(), b"1".to_vec()),
                Err(BotError::QuotaExceeded(_))
            ),
            "keys"
        );
        kv.set("a".into(), b"1".to_vec()).unwrap();
        assert_eq!(kv.delta, KvDelta { bytes: 4, keys: 2 });
        assert_eq!(kv.denials.len(), 2);
        let (_dir, _tree, mut ungranted) = kv_with(None);
        assert!(matches!(
            ungranted.set("a".into(), vec![]),
            Err(BotError::Denied(_))
        ));
    }

    #[test]
    fn reads_see_own_writes_and_record_what_the_store_held() {
        let (_dir, tree, mut kv) = kv();
        tree.insert(keys::kv("bot", "a"), b"old".as_slice())
            .unwrap();
        assert_eq!(kv.get("a".into()).unwrap(), Some(b"old".to_vec()));
        kv.set("a".into(), b"new".to_vec()).unwrap();
        assert_eq!(kv.get("a".into()).unwrap(), Some(b"new".to_vec()));
        assert_eq!(
            kv.reads[&keys::kv("bot", "a")].as_deref(),
            Some(b"old".as_slice())
        );
        assert_eq!(
            tree.get(keys::kv("bot", "a")).unwrap().unwrap().as_ref(),
            b"old",
            "writes wait for the commit"
        );
    }

    #[test]
    fn increment_and_compare_and_swap() {
        let (_dir, _tree, mut kv) = kv();
        assert_eq!(kv.increment("n".into(), 5).unwrap(), 5);
        assert_eq!(kv.increment("n".into(), -2).unwrap(), 3);
        assert!(!kv
            .compare_and_swap("n".into(), Some(b"4".to_vec()), None)
            .unwrap());
        assert!(kv
            .compare_and_swap("n".into(), Some(b"3".to_vec()), Some(b"x".to_vec()))
            .unwrap());
        assert!(matches!(
            kv.increment("n".into(), 1),
            Err(BotError::Invalid(_))
        ));
        assert!(kv
            .compare_and_swap("m".into(), None, Some(b"1".to_vec()))
            .unwrap());
    }

    #[test]
    fn list_keys_merges_buffered_writes_and_stays_in_the_bots_namespace() {
        let (_dir, tree, mut kv) = kv();
        tree.insert(keys::kv("bot", "p/1"), b"".as_slice()).unwrap();
        tree.insert(keys::kv("bot", "p/2"), b"".as_slice()).unwrap();
        tree.insert(keys::kv("other", "p/9"), b"".as_slice())
            .unwrap();
        kv.set("p/3".into(), vec![]).unwrap();
        assert!(kv.delete("p/1".into()).unwrap());
        assert_eq!(
            kv.list_keys("p/".into()).unwrap(),
            vec!["p/2".to_string(), "p/3".to_string()]
        );
        assert!(matches!(kv.get(String::new()), Err(BotError::Invalid(_))));
    }
}
