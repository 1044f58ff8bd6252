//! A timer thread that hands items back when their time comes: how the
//! router puts a lane back "not before" a moment without holding a worker.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

/// Items waiting for their time, earliest first.
pub struct Delays<T: Ord> {
    waiting: Mutex<BinaryHeap<Reverse<(Instant, T)>>>,
    wake: Condvar,
}

impl<T: Ord + Send + 'static> Delays<T> {
    /// Starts the timer thread, which calls `due` with each item at (or
    /// just after) its time, in time order.
    pub fn start(name: &str, due: impl Fn(T) + Send + 'static) -> Arc<Delays<T>> {
        let delays = Arc::new(Delays {
            waiting: Mutex::new(BinaryHeap::new()),
            wake: Condvar::new(),
        });
        let timer = delays.clone();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || timer.run(due))
            .expect("cannot start the timer thread");
        delays
    }

    /// Hands `item` back at `at`.
    pub fn add(&self, at: Instant, item: T) {
        self.waiting.lock().push(Reverse((at, item)));
        self.wake.notify_one();
    }

    fn run(&self, due: impl Fn(T)) {
        let mut waiting = self.waiting.lock();
        loop {
            let next = waiting.peek().map(|Reverse((at, _))| *at);
            match next {
                None => self.wake.wait(&mut waiting),
                Some(at) if at <= Instant::now() => {
                    let Some(Reverse((_, item))) = waiting.pop() else {
                        continue;
                    };
                    // Call without the lock: `due` may add again.
                    drop(waiting);
                    due(item);
                    waiting = self.waiting.lock();
                }
                Some(at) => {
                    self.wake.wait_until(&mut waiting, at);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn items_come_back_at_their_time_in_time_order() {
        let (tx, rx) = crossbeam_channel::unbounded();
        let delays = Delays::start("test-delays", move |item: u32| {
            tx.send((item, Instant::now())).unwrap();
        });
        let start = Instant::now();
        delays.add(start + Duration::from_millis(200), 2);
        delays.add(start + Duration::from_millis(50), 1);
        let (first, at) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(first, 1);
        assert!(at >= start + Duration::from_millis(50));
        let (second, at) = rx.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(second, 2);
        assert!(at >= start + Duration::from_millis(200));
    }
}
