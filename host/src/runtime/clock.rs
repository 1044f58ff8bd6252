//! The two clocks that bound an event. CPU time (`timeout_ms`) counts only
//! what the event's thread computes, so time spent waiting inside a host
//! call (a sleep, an HTTP answer, later a model) is not charged to the bot;
//! wall-clock time (`wall_ms`) bounds everything, waits included. The epoch
//! ticker calls [`EventClock::tick`] every [`super::EPOCH_TICK`] while wasm
//! runs; waits inside host calls are cut by a timer at the wall deadline
//! (see `LoadedBot::run`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::UpdateDeadline;

/// Which limit an event ran past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overrun {
    /// CPU time, `timeout_ms`.
    Cpu(Duration),
    /// Wall-clock time, `wall_ms`.
    Wall(Duration),
}

/// The clocks of one event.
pub struct EventClock {
    cpu_start: Duration,
    cpu_limit: Duration,
    wall_limit: Duration,
    wall_deadline: Instant,
    /// The limit the event ran past, once it did.
    pub overrun: Option<Overrun>,
    containment: Arc<Containment>,
}

impl EventClock {
    /// Starts both clocks now, on the calling thread.
    pub fn start(cpu_limit: Duration, wall_limit: Duration, containment: Arc<Containment>) -> Self {
        EventClock {
            cpu_start: thread_cpu_time(),
            cpu_limit,
            wall_limit,
            wall_deadline: Instant::now() + wall_limit,
            overrun: None,
            containment,
        }
    }

    /// When the event must be over, waits included.
    pub fn wall_deadline(&self) -> Instant {
        self.wall_deadline
    }

    /// The wall-clock limit, `wall_ms`.
    pub fn wall_limit(&self) -> Duration {
        self.wall_limit
    }

    /// Called at each epoch tick while wasm runs: interrupt the event once
    /// either limit is spent.
    pub fn tick(&mut self) -> UpdateDeadline {
        if thread_cpu_time().saturating_sub(self.cpu_start) >= self.cpu_limit {
            self.overran(Overrun::Cpu(self.cpu_limit));
            return UpdateDeadline::Interrupt;
        }
        if Instant::now() >= self.wall_deadline {
            self.overran(Overrun::Wall(self.wall_limit));
            return UpdateDeadline::Interrupt;
        }
        UpdateDeadline::Continue(1)
    }

    /// Records that the wall deadline passed while the event waited in a host call.
    pub fn wall_passed(&mut self) {
        self.overran(Overrun::Wall(self.wall_limit));
    }

    /// Quarantine counts from the moment of the overrun, not from the end
    /// of the event.
    fn overran(&mut self, overrun: Overrun) {
        self.overrun.get_or_insert(overrun);
        self.containment.mark();
    }
}

/// How long a bot stays held to one worker after it trapped or overran.
pub const QUARANTINE: Duration = Duration::from_secs(30);

/// When a bot last misbehaved (trapped, overran a limit), shared by all its
/// events: while it is recent the router runs the bot one event at a time,
/// so it cannot take every worker.
#[derive(Default)]
pub struct Containment {
    /// Milliseconds after `EPOCH` of the last misbehaviour, 0 for never.
    last_ms: AtomicU64,
}

impl Containment {
    /// Records a misbehaviour now.
    pub fn mark(&self) {
        self.last_ms
            .store(since_start_ms().max(1), Ordering::Relaxed);
    }

    /// Whether the bot misbehaved within the last [`QUARANTINE`].
    pub fn is_active(&self) -> bool {
        let last = self.last_ms.load(Ordering::Relaxed);
        last != 0 && since_start_ms().saturating_sub(last) < QUARANTINE.as_millis() as u64
    }
}

fn since_start_ms() -> u64 {
    static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    START.get_or_init(Instant::now).elapsed().as_millis() as u64 + 1
}

/// CPU time the calling thread has used.
pub fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid, writable timespec and CLOCK_THREAD_CPUTIME_ID
    // is supported on every Linux the host runs on; on failure `now` stays 0.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeping_costs_no_cpu_time_and_spinning_does() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(50));
        assert!(thread_cpu_time() - start < Duration::from_millis(20));
        // Computing does count (however loaded the machine, it gets there).
        let spin = Instant::now();
        while thread_cpu_time() - start < Duration::from_millis(15) {
            assert!(
                spin.elapsed() < Duration::from_secs(30),
                "the CPU clock never advanced"
            );
        }
    }

    #[test]
    fn an_overrun_interrupts_and_starts_the_quarantine_at_once() {
        let containment = Arc::new(Containment::default());
        let mut clock = EventClock::start(
            Duration::from_secs(60),
            Duration::from_millis(1),
            containment.clone(),
        );
        std::thread::sleep(Duration::from_millis(5));
        assert!(!containment.is_active());
        assert!(matches!(clock.tick(), UpdateDeadline::Interrupt));
        assert_eq!(clock.overrun, Some(Overrun::Wall(Duration::from_millis(1))));
        assert!(containment.is_active());
    }
}
