//! The store's state: an ordered key-value map, durable through a
//! write-ahead journal at the disk's own speed.
//!
//! A write goes to the memtable (visible to reads at once) and to the
//! journal's queue under one lock, which also orders the records. The
//! journal thread appends and syncs whatever has queued in one go; the
//! applier then moves durable records into the state engine (fjall, see
//! [`engine`]) in large batches and syncs it lazily, at checkpoints.
//! Nothing on the event path waits for the engine.

mod applier;
mod batch;
mod engine;
mod frame;
mod journal;
mod memtable;
mod recover;
mod space;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use parking_lot::Mutex;

pub use batch::Op;
use engine::Engine;
pub use frame::ReadError;
use journal::{Durable, Journal};
use memtable::{Lookup, Memtable, Merged};
use space::Space;

/// The key that holds the bound below which ids may have been handed out.
const IDS: &[u8] = b"!ids";
/// Ids reserved by one write of [`IDS`].
const ID_BLOCK: u64 = 1 << 16;

/// `[store]`: how the state uses the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Free bytes kept in reserve on the data directory's filesystem:
    /// below it, new messages get a 503 and the events already accepted
    /// still commit.
    pub min_free_bytes: u64,
    /// Journal bytes between two checkpoints (and the size of one journal
    /// file); a restart replays at most about this much.
    pub checkpoint_bytes: u64,
    /// Age after which an attachment file no message refers to (an upload
    /// whose message was refused, a file a failed event made) is deleted.
    pub blob_grace_secs: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            min_free_bytes: 64 << 20,
            checkpoint_bytes: 64 << 20,
            blob_grace_secs: 3600,
        }
    }
}

impl StoreConfig {
    /// Checks the values an admin set.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(
            self.checkpoint_bytes >= 1 << 20,
            "`store.checkpoint_bytes` must be at least 1048576 (1 MiB)"
        );
        anyhow::ensure!(
            self.blob_grace_secs >= 1,
            "`store.blob_grace_secs` must be at least 1"
        );
        Ok(())
    }

    /// [`StoreConfig::blob_grace_secs`] as a duration.
    pub fn blob_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.blob_grace_secs)
    }
}

/// Why the store takes nothing new right now.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Unavailable {
    #[error(
        "the data directory's disk is full: {free} bytes free, under the {reserve} bytes kept \
         in reserve (`store.min_free_bytes`); nothing new is accepted until space is freed"
    )]
    DiskFull { free: u64, reserve: u64 },
    #[error(
        "the store cannot write to its disk ({0}); retry later (with the same Idempotency-Key \
         the message is stored once)"
    )]
    Journal(String),
}

/// A key-value read of the state that a commit checks again.
pub type Reads = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Handle to the state. Cheap to clone.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    memtable: Arc<Memtable>,
    journal: Journal,
    space: Arc<Space>,
    ids: Ids,
    applier: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// Id allocation: ids below `reserved` are stored (through the journal) as
/// possibly used, so ids handed out after a crash are all larger.
struct Ids {
    next: AtomicU64,
    /// Mirrors `reserved` for the fast path; raised only after the write
    /// that reserves the block is queued.
    reserved_fast: AtomicU64,
    reserved: Mutex<u64>,
}

impl State {
    /// Opens the state under `dir` (the engine in `state/`, the journal in
    /// `journal/`), replaying what the engine lacks. `on_durable` hears the
    /// seq of every record once it is on disk.
    pub fn open(
        dir: &Path,
        config: &StoreConfig,
        on_durable: Box<dyn Fn(u64) + Send>,
    ) -> Result<State> {
        let journal_dir = dir.join("journal");
        std::fs::create_dir_all(&journal_dir)
            .with_context(|| format!("cannot create {}", journal_dir.display()))?;
        let engine = Engine::open(&dir.join("state"))?;
        let next_seq = recover::recover(&journal_dir, &engine)?;
        let reserved = match engine.get(IDS)? {
            Some(bytes) => u64::from_be_bytes(
                bytes
                    .as_slice()
                    .try_into()
                    .context("the state's id bound is corrupt")?,
            ),
            None => 1,
        };
        let memtable = Arc::new(Memtable::default());
        let space = Arc::new(Space::new(dir, config.min_free_bytes)?);
        let (to_applier, incoming) = crossbeam_channel::unbounded();
        let journal = Journal::start(journal::Setup {
            dir: journal_dir.clone(),
            next_seq,
            rotate_bytes: config.checkpoint_bytes,
            on_durable,
            applier: to_applier,
        })?;
        let applier = applier::Applier {
            engine: engine.clone(),
            memtable: memtable.clone(),
            space: space.clone(),
            journal_dir,
            checkpoint_bytes: config.checkpoint_bytes,
        };
        let applier = std::thread::Builder::new()
            .name("aviary-applier".into())
            .spawn(move || applier.run(incoming))
            .context("cannot start the state applier")?;
        Ok(State {
            inner: Arc::new(Inner {
                engine,
                memtable,
                journal,
                space,
                ids: Ids {
                    next: AtomicU64::new(reserved),
                    reserved_fast: AtomicU64::new(reserved),
                    reserved: Mutex::new(reserved),
                },
                applier: Mutex::new(Some(applier)),
            }),
        })
    }

