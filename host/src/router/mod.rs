//! Routes events to bots: one lane per conversation, so a conversation's
//! events run one after another while different conversations run in
//! parallel on the worker threads. Queues are bounded: admission fails
//! (HTTP 429) before anything is stored when a lane or the host is full.
//! An event to run again (a retry, a send-rate wait) stays first in its lane,
//! which goes back to the workers "not before" its time ([`delay`]): no
//! worker sleeps, and the lane's later events wait behind it.

mod delay;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::config::QueueConfig;
use crate::store::PendingEvent;

/// What the router does with an event after one run of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Finished: committed or dead-lettered.
    Done,
    /// Run it again, still first in its lane, `after` from now; `failed`
    /// counts this run among the event's failures.
    RunAgain { after: Duration, failed: bool },
}

/// Runs one event once (the router calls it again when told to).
pub trait Dispatch: Send + Sync + 'static {
    /// Runs `event`, which failed `failures` times before.
    fn dispatch(&self, event: &PendingEvent, failures: u32) -> Next;

    /// How many events of `bot` may run at once; `None` for no limit. A
    /// bot that misbehaves is held to few workers so the others keep theirs.
    fn concurrency_limit(&self, _bot: &str) -> Option<usize> {
        None
    }
}

type LaneKey = (String, String);

#[derive(Default)]
struct Lane {
    queue: VecDeque<PendingEvent>,
    /// Admitted events not yet pushed.
    reserved: usize,
    /// A worker owns this lane (it is running, in the ready queue or
    /// waiting for its time).
    scheduled: bool,
    /// Failed runs of the event at the front.
    failures: u32,
}

/// Lanes and the per-bot bookkeeping of how many of its events run.
#[derive(Default)]
struct Lanes {
    by_key: HashMap<LaneKey, Lane>,
    /// Events running now, per bot.
    running: HashMap<String, usize>,
    /// Lanes ready to run but held back by their bot's concurrency limit.
    deferred: HashMap<String, VecDeque<LaneKey>>,
    /// Events running now of bots that have a concurrency limit.
    limited_running: usize,
    /// Lanes of limited bots held back because limited bots together
    /// already use [`Inner::limited_workers`].
    limited_deferred: VecDeque<LaneKey>,
}

/// The router. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Mutex<Lanes>,
    ready: Sender<LaneKey>,
    /// Lanes waiting for the time their front event may run again.
    delays: Arc<delay::Delays<LaneKey>>,
    /// Events admitted and not yet finished, host-wide.
    queued: AtomicUsize,
    limits: QueueConfig,
    /// Workers that bots with a concurrency limit (misbehaving ones) may
    /// use together, so that several of them cannot take every worker.
    limited_workers: usize,
}

/// Why an event was not admitted.
#[derive(Debug, thiserror::Error)]
#[error("the queue for this conversation is full; retry later")]
pub struct QueueFull;

/// Room for events in one lane, taken before they are stored.
pub struct Reservation {
    inner: Arc<Inner>,
    key: LaneKey,
    count: usize,
}

impl Router {
    /// Starts `workers` threads that run events through `dispatcher`.
    pub fn start(workers: usize, limits: QueueConfig, dispatcher: Arc<dyn Dispatch>) -> Router {
        let (ready, ready_rx) = crossbeam_channel::unbounded();
        let due = ready.clone();
        let delays = delay::Delays::start("aviary-delays", move |key| {
            let _ = due.send(key);
        });
        let inner = Arc::new(Inner {
            lanes: Mutex::new(Lanes::default()),
            ready,
            delays,
            queued: AtomicUsize::new(0),
            limits,
            limited_workers: (workers / 2).max(1),
        });
        for n in 0..workers {
            let inner = inner.clone();
            let ready_rx = ready_rx.clone();
            let dispatcher = dispatcher.clone();
            std::thread::Builder::new()
                .name(format!("aviary-worker-{n}"))
                .spawn(move || inner.work(&ready_rx, &*dispatcher))
                .expect("cannot start a worker thread");
        }
        Router { inner }
    }

