//! Group commit: writers that need their data on disk share one `flush`, so
//! a burst of writes costs one sync, not one each. A background thread
//! flushes whenever something asked for it and then reports the generation
//! it made durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use parking_lot::{Condvar, Mutex};
use tokio::sync::watch;

/// Shortest time between the starts of two flushes. A flush makes sled's
/// writers wait, so flushing back to back would slow every write; pacing
/// lets one flush carry all the writes of this window.
const MIN_FLUSH_INTERVAL: std::time::Duration = std::time::Duration::from_millis(10);

/// Called with each generation once it is on disk.
pub type OnDurable = Box<dyn Fn(u64) + Send + Sync>;

/// The flusher thread and the generations it has made durable.
pub struct GroupCommit {
    shared: Arc<Shared>,
    flushed: watch::Receiver<(u64, Option<String>)>,
}

struct Shared {
    /// Generation that the next flush will carry.
    next: AtomicU64,
    wanted: Mutex<bool>,
    wake: Condvar,
}

impl GroupCommit {
    pub fn start(db: sled::Db, on_durable: OnDurable) -> GroupCommit {
        let shared = Arc::new(Shared {
            next: AtomicU64::new(1),
            wanted: Mutex::new(false),
            wake: Condvar::new(),
        });
        let (done, flushed) = watch::channel((0, None));
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("aviary-flush".into())
            .spawn(move || loop {
                let started = std::time::Instant::now();
                {
                    let mut wanted = worker.wanted.lock();
                    while !*wanted {
                        worker.wake.wait(&mut wanted);
                    }
                    *wanted = false;
                }
                let generation = worker.next.fetch_add(1, Ordering::SeqCst);
                let error = db.flush().err().map(|e| e.to_string());
                if error.is_none() {
                    on_durable(generation);
                }
                if done.send((generation, error)).is_err() {
                    return;
                }
                if let Some(rest) = MIN_FLUSH_INTERVAL.checked_sub(started.elapsed()) {
                    std::thread::sleep(rest);
                }
            })
            .expect("cannot start the flush thread");
        GroupCommit { shared, flushed }
    }

    /// Asks for a flush and returns the generation that will carry every
    /// write made before this call.
    pub fn request(&self) -> u64 {
        let ticket = self.shared.next.load(Ordering::SeqCst);
        *self.shared.wanted.lock() = true;
        self.shared.wake.notify_one();
        ticket
    }

    /// Returns once everything written before the call is on disk.
    pub async fn wait(&self) -> Result<()> {
        let ticket = self.request();
        let mut flushed = self.flushed.clone();
        let state = flushed
            .wait_for(|(generation, _)| *generation >= ticket)
            .await?;
        match &state.1 {
            Some(error) => anyhow::bail!("the store could not write to disk: {error}"),
            None => Ok(()),
        }
    }
}
