//! Send-rate limits: a token bucket per bot and one per conversation, each
//! refilling its per-minute allowance continuously. A send refused because
//! a bucket is empty is a delay, not a failure: [`SendLimiter::refill_wait`]
//! says when the event's sends will fit again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::SendRate;

struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(per_minute: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(per_minute),
            updated: now,
        }
    }

    fn refill(&mut self, per_minute: u32, now: Instant) {
        let gained = now.duration_since(self.updated).as_secs_f64() * f64::from(per_minute) / 60.0;
        self.tokens = (self.tokens + gained).min(f64::from(per_minute));
        self.updated = now;
    }

    /// How long until this bucket holds `needed` tokens (refilled to `now`).
    fn wait_for(&self, needed: u32, per_minute: u32) -> Duration {
        let missing = (f64::from(needed) - self.tokens).max(0.0);
        Duration::from_secs_f64(missing * 60.0 / f64::from(per_minute.max(1)))
    }
}

/// Slack added to a refill wait so the bucket is surely full enough when the
/// event runs again.
const REFILL_SLACK: Duration = Duration::from_millis(5);

/// The send limits of one bot. Shared by all its events.
pub struct SendLimiter {
    rate: Option<SendRate>,
    /// Benchmarks only: allow every send without counting.
    unchecked: bool,
    state: Mutex<(Option<Bucket>, HashMap<String, Bucket>)>,
}

impl SendLimiter {
    /// `None` means sending is not granted at all.
    pub fn new(rate: Option<SendRate>) -> SendLimiter {
        SendLimiter {
            rate,
            unchecked: false,
            state: Mutex::new((None, HashMap::new())),
        }
    }

    /// A limiter that checks nothing: the baseline for measuring what the
    /// checks cost (`cargo xtask bench`), never used to run bots.
    pub fn unchecked() -> SendLimiter {
        SendLimiter {
            unchecked: true,
            ..SendLimiter::new(None)
        }
    }

    /// Takes one send for `conversation`, or says which limit refused it.
    pub fn try_send(&self, conversation: &str) -> Result<(), String> {
        if self.unchecked {
            return Ok(());
        }
        let Some(rate) = self.rate else {
            return Err("sending is not granted".into());
        };
        let now = Instant::now();
        let mut state = self.state.lock();
        let (bot, conversations) = &mut *state;
        let bot = bot.get_or_insert_with(|| Bucket::full(rate.per_bot_per_minute, now));
        bot.refill(rate.per_bot_per_minute, now);
        if conversations.len() > 10_000 {
            conversations.retain(|_, b| now.duration_since(b.updated).as_secs() < 60);
        }
        let lane = conversations
            .entry(conversation.to_owned())
            .or_insert_with(|| Bucket::full(rate.per_conversation_per_minute, now));
        lane.refill(rate.per_conversation_per_minute, now);
        if bot.tokens < 1.0 {
            return Err(format!(
                "send rate of {} per minute for the bot reached",
                rate.per_bot_per_minute
            ));
        }
        if lane.tokens < 1.0 {
            return Err(format!(
                "send rate of {} per minute in conversation {conversation} reached",
                rate.per_conversation_per_minute
            ));
        }
        bot.tokens -= 1.0;
        lane.tokens -= 1.0;
        Ok(())
    }

    /// How long until an event can make `in_conversation` sends to
    /// `conversation` and `total` sends in all: the wait of a refused send
    /// that a refill will let through. `None` when no refill ever will
    /// (sending is not granted, or more sends than a minute's allowance).
    pub fn refill_wait(
        &self,
        conversation: &str,
        in_conversation: u32,
        total: u32,
    ) -> Option<Duration> {
        let rate = self.rate?;
        if in_conversation > rate.per_conversation_per_minute || total > rate.per_bot_per_minute {
            return None;
        }
        let now = Instant::now();
        let mut state = self.state.lock();
        let (bot, conversations) = &mut *state;
        let bot_wait = bot.as_mut().map_or(Duration::ZERO, |b| {
            b.refill(rate.per_bot_per_minute, now);
            b.wait_for(total, rate.per_bot_per_minute)
        });
        let lane_wait = conversations
            .get_mut(conversation)
            .map_or(Duration::ZERO, |b| {
                b.refill(rate.per_conversation_per_minute, now);
                b.wait_for(in_conversation, rate.per_conversation_per_minute)
            });
        Some(bot_wait.max(lane_wait) + REFILL_SLACK)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_conversation_and_per_bot() {
        let limiter = SendLimiter::new(Some(SendRate {
            per_conversation_per_minute: 3,
            per_bot_per_minute: 5,
        }));
        for _ in 0..3 {
            limiter.try_send("a").unwrap();
        }
        assert!(limiter
            .try_send("a")
            .unwrap_err()
            .contains("conversation a"));
        limiter.try_send("b").unwrap();
        limiter.try_send("c").unwrap();
        assert!(limiter.try_send("d").unwrap_err().contains("for the bot"));
        assert!(SendLimiter::new(None)
            .try_send("a")
            .unwrap_err()
            .contains("not granted"));
    }

    #[test]
    fn an_empty_bucket_says_when_it_will_hold_enough() {
        let limiter = SendLimiter::new(Some(SendRate {
            per_conversation_per_minute: 600,
            per_bot_per_minute: 6000,
        }));
        for _ in 0..600 {
            limiter.try_send("a").unwrap();
        }
        assert!(limiter.try_send("a").is_err());
        // 600 a minute: one token every 100 ms, two in 200 ms.
        let one = limiter.refill_wait("a", 1, 1).unwrap();
        assert!(one <= Duration::from_millis(110), "{one:?}");
        assert!(one >= Duration::from_millis(50), "{one:?}");
        let two = limiter.refill_wait("a", 2, 2).unwrap();
        assert!(two > one + Duration::from_millis(50), "{two:?} vs {one:?}");
        assert!(limiter.refill_wait("b", 1, 1).unwrap() <= REFILL_SLACK);
        assert_eq!(limiter.refill_wait("a", 601, 601), None, "never fits");
        assert_eq!(SendLimiter::new(None).refill_wait("a", 1, 1), None);
    }
}
