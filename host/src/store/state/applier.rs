//! Moves durable journal records into the state engine in large
//! batches, off the event path, then evicts them from the memtable. A record
//! waits a second first, so writes that are soon superseded (a pending event
//! and its removal) never reach the engine. Every
//! batch also stores the last seq it holds, so a restart replays exactly
//! the records the engine lacks. Once the journal has grown by
//! `checkpoint_bytes`, it flushes the engine and deletes the journal files
//! that the engine now holds on disk.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use super::batch::{self, Op};
use super::engine::Engine;
use super::journal::{self, Records};
use super::memtable::Memtable;
use super::space::Space;

/// Most records in one engine batch.
const MAX_BATCH_RECORDS: usize = 4096;
/// How long a durable record waits before it goes to the engine: a write
/// superseded meanwhile (a pending event handled and removed) never does.
const COALESCE: Duration = Duration::from_millis(1000);
/// Records waiting beyond which the oldest go to the engine at once.
const MAX_BACKLOG_RECORDS: usize = 100_000;

/// The applier thread's parts: the engine, the memtable it settles, the
/// disk reserve it respects and the journal files it deletes at checkpoints.
pub struct Applier {
    pub engine: Engine,
    pub memtable: Arc<Memtable>,
    pub space: Arc<Space>,
    pub journal_dir: PathBuf,
    pub checkpoint_bytes: u64,
}

/// Durable records waiting for the engine, oldest first, with when they came.
#[derive(Default)]
struct Backlog {
    groups: VecDeque<(Instant, Records)>,
    records: usize,
}

impl Backlog {
    fn push(&mut self, records: Records) {
        self.records += records.len();
        self.groups.push_back((Instant::now(), records));
    }

    /// How long until the oldest group is due.
    fn next_due(&self) -> Duration {
        self.groups
            .front()
            .map_or(Duration::from_secs(3600), |(at, _)| {
                (*at + COALESCE).saturating_duration_since(Instant::now())
            })
    }

    /// The groups that are due (all of them when `everything`), up to a
    /// batch.
    fn take_due(&mut self, everything: bool) -> Records {
        let mut due = Records::new();
        while let Some((at, _)) = self.groups.front() {
            let is_due =
                everything || at.elapsed() >= COALESCE || self.records > MAX_BACKLOG_RECORDS;
            if !is_due || due.len() >= MAX_BATCH_RECORDS {
                break;
            }
            let (_, records) = self.groups.pop_front().expect("peeked");
            self.records -= records.len();
            due.extend(records);
        }
        due
    }
}

impl Applier {
    /// Applies what arrives, each record once it is [`COALESCE`] old,
    /// until the journal closes the channel; then applies the rest and
    /// flushes the engine.
    pub fn run(self, incoming: crossbeam_channel::Receiver<Records>) {
        let mut backlog = Backlog::default();
        let mut since_checkpoint = 0u64;
        let mut open = true;
        loop {
            if open {
                match incoming.recv_timeout(backlog.next_due()) {
                    Ok(records) => backlog.push(records),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => {}
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => open = false,
                }
            }
            let due = backlog.take_due(!open);
            if due.is_empty() {
                if open {
                    continue;
                }
                break;
            }
            // The engine writes to disk as its buffers fill: let it not run
            // the disk full (the memtable and journal keep the records). At
            // shutdown the journal keeps them for the next start.
            while self.space.is_low() {
                if !open {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            since_checkpoint += due.iter().map(|(_, p)| p.len() as u64).sum::<u64>();
            self.apply_retrying(&due);
            if since_checkpoint >= self.checkpoint_bytes {
                let applied = due.last().expect("not empty").0;
                match self.checkpoint(applied) {
                    Ok(()) => since_checkpoint = 0,
                    Err(error) => tracing::error!("checkpoint failed (will retry): {error:#}"),
                }
            }
        }
        if let Err(error) = self.engine.persist() {
            tracing::error!("cannot sync the state at shutdown: {error:#}");
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
        let decoded = decode(records)?;
        let writes: Vec<(u64, &Op)> = decoded
            .iter()
            .flat_map(|(seq, ops)| ops.iter().map(move |op| (*seq, op)))
            .collect();
        let applied = records.last().expect("not empty").0;
        let sent = self.memtable.for_engine(&writes, applied);
        let needed = writes.iter().zip(&sent).filter(|(_, sent)| **sent);
        self.engine.apply(needed.map(|((_, op), _)| *op), applied)?;
        let settled = writes
            .iter()
            .zip(sent)
            .map(|((_, op), sent)| (op.key(), sent));
        self.memtable.settle(settled, applied);
        Ok(())
    }

    /// Flushes the engine, then deletes the journal files whose records
    /// all are at or before `applied`.
    fn checkpoint(&self, applied: u64) -> Result<()> {
        self.engine.persist()?;
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

/// The writes of each record.
pub fn decode(records: &[(u64, Vec<u8>)]) -> Result<Vec<(u64, Vec<Op>)>> {
    records
        .iter()
        .map(|(seq, payload)| {
            let ops = batch::decode(payload).with_context(|| format!("journal record {seq}"))?;
            Ok((*seq, ops))
        })
        .collect()
}