    /// The value of `key`, including writes not yet durable.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.inner.memtable.get(key) {
            Lookup::Written(value) => Ok(value),
            Lookup::Unknown => self.inner.engine.get(key),
        }
    }

    /// Entries from `start` on while their keys start with `prefix`.
    pub fn scan(
        &self,
        start: &[u8],
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        let memory = self.inner.memtable.range(start, prefix);
        let engine = self.inner.engine.range_from(start);
        let prefix = prefix.to_vec();
        Merged::new(memory, engine, false)
            .take_while(move |item| item.as_ref().map_or(true, |(k, _)| k.starts_with(&prefix)))
    }

    /// Entries whose keys start with `prefix`.
    pub fn scan_prefix(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        self.scan(prefix, prefix)
    }

    /// Entries whose keys start with `prefix`, last key first.
    pub fn scan_prefix_rev(
        &self,
        prefix: &[u8],
    ) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>)>> + use<> {
        let mut memory = self.inner.memtable.range(prefix, prefix);
        memory.reverse();
        let engine = self.inner.engine.prefix_rev(prefix);
        Merged::new(memory, engine, true)
    }

    /// Applies `ops` atomically; returns the seq of its journal record
    /// (durable once [`State::wait_durable`] for it returns).
    pub fn write(&self, ops: Vec<Op>) -> u64 {
        self.write_checked(&Reads::new(), ops)
            .expect("no reads, no conflict")
    }

    /// Like [`State::write`] if every key of `reads` still holds the value
    /// read; `None` (and nothing written) if one changed.
    pub fn write_checked(&self, reads: &Reads, ops: Vec<Op>) -> Option<u64> {
        let payload = batch::encode(&ops);
        let mut queue = self.inner.journal.lock();
        for (key, seen) in reads {
            match self.get(key) {
                Ok(value) if value == *seen => {}
                _ => return None,
            }
        }
        let seq = queue.next_seq();
        self.inner.memtable.write(seq, ops);
        queue.push(seq, payload);
        drop(queue);
        self.inner.journal.wake();
        Some(seq)
    }

    /// The seq of the last write so far.
    pub fn last_seq(&self) -> u64 {
        self.inner.journal.lock().last_seq()
    }

    /// Returns once record `seq` and all before it are on disk, or an
    /// error while the journal cannot write.
    pub async fn wait_durable(&self, seq: u64) -> Result<()> {
        let mut durable = self.inner.journal.durable();
        let state = durable
            .wait_for(|d: &Durable| d.seq >= seq || d.failing.is_some())
            .await?;
        match &state.failing {
            Some(error) if state.seq < seq => Err(Unavailable::Journal(error.clone()).into()),
            _ => Ok(()),
        }
    }

    /// Whether the store takes new writes from outside: not while the disk
    /// is under its reserve or the journal cannot write.
    pub fn admit(&self) -> Result<(), Unavailable> {
        if let Some((free, reserve)) = self.inner.space.shortfall() {
            return Err(Unavailable::DiskFull { free, reserve });
        }
        match self.inner.journal.failing() {
            Some(error) => Err(Unavailable::Journal(error)),
            None => Ok(()),
        }
    }

    /// A new id, greater than every id handed out before, also before a
    /// crash: a record holding an id comes after the one reserving it.
    pub fn generate_id(&self) -> u64 {
        let ids = &self.inner.ids;
        let id = ids.next.fetch_add(1, Ordering::Relaxed);
        if id < ids.reserved_fast.load(Ordering::Acquire) {
            return id;
        }
        let mut reserved = ids.reserved.lock();
        while id >= *reserved {
            *reserved += ID_BLOCK;
            self.write(vec![Op::Put(IDS.to_vec(), reserved.to_be_bytes().to_vec())]);
            ids.reserved_fast.store(*reserved, Ordering::Release);
        }
        id
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.journal.close();
        if let Some(applier) = self.applier.lock().take() {
            let _ = applier.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: StoreConfig = StoreConfig {
        min_free_bytes: 0,
        checkpoint_bytes: 1 << 20,
        blob_grace_secs: 1,
    };

    fn open(dir: &Path) -> State {
        State::open(dir, &CONFIG, Box::new(|_| {})).unwrap()
    }

    /// A crash after which only the journal is left: closes `state`, puts
    /// the journal back as it was and deletes the engine, then opens again.
    fn lose_the_engine(state: State, dir: &Path) -> State {
        let journal: Vec<_> = journal::files(&dir.join("journal"))
            .unwrap()
            .into_iter()
            .map(|(_, path)| (path.clone(), std::fs::read(path).unwrap()))
            .collect();
        drop(state);
        std::fs::remove_dir_all(dir.join("state")).unwrap();
        for (path, bytes) in journal {
            std::fs::write(path, bytes).unwrap();
        }
        open(dir)
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put(key.as_bytes().to_vec(), value.as_bytes().to_vec())
    }

    #[tokio::test]
    async fn writes_are_read_at_once_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path());
        state.write(vec![put("a/1", "x"), put("a/2", "y"), put("b/1", "z")]);
        let seq = state.write(vec![Op::Delete(b"a/2".to_vec())]);
        assert_eq!(state.get(b"a/1").unwrap().as_deref(), Some(b"x".as_slice()));
        assert_eq!(state.get(b"a/2").unwrap(), None);
        state.wait_durable(seq).await.unwrap();
        drop(state);
        let state = open(dir.path());
        let keys: Vec<Vec<u8>> = state.scan_prefix(b"a/").map(|i| i.unwrap().0).collect();
        assert_eq!(keys, [b"a/1".to_vec()]);
        assert!(state.last_seq() >= seq, "seqs go on after a restart");
    }

    #[tokio::test]
    async fn ids_handed_out_before_a_crash_are_never_handed_out_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path());
        let before: Vec<u64> = (0..3).map(|_| state.generate_id()).collect();
        let seq = state.write(vec![put("m/x", "uses the ids")]);
        state.wait_durable(seq).await.unwrap();
        let state = lose_the_engine(state, dir.path());
        let after = state.generate_id();
        assert!(
            before.iter().all(|&id| id < after),
            "{before:?} then {after}"
        );
    }

    #[tokio::test]
    async fn a_checkpoint_deletes_the_journal_files_the_engine_holds_and_keeps_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path());
        let journal = dir.path().join("journal");
        // 3 MiB of records: the journal rotates every MiB (CONFIG).
        let value = vec![b'v'; 1024];
        let mut last = 0;
        for n in 0..3072u32 {
            let key = format!("k/{n:05}").into_bytes();
            last = state.write(vec![Op::Put(key, value.clone())]);
        }
        state.wait_durable(last).await.unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while journal::files(&journal).unwrap().len() > 1 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint in 20 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        let newest = journal::files(&journal).unwrap()[0].0;
        assert!(
            newest > 1,
            "the newest file is kept, the older ones are gone"
        );
        drop(state);
        let state = open(dir.path());
        assert_eq!(state.scan_prefix(b"k/").count(), 3072);
        assert_eq!(state.get(b"k/03071").unwrap(), Some(value));
    }

    #[test]
    fn a_changed_read_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path());
        state.write(vec![put("k", "1")]);
        let stale: Reads = [(b"k".to_vec(), None)].into();
        assert_eq!(state.write_checked(&stale, vec![put("k", "2")]), None);
        let fresh: Reads = [(b"k".to_vec(), Some(b"1".to_vec()))].into();
        assert!(state.write_checked(&fresh, vec![put("k", "2")]).is_some());
        assert_eq!(state.get(b"k").unwrap().as_deref(), Some(b"2".as_slice()));
    }

    #[tokio::test]
    async fn records_the_engine_lacks_are_replayed_from_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let state = open(dir.path());
        let seq = state.write(vec![put("k", "v")]);
        state.wait_durable(seq).await.unwrap();
        let state = lose_the_engine(state, dir.path());
        assert_eq!(state.get(b"k").unwrap().as_deref(), Some(b"v".as_slice()));
    }
}
