//! The write-ahead journal: every write of the state is a record here
//! first. One thread appends whatever has queued as one write and one
//! `fdatasync`, so many events share one sync, then reports the last
//! sequence number it made durable and hands the records to the applier.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::{Condvar, Mutex, MutexGuard};
use tokio::sync::watch;

use super::frame;

/// Records written and synced, handed on to the applier.
pub type Records = Vec<(u64, Vec<u8>)>;

/// The journal's progress, as waiters see it.
#[derive(Debug, Clone, Default)]
pub struct Durable {
    /// Every record up to this one is on disk.
    pub seq: u64,
    /// Why the last attempt to write failed, while it keeps failing.
    pub failing: Option<String>,
}

/// Records accepted but not yet written; its lock is the state's commit
/// lock, so sequence numbers follow the order of the writes.
pub struct Queue {
    next_seq: u64,
    records: Records,
    closed: bool,
}

impl Queue {
    /// Takes the next sequence number for a record that will be pushed
    /// before this guard is dropped.
    pub fn next_seq(&mut self) -> u64 {
        let seq = self.next_seq;
        self.next_seq += 1;
        seq
    }

    /// Queues the record `seq` for the writer.
    pub fn push(&mut self, seq: u64, payload: Vec<u8>) {
        self.records.push((seq, payload));
    }

    /// The last sequence number handed out.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// The journal's queue and writer thread.
pub struct Journal {
    shared: Arc<Shared>,
    durable: watch::Receiver<Durable>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// Name of the journal file whose first record is `seq`.
pub fn file_name(seq: u64) -> String {
    format!("{seq:020}.log")
}

/// Where the writer puts its files and what it does once records are on disk.
pub struct Setup {
    pub dir: PathBuf,
    /// Sequence number of the first record this run writes.
    pub next_seq: u64,
    /// Size past which the writer starts a new file.
    pub rotate_bytes: u64,
    /// Called with the last durable seq, before waiters hear of it.
    pub on_durable: Box<dyn Fn(u64) + Send>,
    /// Receives every durable group of records, in order.
    pub applier: crossbeam_channel::Sender<Records>,
}

impl Journal {
    /// Starts a new journal file at `setup.next_seq` and its writer thread.
    pub fn start(setup: Setup) -> Result<Journal> {
        let file = create(&setup.dir, setup.next_seq)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                next_seq: setup.next_seq,
                records: Vec::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        });
        let (done, durable) = watch::channel(Durable {
            seq: setup.next_seq - 1,
            failing: None,
        });
        let worker = shared.clone();
        let writer = std::thread::Builder::new()
            .name("aviary-journal".into())
            .spawn(move || {
                Writer {
                    setup,
                    file,
                    len: 0,
                    done,
                }
                .run(&worker)
            })
            .context("cannot start the journal thread")?;
        Ok(Journal {
            shared,
            durable,
            writer: Mutex::new(Some(writer)),
        })
    }

    /// Locks the queue: take a seq, apply the write, push its record.
    pub fn lock(&self) -> MutexGuard<'_, Queue> {
        self.shared.queue.lock()
    }

    /// Wakes the writer after a push.
    pub fn wake(&self) {
        self.shared.wake.notify_one();
    }

    /// Why the journal's last write failed, while it keeps failing.
    pub fn failing(&self) -> Option<String> {
        self.durable.borrow().failing.clone()
    }

    /// The journal's progress.
    pub fn durable(&self) -> watch::Receiver<Durable> {
        self.durable.clone()
    }

    /// Writes what has queued, then stops the writer.
    pub fn close(&self) {
        self.shared.queue.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(writer) = self.writer.lock().take() {
            let _ = writer.join();
        }
    }
}

struct Writer {
    setup: Setup,
    file: File,
    len: u64,
    done: watch::Sender<Durable>,
}

impl Writer {
    fn run(mut self, shared: &Shared) {
        let mut buffer = Vec::new();
        loop {
            let records = {
                let mut queue = shared.queue.lock();
                while queue.records.is_empty() && !queue.closed {
                    shared.wake.wait(&mut queue);
                }
                if queue.records.is_empty() {
                    return;
                }
                std::mem::take(&mut queue.records)
            };
            buffer.clear();
            for (seq, payload) in &records {
                frame::encode(*seq, payload, &mut buffer);
            }
            self.append(&buffer);
            let last = records.last().expect("not empty").0;
            (self.setup.on_durable)(last);
            self.done.send_replace(Durable {
                seq: last,
                failing: None,
            });
            if self.setup.applier.send(records).is_err() {
                tracing::error!("the state applier stopped; the journal keeps writing");
            }
            if self.len >= self.setup.rotate_bytes {
                self.rotate(last + 1);
            }
        }
    }

    /// Appends and syncs `bytes`, retrying until it works: a record that
    /// was accepted is never dropped, and waiters hear why it is late.
    fn append(&mut self, bytes: &[u8]) {
        let mut pause = Duration::from_millis(50);
        loop {
            let written = self
                .file
                .write_all(bytes)
                .and_then(|()| self.file.sync_data());
            match written {
                Ok(()) => {
                    self.len += bytes.len() as u64;
                    return;
                }
                Err(error) => {
                    tracing::error!("cannot write the journal (retrying): {error}");
                    self.done
                        .send_modify(|d| d.failing = Some(error.to_string()));
                    // Drop the part that may have been written, so the retry
                    // appends right after the last intact frame.
                    let _ = self.file.set_len(self.len);
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    fn rotate(&mut self, next_seq: u64) {
        match create(&self.setup.dir, next_seq) {
            Ok(file) => {
                self.file = file;
                self.len = 0;
            }
            // Keep appending to the current file; rotation is tried again
            // after the next write.
            Err(error) => tracing::error!("cannot start a new journal file: {error:#}"),
        }
    }
}

/// Creates the journal file for `seq` and makes its name durable.
fn create(dir: &Path, seq: u64) -> Result<File> {
    let path = dir.join(file_name(seq));
    let file = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot create the journal file {}", path.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot sync the journal directory {}", dir.display()))?;
    Ok(file)
}

/// The journal files in `dir`, oldest first, with their first seq.
pub fn files(dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)
        .with_context(|| format!("cannot read the journal directory {}", dir.display()))?
    {
        let path = entry?.path();
        let seq = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".log"))
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(seq) = seq {
            files.push((seq, path));
        }
    }
    files.sort();
    Ok(files)
}
