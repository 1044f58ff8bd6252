//! The scheduler: fires the timers bots set (`aviary:bot/schedule`). It
//! keeps every timer's next time in memory (loaded from the store at start,
//! so timers survive restarts) and, when one is due, queues its event and
//! moves the timer in one write ([`Store::fire_timer`]), then hands the
//! event to the router. A timer due while the host was down fires once
//! when it starts.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Result;
use parking_lot::{Condvar, Mutex};

use crate::router::Router;
use crate::store::{now_ms, Store};

/// The scheduler. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    router: OnceLock<Router>,
    due: Mutex<Due>,
    wake: Condvar,
}

/// Timers by time, and the time of each.
#[derive(Default)]
struct Due {
    by_time: BTreeSet<(u64, String, String)>,
    of: HashMap<(String, String), u64>,
}

impl Due {
    fn set(&mut self, bot: &str, id: &str, due_at: Option<u64>) {
        let key = (bot.to_owned(), id.to_owned());
        if let Some(old) = self.of.remove(&key) {
            self.by_time.remove(&(old, key.0.clone(), key.1.clone()));
        }
        if let Some(due_at) = due_at {
            self.by_time.insert((due_at, key.0.clone(), key.1.clone()));
            self.of.insert(key, due_at);
        }
    }
}

impl Scheduler {
    /// Loads every timer of the store; nothing fires before [`Scheduler::start`].
    pub fn load(store: Store) -> Result<Scheduler> {
        let mut due = Due::default();
        for (bot, timer) in store.all_timers()? {
            due.set(&bot, &timer.id, Some(timer.due_at));
        }
        Ok(Scheduler {
            inner: Arc::new(Inner {
                store,
                router: OnceLock::new(),
                due: Mutex::new(due),
                wake: Condvar::new(),
            }),
        })
    }

    /// Starts firing into `router`.
    pub fn start(&self, router: Router) -> Result<()> {
        let _ = self.inner.router.set(router);
        let inner = self.inner.clone();
        std::thread::Builder::new()
            .name("aviary-timers".into())
            .spawn(move || inner.run())?;
        Ok(())
    }

    /// Timers `ids` of `bot` changed in a commit: read them again.
    pub fn changed(&self, bot: &str, ids: &[String]) {
        for id in ids {
            let due_at = match self.inner.store.timer(bot, id) {
                Ok(timer) => timer.map(|t| t.due_at),
                Err(error) => {
                    tracing::error!(bot, timer = %id, "cannot read a timer: {error:#}");
                    continue;
                }
            };
            self.inner.due.lock().set(bot, id, due_at);
        }
        self.inner.wake.notify_one();
    }
}

impl Inner {
    fn run(&self) {
        loop {
            let (due_at, bot, id) = {
                let mut due = self.due.lock();
                loop {
                    let now = now_ms();
                    match due.by_time.first().cloned() {
                        Some(first) if first.0 <= now => {
                            due.by_time.remove(&first);
                            due.of.remove(&(first.1.clone(), first.2.clone()));
                            break first;
                        }
                        Some((at, ..)) => {
                            let wait = Duration::from_millis((at - now).min(60_000));
                            self.wake.wait_for(&mut due, wait);
                        }
                        None => {
                            self.wake.wait_for(&mut due, Duration::from_secs(60));
                        }
                    }
                }
            };
            self.fire(&bot, &id, due_at);
        }
    }

    fn fire(&self, bot: &str, id: &str, due_at: u64) {
        match self.store.fire_timer(bot, id, due_at) {
            Ok(Some(event)) => {
                if let Some(router) = self.router.get() {
                    router.requeue(vec![event]);
                }
            }
            Ok(None) => {}
            Err(error) => tracing::error!(bot, timer = id, "cannot fire a timer: {error:#}"),
        }
        // A repeating timer moved on; a changed one has its new time.
        match self.store.timer(bot, id) {
            Ok(next) => self.due.lock().set(bot, id, next.map(|t| t.due_at)),
            Err(error) => tracing::error!(bot, timer = id, "cannot read a timer: {error:#}"),
        }
    }
}
