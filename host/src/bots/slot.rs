//! One bot's place in the registry: the version serving now (swapped with
//! one atomic pointer store), the versions it served in this process (for
//! an instant rollback), what went wrong last, and its counters and logs.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwapOption;
use parking_lot::Mutex;

use super::stats::Stats;
use super::PendingUpgrade;
use crate::runtime::capabilities::log::LogRing;
use crate::runtime::LoadedBot;

/// Loaded versions kept in memory per bot, newest last, so a rollback to
/// one of them is a pointer swap. Older ones load again from the data
/// directory's copy and the compiled cache.
const KEPT_IN_MEMORY: usize = 8;

/// A failed attempt to load a build.
#[derive(Debug, Clone)]
pub struct Failure {
    pub version: String,
    pub sha256: String,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub error: String,
}

/// One bot of the registry.
pub struct Slot {
    current: ArcSwapOption<LoadedBot>,
    disabled: AtomicBool,
    history: Mutex<Vec<Arc<LoadedBot>>>,
    /// The manifest the bot was installed from: its identity.
    pub(super) source: Mutex<Option<PathBuf>>,
    pub(super) failure: Mutex<Option<Failure>>,
    pub(super) pending: Mutex<Option<PendingUpgrade>>,
    pub stats: Stats,
    pub logs: Arc<LogRing>,
    /// Set by a swap until the first event runs on the new version.
    awaiting_first: AtomicBool,
    /// When the last swap happened, to which build, and the store id that
    /// was next then: events with smaller seqs were waiting already.
    swapped: Mutex<Option<(Instant, String, u64)>>,
}

impl Slot {
    pub(super) fn new(disabled: bool) -> Slot {
        Slot {
            current: ArcSwapOption::empty(),
            disabled: AtomicBool::new(disabled),
            history: Mutex::default(),
            source: Mutex::default(),
            failure: Mutex::default(),
            pending: Mutex::default(),
            stats: Stats::default(),
            logs: Arc::default(),
            awaiting_first: AtomicBool::new(false),
            swapped: Mutex::default(),
        }
    }

    /// The version serving now, if one loaded.
    pub fn current(&self) -> Option<Arc<LoadedBot>> {
        self.current.load_full()
    }

    /// Whether the admin disabled the bot: its events wait.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    pub(super) fn set_disabled(&self, disabled: bool) {
        self.disabled.store(disabled, Ordering::Relaxed);
    }

    /// Makes `bot` the version every later event runs on. Events already
    /// running keep the version they started with. `waiting_below`: events
    /// with a smaller seq were accepted before the swap.
    pub(super) fn swap(&self, bot: Arc<LoadedBot>, waiting_below: u64) {
        {
            let mut history = self.history.lock();
            history.retain(|kept| kept.sha256 != bot.sha256);
            history.push(bot.clone());
            let excess = history.len().saturating_sub(KEPT_IN_MEMORY);
            history.drain(..excess);
        }
        *self.swapped.lock() = Some((Instant::now(), bot.sha256.clone(), waiting_below));
        self.current.store(Some(bot));
        self.awaiting_first.store(true, Ordering::Release);
        self.stats.record_swap();
        *self.failure.lock() = None;
    }

    /// Stops serving any version (the files left the plugins directory).
    pub(super) fn unload(&self) {
        self.current.store(None);
    }

    /// A version this process loaded before, by sha256.
    pub(super) fn kept(&self, sha256: &str) -> Option<Arc<LoadedBot>> {
        self.history
            .lock()
            .iter()
            .find(|bot| bot.sha256 == sha256)
            .cloned()
    }

    /// Called as event `seq` starts on `bot`: the first event on a version
    /// just swapped in records how long after the swap it started, when it
    /// was already waiting then (so an idle bot's pause is not counted).
    pub fn event_starts(&self, bot: &LoadedBot, seq: u64) {
        if !self.awaiting_first.load(Ordering::Acquire) {
            return;
        }
        let swapped = self.swapped.lock();
        if let Some((at, sha256, waiting_below)) = swapped.as_ref() {
            if *sha256 == bot.sha256
                && self.awaiting_first.swap(false, Ordering::AcqRel)
                && seq < *waiting_below
            {
                self.stats.swap_us.record(at.elapsed().as_micros() as u64);
            }
        }
    }
}