    /// Takes room for `count` events in a conversation, or says it is full.
    pub fn reserve(
        &self,
        bot: &str,
        conversation: &str,
        count: usize,
    ) -> Result<Reservation, QueueFull> {
        let key = (bot.to_owned(), conversation.to_owned());
        let mut lanes = self.inner.lanes.lock();
        let lanes = &mut lanes.by_key;
        let lane = lanes.entry(key.clone()).or_default();
        let in_lane = lane.queue.len() + lane.reserved + usize::from(lane.scheduled);
        if in_lane + count > self.inner.limits.per_conversation
            || self.inner.queued.load(Ordering::Relaxed) + count > self.inner.limits.total
        {
            if lane.queue.is_empty() && lane.reserved == 0 && !lane.scheduled {
                lanes.remove(&key);
            }
            return Err(QueueFull);
        }
        lane.reserved += count;
        self.inner.queued.fetch_add(count, Ordering::Relaxed);
        Ok(Reservation {
            inner: self.inner.clone(),
            key,
            count,
        })
    }

    /// Queues events that are already stored (recovery after a restart),
    /// ignoring the bounds: they were accepted before.
    pub fn requeue(&self, events: Vec<PendingEvent>) {
        for event in events {
            let key = (event.bot.clone(), event.conversation.clone());
            self.inner.queued.fetch_add(1, Ordering::Relaxed);
            let mut lanes = self.inner.lanes.lock();
            let lane = lanes.by_key.entry(key.clone()).or_default();
            lane.queue.push_back(event);
            self.inner.schedule(lane, key);
        }
    }

    /// Events admitted and not yet finished.
    pub fn queued(&self) -> usize {
        self.inner.queued.load(Ordering::Relaxed)
    }
}

impl Reservation {
    /// Queues the stored events of this reservation, in order.
    pub fn push(mut self, events: Vec<PendingEvent>) {
        debug_assert!(events.len() <= self.count);
        let mut lanes = self.inner.lanes.lock();
        let lane = lanes.by_key.entry(self.key.clone()).or_default();
        lane.reserved -= self.count;
        let unused = self.count - events.len();
        self.count = 0;
        lane.queue.extend(events);
        self.inner.schedule(lane, self.key.clone());
        drop(lanes);
        self.inner.queued.fetch_sub(unused, Ordering::Relaxed);
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.count == 0 {
            return;
        }
        let mut lanes = self.inner.lanes.lock();
        if let Some(lane) = lanes.by_key.get_mut(&self.key) {
            lane.reserved -= self.count;
            if lane.queue.is_empty() && lane.reserved == 0 && !lane.scheduled {
                lanes.by_key.remove(&self.key);
            }
        }
        self.inner.queued.fetch_sub(self.count, Ordering::Relaxed);
    }
}

/// How long an idle worker polls for the next lane before it sleeps: an
/// event that arrives meanwhile starts without a thread wake-up.
const SPIN_BEFORE_SLEEP: std::time::Duration = std::time::Duration::from_micros(50);

/// The next lane to run, polled for [`SPIN_BEFORE_SLEEP`] before sleeping.
fn next_ready(ready: &Receiver<LaneKey>) -> Result<LaneKey, crossbeam_channel::RecvError> {
    let started = Instant::now();
    while started.elapsed() < SPIN_BEFORE_SLEEP {
        match ready.try_recv() {
            Ok(key) => return Ok(key),
            Err(crossbeam_channel::TryRecvError::Empty) => std::hint::spin_loop(),
            Err(crossbeam_channel::TryRecvError::Disconnected) => break,
        }
    }
    ready.recv()
}

impl Inner {
    fn schedule(&self, lane: &mut Lane, key: LaneKey) {
        if !lane.scheduled && !lane.queue.is_empty() {
            lane.scheduled = true;
            let _ = self.ready.send(key);
        }
    }

