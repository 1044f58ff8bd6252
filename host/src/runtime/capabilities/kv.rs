//! `aviary:bot/kv`: the bot's own key-value namespace.
//!
//! Writes are buffered and committed with the event; every key read is
//! remembered with the value seen, and the commit fails with a conflict (the
//! event then runs again) if another event changed it meanwhile. That makes
//! `increment` and `compare-and-swap` atomic without a lock held across a
//! bot call.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Ctx;
use crate::policy::{BotPolicy, KvDelta};
use crate::runtime::bindings::aviary::bot::kv::Host;
use crate::runtime::bindings::BotError;
use crate::runtime::state::EventContext;
use crate::store::{keys, KvRead};

/// Per-event kv state.
pub struct Kv {
    state: crate::store::State,
    prefix: Vec<u8>,
    /// Full key → value first seen; checked again at commit.
    pub reads: BTreeMap<Vec<u8>, KvRead>,
    /// Full key → buffered new value (`None` deletes).
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    /// How the buffered writes change the bot's usage.
    pub delta: KvDelta,
    policy: Arc<BotPolicy>,
    /// Prefixes whose reads are audited, and by whom the event came.
    audited: Arc<Vec<String>>,
    bot: String,
    who: String,
    /// Audited reads, for the audit log whatever the event's fate.
    pub audit: Vec<crate::store::AuditEntry>,
}

impl Kv {
    pub fn new(state: crate::store::State, bot: &str, policy: Arc<BotPolicy>) -> Kv {
        Kv {
            state,
            prefix: keys::kv_prefix(bot),
            reads: BTreeMap::new(),
            writes: BTreeMap::new(),
            delta: KvDelta::default(),
            policy,
            audited: Arc::default(),
            bot: bot.to_owned(),
            who: String::new(),
            audit: Vec::new(),
        }
    }

    /// Audits every read of a key under one of `audited`, naming who sent
    /// `event` and where.
    pub fn auditing(mut self, audited: Arc<Vec<String>>, event: &EventContext) -> Kv {
        self.audited = audited;
        self.who = match (&event.sender, &event.conversation) {
            (Some(sender), Some(conversation)) => {
                format!("by {sender} in conversation {conversation}")
            }
            _ => "outside any conversation".to_owned(),
        };
        self
    }

    fn audit_read(&mut self, key: &str, found: bool) {
        if self.audited.iter().any(|p| key.starts_with(p.as_str())) {
            self.audit.push(crate::store::AuditEntry {
                action: DATA_READ.into(),
                bot: self.bot.clone(),
                capability: Some("kv".into()),
                target: Some(key.to_owned()),
                detail: format!("{} ({})", self.who, if found { FOUND } else { NOT_FOUND }),
            });
        }
    }
}

/// The audit action of a read of an audited key.
const DATA_READ: &str = "data_read";
const FOUND: &str = "found";
const NOT_FOUND: &str = "not found";

/// The key an audited read asked for and whether it held a value, when
/// `entry` is one.
pub fn data_read(entry: &crate::store::AuditEntry) -> Option<(&str, bool)> {
    if entry.action != DATA_READ {
        return None;
    }
    let found = entry.detail.ends_with(&format!("({FOUND})"));
    Some((entry.target.as_deref()?, found))
}

