//! Writes a capability buffers over the store until the event commits, and
//! the values it read, checked again at commit (as kv's are): what
//! `schedule` and `outbox` share.

use std::collections::BTreeMap;

use crate::runtime::bindings::BotError;
use crate::store::{KvRead, State};

/// Reads and buffered writes of full store keys.
#[derive(Default)]
pub struct Buffer {
    /// Full key → value first seen.
    pub reads: BTreeMap<Vec<u8>, KvRead>,
    /// Full key → new value (`None` deletes).
    pub writes: BTreeMap<Vec<u8>, Option<Vec<u8>>>,
}

impl Buffer {
    /// The value of `key` as this event sees it, remembered for the commit.
    pub fn read(&mut self, state: &State, key: &[u8]) -> Result<Option<Vec<u8>>, BotError> {
        if let Some(value) = self.writes.get(key) {
            return Ok(value.clone());
        }
        if let Some(seen) = self.reads.get(key) {
            return Ok(seen.clone());
        }
        let seen = state
            .get(key)
            .map_err(|e| BotError::Unavailable(format!("store error: {e}")))?;
        self.reads.insert(key.to_vec(), seen.clone());
        Ok(seen)
    }

    /// Buffers `value` at `key`.
    pub fn write(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.writes.insert(key, value);
    }

    /// Adds this buffer's reads and writes to an event's.
    pub fn merge_into(
        self,
        reads: &mut BTreeMap<Vec<u8>, KvRead>,
        writes: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>,
    ) {
        reads.extend(self.reads);
        writes.extend(self.writes);
    }
}
