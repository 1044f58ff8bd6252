//! Timers bots set (`aviary:bot/schedule`): one record per timer, written
//! with the effects of the event that set it, and a count per bot that
//! every change reads, so that concurrent events cannot together pass the
//! `timers` grant. Firing a timer queues its event and moves (or deletes)
//! the timer in one write.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use super::state::Reads;
use super::{keys, now_ms, EventRecord, Op, PendingEvent, Store};

/// The lane of timer events that belong to no conversation (`#` is never
/// in a conversation id).
pub const TIMER_LANE: &str = "#timers";

/// One timer of a bot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerRecord {
    pub id: String,
    /// When it fires next, in milliseconds since the Unix epoch.
    pub due_at: u64,
    /// Set for a repeating timer.
    pub every_ms: Option<u64>,
    pub conversation: Option<String>,
    pub payload: String,
}

impl TimerRecord {
    /// The stored form.
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("timer records serialise")
    }

    /// Reads the stored form.
    pub fn decode(bytes: &[u8]) -> Result<TimerRecord> {
        serde_json::from_slice(bytes).context("corrupt timer record")
    }
}

/// The stored form of a timer count.
pub fn encode_count(count: u64) -> Vec<u8> {
    count.to_string().into_bytes()
}

/// Reads a stored timer count (absent: 0).
pub fn decode_count(value: Option<&[u8]>) -> u64 {
    value
        .and_then(|v| std::str::from_utf8(v).ok()?.parse().ok())
        .unwrap_or(0)
}

impl Store {
    /// Every bot's timers, as `(bot, timer)`: what the scheduler loads at start.
    pub fn all_timers(&self) -> Result<Vec<(String, TimerRecord)>> {
        self.inner
            .state
            .scan_prefix(keys::TIMERS)
            .map(|item| {
                let (key, value) = item?;
                let key = String::from_utf8_lossy(&key[keys::TIMERS.len()..]).into_owned();
                let bot = key.split('/').next().unwrap_or_default().to_owned();
                Ok((bot, TimerRecord::decode(&value)?))
            })
            .collect()
    }

    /// Timer `id` of `bot`, if set.
    pub fn timer(&self, bot: &str, id: &str) -> Result<Option<TimerRecord>> {
        self.inner
            .state
            .get(&keys::timer(bot, id))?
            .map(|value| TimerRecord::decode(&value))
            .transpose()
    }

    /// Fires timer `id` of `bot` if it is still due at `due_at` (not reset or
    /// cancelled since): queues its event and, in the same write, moves a
    /// repeating timer to its next time (skipping the times missed while
    /// the host was down) or deletes a one-shot one. Returns the event.
    pub fn fire_timer(&self, bot: &str, id: &str, due_at: u64) -> Result<Option<PendingEvent>> {
        let key = keys::timer(bot, id);
        let count_key = keys::timer_count(bot);
        loop {
            let Some(value) = self.inner.state.get(&key)? else {
                return Ok(None);
            };
            let timer = TimerRecord::decode(&value)?;
            if timer.due_at != due_at {
                return Ok(None);
            }
            let count = self.inner.state.get(&count_key)?;
            let event = self.pending(
                bot,
                timer.conversation.as_deref().unwrap_or(TIMER_LANE),
                EventRecord::Timer {
                    id: timer.id.clone(),
                    payload: timer.payload.clone(),
                },
            )?;
            let mut ops = vec![Op::New(keys::pending(event.seq), event.encode()?)];
            match timer.every_ms {
                Some(every) => {
                    let now = now_ms();
                    let mut next = timer.due_at + every;
                    if next <= now {
                        next += (now - next) / every * every + every;
                    }
                    let moved = TimerRecord {
                        due_at: next,
                        ..timer
                    };
                    ops.push(Op::Put(key.clone(), moved.encode()));
                }
                None => {
                    let left = decode_count(count.as_deref()).saturating_sub(1);
                    ops.push(Op::Delete(key.clone()));
                    ops.push(Op::Put(count_key.clone(), encode_count(left)));
                }
            }
            let reads: Reads = [(key.clone(), Some(value)), (count_key.clone(), count)]
                .into_iter()
                .collect();
            if self.inner.state.write_checked(&reads, ops).is_some() {
                return Ok(Some(event));
            }
            // An event changed the timer meanwhile: look again.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(store: &Store, bot: &str, timer: &TimerRecord, count: u64) {
        store.inner.state.write(vec![
            Op::Put(keys::timer(bot, &timer.id), timer.encode()),
            Op::Put(keys::timer_count(bot), encode_count(count)),
        ]);
    }

    #[test]
    fn a_one_shot_timer_fires_once_and_a_repeating_one_moves_on() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let once = TimerRecord {
            id: "once".into(),
            due_at: 1_000,
            every_ms: None,
            conversation: Some("c1".into()),
            payload: "p".into(),
        };
        set(&store, "alerts", &once, 1);
        assert!(
            store.fire_timer("alerts", "once", 999).unwrap().is_none(),
            "reset since"
        );
        let event = store.fire_timer("alerts", "once", 1_000).unwrap().unwrap();
        assert_eq!(event.conversation, "c1");
        assert!(
            matches!(&event.event, EventRecord::Timer { id, payload } if id == "once" && payload == "p")
        );
        assert!(store.timer("alerts", "once").unwrap().is_none());
        assert!(
            store.fire_timer("alerts", "once", 1_000).unwrap().is_none(),
            "fired once"
        );
        let count = store.inner.state.get(&keys::timer_count("alerts")).unwrap();
        assert_eq!(decode_count(count.as_deref()), 0);

        let every = TimerRecord {
            id: "every".into(),
            due_at: 1_000,
            every_ms: Some(60_000),
            conversation: None,
            payload: String::new(),
        };
        set(&store, "alerts", &every, 1);
        let event = store.fire_timer("alerts", "every", 1_000).unwrap().unwrap();
        assert_eq!(event.conversation, TIMER_LANE);
        let moved = store.timer("alerts", "every").unwrap().unwrap();
        assert!(
            moved.due_at > now_ms(),
            "times missed are skipped: {}",
            moved.due_at
        );
        assert_eq!((moved.due_at - 1_000) % 60_000, 0, "on the timer's beat");
        assert_eq!(store.pending_events().unwrap().len(), 2);
        assert_eq!(store.all_timers().unwrap(), vec![("alerts".into(), moved)]);
    }
}
