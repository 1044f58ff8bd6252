//! The state engine: fjall, an LSM tree. It holds what the journal made
//! durable, applied in large batches off the event path; its own journal
//! is never synced on a write (ours is the durability point) and is made
//! durable only at checkpoints. This file is the only one that names it.

use std::path::Path;

use anyhow::{Context, Result};

use super::batch::Op;

/// The key that holds the last journal record applied to the engine.
const APPLIED: &[u8] = b"!applied";

/// An entry read from the engine.
pub type Entry = Result<(Vec<u8>, Vec<u8>)>;

/// Handle to the engine. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    db: fjall::Database,
    keyspace: fjall::Keyspace,
}

impl Engine {
    /// Opens (or creates) the engine in `dir`, recovering what its own
    /// journal holds.
    pub fn open(dir: &Path) -> Result<Engine> {
        let db = fjall::Database::builder(dir)
            .manual_journal_persist(true)
            .open()
            .with_context(|| {
                format!(
                    "cannot open the state in {} (is another aviary running on it?)",
                    dir.display()
                )
            })?;
        let keyspace = db.keyspace("state", fjall::KeyspaceCreateOptions::default)?;
        Ok(Engine { db, keyspace })
    }

    /// The value of `key` in the engine.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.keyspace.get(key)?.map(|value| value.to_vec()))
    }

    /// Entries from `start` on, in key order.
    pub fn range_from(&self, start: &[u8]) -> impl Iterator<Item = Entry> + use<> {
        self.keyspace.range(start.to_vec()..).map(pair)
    }

    /// Entries whose keys start with `prefix`, last key first.
    pub fn prefix_rev(&self, prefix: &[u8]) -> impl Iterator<Item = Entry> + use<> {
        self.keyspace.prefix(prefix).rev().map(pair)
    }

    /// Applies `writes` atomically, with the mark that the engine holds
    /// every journal record up to `applied`.
    pub fn apply<'a>(&self, writes: impl Iterator<Item = &'a Op>, applied: u64) -> Result<()> {
        let mut batch = self.db.batch();
        for op in writes {
            match op.value() {
                Some(value) => batch.insert(&self.keyspace, op.key(), value),
                None => batch.remove(&self.keyspace, op.key()),
            }
        }
        batch.insert(&self.keyspace, APPLIED, applied.to_be_bytes());
        batch.commit()?;
        Ok(())
    }

    /// The last journal record the engine holds.
    pub fn applied(&self) -> Result<u64> {
        Ok(match self.keyspace.get(APPLIED)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_ref()
                    .try_into()
                    .context("the state's applied mark is corrupt")?,
            ),
            None => 0,
        })
    }

    /// Makes everything applied so far durable.
    pub fn persist(&self) -> Result<()> {
        self.db
            .persist(fjall::PersistMode::SyncAll)
            .context("cannot sync the state")
    }
}

fn pair(guard: fjall::Guard) -> Entry {
    let (key, value) = guard.into_inner()?;
    Ok((key.to_vec(), value.to_vec()))
}