    fn work(&self, ready: &Receiver<LaneKey>, dispatcher: &dyn Dispatch) {
        while let Ok(key) = next_ready(ready) {
            let bot = key.0.clone();
            let limited;
            let event = {
                let mut lanes = self.lanes.lock();
                let running = lanes.running.get(&bot).copied().unwrap_or(0);
                let limit = dispatcher.concurrency_limit(&bot);
                if limit.is_some_and(|limit| running >= limit) {
                    // The lane stays scheduled; it runs when one of its bot's events ends.
                    lanes.deferred.entry(bot).or_default().push_back(key);
                    continue;
                }
                if limit.is_some() && lanes.limited_running >= self.limited_workers {
                    // It runs when an event of a limited bot ends.
                    lanes.limited_deferred.push_back(key);
                    continue;
                }
                limited = limit.is_some();
                lanes.limited_running += usize::from(limited);
                *lanes.running.entry(bot.clone()).or_default() += 1;
                lanes.by_key.get_mut(&key).and_then(|lane| {
                    let event = lane.queue.pop_front()?;
                    Some((event, lane.failures))
                })
            };
            let mut next = Next::Done;
            if let Some((event, failures)) = event {
                next = dispatcher.dispatch(&event, failures);
                match next {
                    Next::Done => {
                        self.queued.fetch_sub(1, Ordering::Relaxed);
                    }
                    Next::RunAgain { failed, .. } => {
                        let mut lanes = self.lanes.lock();
                        let lane = lanes.by_key.entry(key.clone()).or_default();
                        lane.queue.push_front(event);
                        lane.failures = failures + u32::from(failed);
                    }
                }
            }
            let mut lanes = self.lanes.lock();
            if let Some(running) = lanes.running.get_mut(&bot) {
                *running -= 1;
                if *running == 0 {
                    lanes.running.remove(&bot);
                }
            }
            if limited {
                lanes.limited_running -= 1;
                if let Some(next) = lanes.limited_deferred.pop_front() {
                    let _ = self.ready.send(next);
                }
            }
            if let Some(waiting) = lanes.deferred.get_mut(&bot) {
                if let Some(next) = waiting.pop_front() {
                    let _ = self.ready.send(next);
                }
                if waiting.is_empty() {
                    lanes.deferred.remove(&bot);
                }
            }
            if let Next::RunAgain { after, .. } = next {
                // The lane stays scheduled: nothing else runs it before its time.
                self.delays.add(Instant::now() + after, key);
                continue;
            }
            if let Some(lane) = lanes.by_key.get_mut(&key) {
                lane.scheduled = false;
                lane.failures = 0;
                if lane.queue.is_empty() {
                    if lane.reserved == 0 {
                        lanes.by_key.remove(&key);
                    }
                } else {
                    self.schedule(lane, key);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::EventRecord;
    use std::time::Duration;

    struct Recorder {
        seen: Mutex<Vec<(String, u64)>>,
        delay: Duration,
        active: std::sync::atomic::AtomicUsize,
        most_active: std::sync::atomic::AtomicUsize,
    }

    impl Recorder {
        fn new(delay: Duration) -> Arc<Recorder> {
            Arc::new(Recorder {
                seen: Mutex::new(Vec::new()),
                delay,
                active: Default::default(),
                most_active: Default::default(),
            })
        }
    }

    impl Dispatch for Recorder {
        fn dispatch(&self, event: &PendingEvent, _failures: u32) -> Next {
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_active.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.seen
                .lock()
                .push((event.conversation.clone(), event.seq));
            self.active.fetch_sub(1, Ordering::SeqCst);
            Next::Done
        }
    }

    fn event(conversation: &str, seq: u64) -> PendingEvent {
        PendingEvent {
            seq,
            bot: "b".into(),
            conversation: conversation.into(),
            event: EventRecord::ContactAdded {
                contact: "x".into(),
            },
        }
    }

    fn wait_idle(router: &Router) {
        for _ in 0..500 {
            if router.queued() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("router did not drain");
    }

    #[test]
    fn one_conversation_runs_in_order_and_conversations_in_parallel() {
        let recorder = Recorder::new(Duration::from_millis(20));
        let router = Router::start(
            4,
            QueueConfig {
                per_conversation: 100,
                total: 1000,
            },
            recorder.clone(),
        );
        for seq in 0..5 {
            for conversation in ["a", "b", "c", "d"] {
                router
                    .reserve("b", conversation, 1)
                    .unwrap()
                    .push(vec![event(conversation, seq)]);
            }
        }
        wait_idle(&router);
        assert!(
            recorder.most_active.load(Ordering::SeqCst) >= 2,
            "conversations never ran in parallel"
        );
        let seen = recorder.seen.lock();
        assert_eq!(seen.len(), 20);
        for conversation in ["a", "b", "c", "d"] {
            let order: Vec<u64> = seen
                .iter()
                .filter(|(c, _)| c == conversation)
                .map(|(_, s)| *s)
                .collect();
            assert_eq!(order, vec![0, 1, 2, 3, 4]);
        }
    }

    /// Limits every bot to one running event.
    struct OneAtATime(Arc<Recorder>);

    impl Dispatch for OneAtATime {
        fn dispatch(&self, event: &PendingEvent, failures: u32) -> Next {
            self.0.dispatch(event, failures)
        }

        fn concurrency_limit(&self, _bot: &str) -> Option<usize> {
            Some(1)
        }
    }

    #[test]
    fn limited_bots_together_use_at_most_half_the_workers() {
        let recorder = Recorder::new(Duration::from_millis(10));
        let router = Router::start(
            4,
            QueueConfig {
                per_conversation: 100,
                total: 1000,
            },
            Arc::new(OneAtATime(recorder.clone())),
        );
        for seq in 0..3 {
            for bot in ["b0", "b1", "b2", "b3"] {
                let mut event = event("c", seq);
                event.bot = bot.into();
                router.reserve(bot, "c", 1).unwrap().push(vec![event]);
            }
        }
        wait_idle(&router);
        assert_eq!(recorder.seen.lock().len(), 12, "held-back lanes all ran");
        let most = recorder.most_active.load(Ordering::SeqCst);
        assert!(most <= 2, "{most} limited events ran at once on 4 workers");
    }

    #[test]
    fn a_limited_bot_runs_one_event_at_a_time_across_conversations() {
        let recorder = Recorder::new(Duration::from_millis(10));
        let router = Router::start(
            4,
            QueueConfig {
                per_conversation: 100,
                total: 1000,
            },
            Arc::new(OneAtATime(recorder.clone())),
        );
        for seq in 0..3 {
            for conversation in ["a", "b", "c", "d"] {
                router
                    .reserve("b", conversation, 1)
                    .unwrap()
                    .push(vec![event(conversation, seq)]);
            }
        }
        wait_idle(&router);
        assert_eq!(recorder.seen.lock().len(), 12, "deferred lanes all ran");
        assert_eq!(recorder.most_active.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn full_lanes_refuse_and_unused_reservations_give_room_back() {
        let recorder = Recorder::new(Duration::from_millis(200));
        let router = Router::start(
            1,
            QueueConfig {
                per_conversation: 2,
                total: 3,
            },
            recorder,
        );
        let first = router.reserve("b", "a", 2).unwrap();
        assert!(router.reserve("b", "a", 1).is_err(), "lane bound");
        let other = router.reserve("b", "z", 1).unwrap();
        assert!(router.reserve("b", "y", 1).is_err(), "host bound");
        drop(other);
        assert!(
            router.reserve("b", "y", 1).is_ok(),
            "a dropped reservation frees its room"
        );
        first.push(vec![event("a", 1)]);
        assert_eq!(router.queued(), 1);
    }

    /// Fails the first event of lane "a" three times (100 ms apart, the
    /// second run not counted), recording each run with its time.
    struct Flaky {
        runs: Mutex<Vec<(String, u64, u32, Instant)>>,
    }

    impl Dispatch for Flaky {
        fn dispatch(&self, event: &PendingEvent, failures: u32) -> Next {
            let mut runs = self.runs.lock();
            let attempt = runs
                .iter()
                .filter(|r| r.0 == event.conversation && r.1 == event.seq)
                .count();
            runs.push((
                event.conversation.clone(),
                event.seq,
                failures,
                Instant::now(),
            ));
            if event.conversation == "a" && event.seq == 0 && attempt < 3 {
                return Next::RunAgain {
                    after: Duration::from_millis(100),
                    failed: attempt != 1,
                };
            }
            Next::Done
        }
    }

    #[test]
    fn a_delayed_lane_keeps_its_order_frees_its_worker_and_counts_failures() {
        let flaky = Arc::new(Flaky {
            runs: Mutex::new(Vec::new()),
        });
        let router = Router::start(
            1,
            QueueConfig {
                per_conversation: 100,
                total: 1000,
            },
            flaky.clone(),
        );
        let started = Instant::now();
        router
            .reserve("b", "a", 2)
            .unwrap()
            .push(vec![event("a", 0), event("a", 1)]);
        router
            .reserve("b", "z", 1)
            .unwrap()
            .push(vec![event("z", 5)]);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(
            router.queued(),
            2,
            "z ran; a's delayed event and the one behind it still count"
        );
        wait_idle(&router);
        let runs = flaky.runs.lock();
        let order: Vec<(&str, u64, u32)> = runs
            .iter()
            .map(|(c, s, f, _)| (c.as_str(), *s, *f))
            .collect();
        // Lane z ran on the one worker while lane a waited; a's second
        // event ran only after its first was done; the uncounted run did
        // not add a failure.
        assert_eq!(
            order,
            [
                ("a", 0, 0),
                ("z", 5, 0),
                ("a", 0, 1),
                ("a", 0, 1),
                ("a", 0, 2),
                ("a", 1, 0)
            ]
        );
        let a_runs: Vec<Instant> = runs.iter().filter(|r| r.0 == "a").map(|r| r.3).collect();
        for pair in a_runs.windows(2).take(3) {
            assert!(
                pair[1] - pair[0] >= Duration::from_millis(100),
                "runs spaced by the delay"
            );
        }
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
