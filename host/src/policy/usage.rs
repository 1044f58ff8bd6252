//! How much of its kv quota a bot uses, counted at load and kept current at
//! every commit, so a quota check never scans the store.

use parking_lot::Mutex;

use super::KvQuota;
use crate::store::keys;

/// Bytes (keys plus values) and keys a bot holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvDelta {
    pub bytes: i64,
    pub keys: i64,
}

/// The kv usage of one bot against its quota.
pub struct KvUsage {
    quota: Option<KvQuota>,
    used: Mutex<KvDelta>,
}

impl KvUsage {
    /// Counts what bot `bot` holds in `state`.
    pub fn measure(
        state: &crate::store::State,
        bot: &str,
        quota: Option<KvQuota>,
    ) -> anyhow::Result<KvUsage> {
        let prefix = keys::kv_prefix(bot);
        let mut used = KvDelta::default();
        for item in state.scan_prefix(&prefix) {
            let (key, value) = item?;
            used.bytes += (key.len() - prefix.len() + value.len()) as i64;
            used.keys += 1;
        }
        Ok(KvUsage {
            quota,
            used: Mutex::new(used),
        })
    }

    /// Whether `pending` more would still fit, or why not.
    pub fn check(&self, pending: KvDelta) -> Result<(), String> {
        let Some(quota) = self.quota else {
            return Err("kv is not granted".into());
        };
        let used = *self.used.lock();
        if used.bytes + pending.bytes > quota.max_bytes as i64 {
            return Err(format!("kv quota of {} bytes reached", quota.max_bytes));
        }
        if used.keys + pending.keys > quota.max_keys as i64 {
            return Err(format!("kv quota of {} keys reached", quota.max_keys));
        }
        Ok(())
    }

    /// Records a committed change.
    pub fn apply(&self, delta: KvDelta) {
        let mut used = self.used.lock();
        used.bytes += delta.bytes;
        used.keys += delta.keys;
    }

    /// Current usage.
    pub fn used(&self) -> KvDelta {
        *self.used.lock()
    }
}