impl Ctx<'_, Kv> {
    fn full_key(&self, key: &str) -> Result<Vec<u8>, BotError> {
        self.budget.check()?;
        aviary_rules::kv::check_key(key).map_err(BotError::Invalid)?;
        let mut full = self.cap.prefix.clone();
        full.extend_from_slice(key.as_bytes());
        Ok(full)
    }

    /// The current value as this event sees it.
    fn read(&mut self, full: &[u8]) -> Result<Option<Vec<u8>>, BotError> {
        if let Some(value) = self.cap.writes.get(full) {
            return Ok(value.clone());
        }
        let value = match self.cap.reads.get(full) {
            Some(seen) => seen.clone(),
            None => {
                let seen = self.cap.state.get(full).map_err(unavailable)?;
                self.budget
                    .read(full.len() + seen.as_ref().map_or(0, |v| v.len()))?;
                self.cap.reads.insert(full.to_vec(), seen.clone());
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
        if old_value.is_none() && value.is_none() {
            // Deleting what is not there changes nothing; the read above
            // still checks at commit that it stayed absent.
            return Ok(());
        }
        let delta = self.delta_after(&full, &old_value, &value);
        let growing = delta.bytes > self.cap.delta.bytes || delta.keys > self.cap.delta.keys;
        if growing {
            if let Err(reason) = self.cap.policy.kv.check(delta) {
                let key = String::from_utf8_lossy(&full[self.cap.prefix.len()..]).into_owned();
                self.budget.refusals.deny("kv", &key, || reason.clone());
                return Err(if self.cap.policy.grant.kv.is_some() {
                    BotError::QuotaExceeded(reason)
                } else {
                    BotError::Denied(reason)
                });
            }
        }
        let buffered = |v: Option<&Option<Vec<u8>>>| {
            v.map_or(0, |v| full.len() + v.as_ref().map_or(0, Vec::len))
        };
        let before = self.cap.writes.get(&full);
        if before.is_none() {
            self.budget.write_entry()?;
        }
        self.budget
            .resize(buffered(before), buffered(Some(&value)))?;
        self.cap.delta = delta;
        self.cap.writes.insert(full, value);
        Ok(())
    }

    /// The bot's usage change once `full` goes from `old` to `new`.
    fn delta_after(&self, full: &[u8], old: &Option<Vec<u8>>, new: &Option<Vec<u8>>) -> KvDelta {
        let key_len = full.len() - self.cap.prefix.len();
        let size = |v: &Option<Vec<u8>>| {
            v.as_ref().map_or(KvDelta::default(), |v| KvDelta {
                bytes: (key_len + v.len()) as i64,
                keys: 1,
            })
        };
        let (old, new) = (size(old), size(new));
        KvDelta {
            bytes: self.cap.delta.bytes + new.bytes - old.bytes,
            keys: self.cap.delta.keys + new.keys - old.keys,
        }
    }
}

fn unavailable(error: anyhow::Error) -> BotError {
    BotError::Unavailable(format!("kv store error: {error}"))
}

impl Host for Ctx<'_, Kv> {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, BotError> {
        let full = self.full_key(&key)?;
        let value = self.read(&full)?;
        self.cap.audit_read(&key, value.is_some());
        Ok(value)
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
        self.budget.check()?;
        let prefix_len = self.cap.prefix.len();
        let mut full_prefix = self.cap.prefix.clone();
        full_prefix.extend_from_slice(prefix.as_bytes());
        let mut keys = std::collections::BTreeSet::new();
        for item in self.cap.state.scan_prefix(&full_prefix) {
            let (key, _) = item.map_err(unavailable)?;
            keys.insert(key.to_vec());
        }
        for (key, value) in self.cap.writes.range(full_prefix.clone()..) {
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
            .map(|k| String::from_utf8_lossy(&k[prefix_len..]).into_owned())
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
    use crate::runtime::budget::EventBudget;

    /// A kv and the budget of one event.
    struct Event {
        kv: Kv,
        budget: EventBudget,
    }

    impl Event {
        fn ctx(&mut self) -> Ctx<'_, Kv> {
            Ctx {
                cap: &mut self.kv,
                budget: &mut self.budget,
            }
        }
    }

    fn kv_with(
        quota: Option<crate::policy::KvQuota>,
    ) -> (tempfile::TempDir, crate::store::State, Event) {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::store::Store::open(dir.path())
            .unwrap()
            .state()
            .clone();
        let grant = crate::policy::Capabilities {
            kv: quota,
            ..Default::default()
        };
        let policy = Arc::new(BotPolicy::new("bot", grant, &Default::default(), &state).unwrap());
        let kv = Event {
            kv: Kv::new(state.clone(), "bot", policy),
            budget: EventBudget::default(),
        };
        (dir, state, kv)
    }

    fn kv() -> (tempfile::TempDir, crate::store::State, Event) {
        kv_with(Some(crate::policy::KvQuota {
            max_bytes: 1 << 20,
            max_keys: 100,
        }))
    }

    #[test]
    fn writes_past_the_quota_are_refused_and_recorded() {
        let (_dir, _state, mut kv) = kv_with(Some(crate::policy::KvQuota {
            max_bytes: 20,
            max_keys: 2,
        }));
        kv.ctx().set("a".into(), b"123456789".to_vec()).unwrap();
        assert!(
            matches!(
                kv.ctx().set("b".into(), b"123456789012".to_vec()),
                Err(BotError::QuotaExceeded(_))
            ),
            "bytes"
        );
        kv.ctx().set("b".into(), b"1".to_vec()).unwrap();
        assert!(
            matches!(
                kv.ctx().set("c".into(), b"1".to_vec()),
                Err(BotError::QuotaExceeded(_))
            ),
            "keys"
        );
        kv.ctx().set("a".into(), b"1".to_vec()).unwrap();
        assert_eq!(kv.kv.delta, KvDelta { bytes: 4, keys: 2 });
        assert_eq!(kv.budget.refusals.itemised().len(), 2);
        let (_dir, _state, mut ungranted) = kv_with(None);
        assert!(matches!(
            ungranted.ctx().set("a".into(), vec![]),
            Err(BotError::Denied(_))
        ));
    }

    #[test]
    fn deletes_of_absent_keys_buffer_nothing_and_distinct_reads_are_bounded() {
        let (_dir, _state, mut kv) = kv();
        for n in 0..crate::runtime::budget::MAX_READ_ENTRIES {
            assert!(!kv.ctx().delete(format!("absent-{n}")).unwrap());
        }
        assert!(
            kv.kv.writes.is_empty(),
            "nothing to delete, nothing buffered"
        );
        assert!(matches!(
            kv.ctx().get("one-more".into()),
            Err(BotError::QuotaExceeded(_))
        ));
        assert!(kv.budget.exceeded().is_some());
    }

    #[test]
    fn reads_see_own_writes_and_record_what_the_store_held() {
        let (_dir, state, mut kv) = kv();
        state.write(vec![crate::store::Op::Put(
            keys::kv("bot", "a"),
            b"old".to_vec(),
        )]);
        assert_eq!(kv.ctx().get("a".into()).unwrap(), Some(b"old".to_vec()));
        kv.ctx().set("a".into(), b"new".to_vec()).unwrap();
        assert_eq!(kv.ctx().get("a".into()).unwrap(), Some(b"new".to_vec()));
        assert_eq!(
            kv.kv.reads[&keys::kv("bot", "a")].as_deref(),
            Some(b"old".as_slice())
        );
        assert_eq!(
            state.get(&keys::kv("bot", "a")).unwrap().unwrap(),
            b"old",
            "writes wait for the commit"
        );
    }

    #[test]
    fn increment_and_compare_and_swap() {
        let (_dir, _state, mut kv) = kv();
        assert_eq!(kv.ctx().increment("n".into(), 5).unwrap(), 5);
        assert_eq!(kv.ctx().increment("n".into(), -2).unwrap(), 3);
        assert!(!kv
            .ctx()
            .compare_and_swap("n".into(), Some(b"4".to_vec()), None)
            .unwrap());
        assert!(kv
            .ctx()
            .compare_and_swap("n".into(), Some(b"3".to_vec()), Some(b"x".to_vec()))
            .unwrap());
        assert!(matches!(
            kv.ctx().increment("n".into(), 1),
            Err(BotError::Invalid(_))
        ));
        assert!(kv
            .ctx()
            .compare_and_swap("m".into(), None, Some(b"1".to_vec()))
            .unwrap());
    }

    #[test]
    fn list_keys_merges_buffered_writes_and_stays_in_the_bots_namespace() {
        let (_dir, state, mut kv) = kv();
        state.write(vec![crate::store::Op::Put(
            keys::kv("bot", "p/1"),
            b"".to_vec(),
        )]);
        state.write(vec![crate::store::Op::Put(
            keys::kv("bot", "p/2"),
            b"".to_vec(),
        )]);
        state.write(vec![crate::store::Op::Put(
            keys::kv("other", "p/9"),
            b"".to_vec(),
        )]);
        kv.ctx().set("p/3".into(), vec![]).unwrap();
        assert!(kv.ctx().delete("p/1".into()).unwrap());
        assert_eq!(
            kv.ctx().list_keys("p/".into()).unwrap(),
            vec!["p/2".to_string(), "p/3".to_string()]
        );
        assert!(matches!(
            kv.ctx().get(String::new()),
            Err(BotError::Invalid(_))
        ));
    }
}
