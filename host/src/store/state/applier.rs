//! Moves durable journal records into the state engine (sled) in large
//! batches, off the event path, then evicts them from the memtable. Every
//! batch also stores the last seq it holds, so a restart replays exactly
//! the records the engine lacks. Once the journal has grown by
//! `checkpoint_bytes`, it flushes the engine and deletes the journal files
//! that the engine now holds on disk.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use super::journal::{self, Records};
use super::memtable::Memtable;
use super::space::Space;
use super::{batch, APPLIED};

/// Most records in one engine batch.
const MAX_BATCH_RECORDS: usize = 4096;

pub struct Applier {
    pub db: sled::Db,
    pub engine: sled::Tree,
    pub memtable: Arc<Memtable>,
    pub space: Arc<Space>,
    pub journal_dir: PathBuf,
    pub checkpoint_bytes: u64,
}

impl Applier {
    /// Applies what arrives until the journal closes the channel, then
    /// flushes the engine.
    pub fn run(self, incoming: crossbeam_channel::Receiver<Records>) {
        let mut since_checkpoint = 0u64;
        while let Ok(mut records) = incoming.recv() {
            while records.len() < MAX_BATCH_RECORDS {
                match incoming.try_recv() {
                    Ok(more) => records.extend(more),
                    Err(_) => break,
                }
            }
            // The engine writes to disk as its buffers fill: let it not run
            // the disk full (the memtable keeps the records meanwhile).
            while self.space.is_low() {
                std::thread::sleep(Duration::from_millis(100));
            }
            since_checkpoint += records.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
            self.apply_retrying(&records);
            if since_checkpoint >= self.checkpoint_bytes {
                let applied = records.last().expect("not empty").0;
                match self.checkpoint(applied) {
                    Ok(()) => since_checkpoint = 0,
                    Err(error) => tracing::error!("checkpoint failed (will retry): {error:#}"),
                }
            }
        }
        if let Err(error) = self.db.flush() {
            tracing::error!("cannot flush the state at shutdown: {error}");
        }
    }

    fn apply_retrying(&self, records: &Records) {
        let mut pause = Duration::from_millis(50);
        while let Err(error) = self.apply(records) {
            tracing::error!("cannot apply journal records to the state (retrying): {error:#}");
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    fn apply(&self, records: &Records) -> Result<()> {
        let (sled_batch, keys) = engine_batch(records)?;
        self.engine.apply_batch(sled_batch)?;
        let applied = records.last().expect("not empty").0;
        self.memtable.evict(keys.iter().map(Vec::as_slice), applied);
        Ok(())
    }

    /// Flushes the engine, then deletes the journal files whose records
    /// all are at or before `applied`.
    fn checkpoint(&self, applied: u64) -> Result<()> {
        self.db.flush()?;
        let files = journal::files(&self.journal_dir)?;
        for pair in files.windows(2) {
            let ((_, path), (next_first, _)) = (&pair[0], &pair[1]);
            if *next_first <= applied + 1 {
                std::fs::remove_file(path)?;
                tracing::debug!(file = %path.display(), "checkpoint: journal file deleted");
            }
        }
        Ok(())
    }
}

/// One engine batch with the writes of `records` and the applied mark of
/// the last one, and the keys it writes.
pub fn engine_batch(records: &[(u64, Vec<u8>)]) -> Result<(sled::Batch, Vec<Vec<u8>>)> {
    let mut sled_batch = sled::Batch::default();
    let mut keys = Vec::new();
    for (seq, payload) in records {
        let ops = batch::decode(payload).with_context(|| format!("journal record {seq}"))?;
        for (key, value) in ops {
            match &value {
                Some(value) => sled_batch.insert(key.as_slice(), value.as_slice()),
                None => sled_batch.remove(key.as_slice()),
            }
            keys.push(key);
        }
    }
    if let Some(&(last, _)) = records.last() {
        sled_batch.insert(APPLIED, &last.to_be_bytes());
    }
    Ok((sled_batch, keys))
}
