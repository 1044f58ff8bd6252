//! A bounded pool of generation slots shared fairly by conversations.
//! Each model has `parallel` slots. When all are taken, waiters queue per
//! conversation and a freed slot goes to the next conversation in turn, so
//! one conversation asking again and again never keeps the others waiting
//! behind all of its requests. Dropping a waiting future leaves the queue;
//! dropping a [`Slot`] frees it for the next.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// The slots of one model.
pub struct FairQueue {
    inner: Mutex<Inner>,
}

struct Inner {
    free: u32,
    /// Conversations with waiters, in the order they get the next slots.
    turns: VecDeque<String>,
    waiting: HashMap<String, VecDeque<oneshot::Sender<Slot>>>,
}

/// A taken slot; freed when dropped.
pub struct Slot {
    queue: Option<Arc<FairQueue>>,
}

impl FairQueue {
    /// A queue of `slots` slots.
    pub fn new(slots: u32) -> Arc<FairQueue> {
        Arc::new(FairQueue {
            inner: Mutex::new(Inner {
                free: slots,
                turns: VecDeque::new(),
                waiting: HashMap::new(),
            }),
        })
    }

    /// Takes a slot for `conversation` now, or `Err` with a receiver that
    /// gets one when it is this conversation's turn.
    pub fn try_take(self: &Arc<Self>, conversation: &str) -> Result<Slot, oneshot::Receiver<Slot>> {
        let mut inner = self.inner.lock();
        if inner.free > 0 {
            inner.free -= 1;
            return Ok(self.slot());
        }
        let (sender, receiver) = oneshot::channel();
        let waiters = inner.waiting.entry(conversation.to_owned()).or_default();
        if waiters.is_empty() {
            inner.turns.push_back(conversation.to_owned());
        }
        // Waiters that gave up are dropped here rather than piling up.
        let waiters = inner.waiting.get_mut(conversation).expect("just inserted");
        waiters.retain(|w| !w.is_closed());
        waiters.push_back(sender);
        Err(receiver)
    }

    /// Takes a slot for `conversation`, waiting for its turn.
    pub async fn take(self: &Arc<Self>, conversation: &str) -> Slot {
        match self.try_take(conversation) {
            Ok(slot) => slot,
            Err(turn) => turn.await.expect("a queued waiter is always answered"),
        }
    }

    /// Slots free now (for tests and stats).
    pub fn free(&self) -> u32 {
        self.inner.lock().free
    }

    fn slot(self: &Arc<Self>) -> Slot {
        Slot {
            queue: Some(self.clone()),
        }
    }

    /// Hands a freed slot to the next conversation's oldest live waiter.
    fn release(self: &Arc<Self>) {
        let mut inner = self.inner.lock();
        while let Some(conversation) = inner.turns.pop_front() {
            let waiters = inner
                .waiting
                .get_mut(&conversation)
                .expect("turns have waiters");
            let Some(waiter) = waiters.pop_front() else {
                inner.waiting.remove(&conversation);
                continue;
            };
            if waiters.is_empty() {
                inner.waiting.remove(&conversation);
            } else {
                inner.turns.push_back(conversation);
            }
            match waiter.send(self.slot()) {
                Ok(()) => return,
                // The waiter left; its slot comes back here: defuse it so it
                // does not release again, and try the next one.
                Err(mut slot) => slot.queue = None,
            }
        }
        inner.free += 1;
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some(queue) = self.queue.take() {
            queue.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_freed_slot_goes_to_the_next_conversation_in_turn() {
        let queue = FairQueue::new(1);
        let held = queue.try_take("busy").ok().unwrap();
        // "busy" queues three more requests before "quiet" asks once.
        let busy: Vec<_> = (0..3)
            .map(|_| queue.try_take("busy").err().unwrap())
            .collect();
        let quiet = queue.try_take("quiet").err().unwrap();
        drop(held);
        let mut busy = busy.into_iter();
        let first = busy.next().unwrap().await.unwrap();
        drop(first);
        // The quiet conversation's one request goes before busy's second.
        let quiet_slot = quiet.await.unwrap();
        assert_eq!(queue.free(), 0);
        drop(quiet_slot);
        drop(busy.next().unwrap().await.unwrap());
        drop(busy.next().unwrap().await.unwrap());
        assert_eq!(queue.free(), 1, "every slot comes back");
    }

    #[tokio::test]
    async fn a_waiter_that_gave_up_does_not_keep_its_slot() {
        let queue = FairQueue::new(1);
        let held = queue.try_take("a").ok().unwrap();
        let gave_up = queue.try_take("b").err().unwrap();
        let waits = queue.try_take("c").err().unwrap();
        drop(gave_up);
        drop(held);
        let slot = waits.await.unwrap();
        drop(slot);
        assert_eq!(queue.free(), 1);
    }
}
