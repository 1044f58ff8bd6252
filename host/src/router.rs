//! Routes events to bots: one lane per conversation, so a conversation's
//! events run one after another while different conversations run in
//! parallel on the worker threads. Queues are bounded: admission fails
//! (HTTP 429) before anything is stored when a lane or the host is full.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};
use parking_lot::Mutex;

use crate::config::QueueConfig;
use crate::store::PendingEvent;

/// Runs one event to completion (including retries and dead-lettering).
pub trait Dispatch: Send + Sync + 'static {
    fn dispatch(&self, event: PendingEvent);

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
    /// A worker owns this lane (it is running or in the ready queue).
    scheduled: bool,
}

/// Lanes and the per-bot bookkeeping of how many of its events run.
#[derive(Default)]
struct Lanes {
    by_key: HashMap<LaneKey, Lane>,
    /// Events running now, per bot.
    running: HashMap<String, usize>,
    /// Lanes ready to run but held back by their bot's concurrency limit.
    deferred: HashMap<String, VecDeque<LaneKey>>,
}

/// The router. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Mutex<Lanes>,
    ready: Sender<LaneKey>,
    /// Events admitted and not yet finished, host-wide.
    queued: AtomicUsize,
    limits: QueueConfig,
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
        let inner = Arc::new(Inner {
            lanes: Mutex::new(Lanes::default()),
            ready,
            queued: AtomicUsize::new(0),
            limits,
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

impl Inner {
    fn schedule(&self, lane: &mut Lane, key: LaneKey) {
        if !lane.scheduled && !lane.queue.is_empty() {
            lane.scheduled = true;
            let _ = self.ready.send(key);
        }
    }

    fn work(&self, ready: &Receiver<LaneKey>, dispatcher: &dyn Dispatch) {
        while let Ok(key) = ready.recv() {
            let bot = key.0.clone();
            let event = {
                let mut lanes = self.lanes.lock();
                let running = lanes.running.get(&bot).copied().unwrap_or(0);
                if dispatcher
                    .concurrency_limit(&bot)
                    .is_some_and(|limit| running >= limit)
                {
                    // The lane stays scheduled; it runs when one of its bot's events ends.
                    lanes.deferred.entry(bot).or_default().push_back(key);
                    continue;
                }
                *lanes.running.entry(bot.clone()).or_default() += 1;
                lanes
                    .by_key
                    .get_mut(&key)
                    .and_then(|lane| lane.queue.pop_front())
            };
            if let Some(event) = event {
                dispatcher.dispatch(event);
                self.queued.fetch_sub(1, Ordering::Relaxed);
            }
            let mut lanes = self.lanes.lock();
            if let Some(running) = lanes.running.get_mut(&bot) {
                *running -= 1;
                if *running == 0 {
                    lanes.running.remove(&bot);
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
            if let Some(lane) = lanes.by_key.get_mut(&key) {
                lane.scheduled = false;
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
        fn dispatch(&self, event: PendingEvent) {
            let now = self.active.fetch_add(1, Ordering::SeqCst) + 1;
            self.most_active.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(self.delay);
            self.seen.lock().push((event.conversation, event.seq));
            self.active.fetch_sub(1, Ordering::SeqCst);
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
        fn dispatch(&self, event: PendingEvent) {
            self.0.dispatch(event)
        }

        fn concurrency_limit(&self, _bot: &str) -> Option<usize> {
            Some(1)
        }
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
}
