//! What one event may cost the host besides wasm time and linear memory:
//! the effects it buffers, the kv reads it makes the host remember, and the
//! refusals it makes the host record. Every import charges this budget; once
//! a limit is reached every later charge fails at once and the event fails
//! when `handle` returns, whatever the bot answered. Refusals cost O(1) each
//! and only the first few distinct ones are itemised, so nothing a bot does
//! makes the work after `handle` grow with what it did.

use std::collections::HashMap;

use crate::policy::Denial;
use crate::runtime::bindings::BotError;
use crate::text::{cut, MAX_TARGET_BYTES};

/// Bytes of buffered writes, sends and remembered kv values per event.
pub const MAX_EFFECT_BYTES: usize = 16 * 1024 * 1024;
/// Distinct kv keys one event may read (each is checked again at commit).
pub const MAX_READ_ENTRIES: usize = 10_000;
/// Distinct kv keys one event may write or delete.
pub const MAX_WRITE_ENTRIES: usize = 10_000;
/// Distinct refusals itemised in the audit log per event; the rest are counted.
pub const MAX_ITEMISED_DENIALS: usize = 8;
/// Longest name (secret, setting) the host looks up for a bot.
pub const MAX_NAME_BYTES: usize = 256;

/// The host-side budget of one event.
#[derive(Default)]
pub struct EventBudget {
    effect_bytes: usize,
    read_entries: usize,
    write_entries: usize,
    exceeded: Option<String>,
    pub refusals: Refusals,
}

impl EventBudget {
    /// Fails at once when an earlier charge already exceeded the budget.
    pub fn check(&self) -> Result<(), BotError> {
        match &self.exceeded {
            Some(reason) => Err(BotError::QuotaExceeded(reason.clone())),
            None => Ok(()),
        }
    }

    /// Why the event ran out of budget, if it did.
    pub fn exceeded(&self) -> Option<&str> {
        self.exceeded.as_deref()
    }

    /// A new kv key remembered with `bytes` of key and value.
    pub fn read(&mut self, bytes: usize) -> Result<(), BotError> {
        self.count(Counter::Reads)?;
        self.resize(0, bytes)
    }

    /// A new buffered kv write or delete.
    pub fn write_entry(&mut self) -> Result<(), BotError> {
        self.count(Counter::Writes)
    }

    /// Buffered effects change from `old` to `new` bytes.
    pub fn resize(&mut self, old: usize, new: usize) -> Result<(), BotError> {
        self.check()?;
        let next = self.effect_bytes - old.min(self.effect_bytes) + new;
        if next > MAX_EFFECT_BYTES {
            return self.exceed(format!(
                "the event buffered more than {} MiB of effects and kv reads",
                MAX_EFFECT_BYTES >> 20
            ));
        }
        self.effect_bytes = next;
        Ok(())
    }

    /// Refuses a name longer than [`MAX_NAME_BYTES`] before anything looks it up.
    pub fn name<'a>(&self, what: &str, name: &'a str) -> Result<&'a str, BotError> {
        if name.len() > MAX_NAME_BYTES {
            return Err(BotError::Invalid(format!(
                "{what} names are at most {MAX_NAME_BYTES} bytes"
            )));
        }
        Ok(name)
    }

    fn count(&mut self, counter: Counter) -> Result<(), BotError> {
        self.check()?;
        let (used, max, what) = match counter {
            Counter::Reads => (&mut self.read_entries, MAX_READ_ENTRIES, "read"),
            Counter::Writes => (&mut self.write_entries, MAX_WRITE_ENTRIES, "wrote"),
        };
        if *used >= max {
            return self.exceed(format!("the event {what} more than {max} distinct kv keys"));
        }
        *used += 1;
        Ok(())
    }

    fn exceed(&mut self, reason: String) -> Result<(), BotError> {
        let reason = format!("event budget exceeded: {reason}");
        self.exceeded = Some(reason.clone());
        Err(BotError::QuotaExceeded(reason))
    }
}

enum Counter {
    Reads,
    Writes,
}

/// The refusals of one event: the first [`MAX_ITEMISED_DENIALS`] distinct
/// (capability, target) pairs with how often each happened, and a count of
/// all the others.
#[derive(Default)]
pub struct Refusals {
    itemised: Vec<Denial>,
    index: HashMap<(&'static str, String), usize>,
    /// Refusals beyond the itemised ones.
    pub unlisted: u64,
}

impl Refusals {
    /// Records one refusal; `reason` is built only for a new itemised entry.
    pub fn deny(
        &mut self,
        capability: &'static str,
        target: &str,
        reason: impl FnOnce() -> String,
    ) {
        let target = cut(target, MAX_TARGET_BYTES).into_owned();
        self.add((capability, target), 1, reason);
    }

    /// Adds every refusal of `other`.
    pub fn merge(&mut self, other: Refusals) {
        for denial in other.itemised {
            let reason = denial.reason;
            self.add((denial.capability, denial.target), denial.count, || reason);
        }
        self.unlisted += other.unlisted;
    }

    fn add(&mut self, key: (&'static str, String), count: u64, reason: impl FnOnce() -> String) {
        if let Some(&at) = self.index.get(&key) {
            self.itemised[at].count += count;
        } else if self.itemised.len() < MAX_ITEMISED_DENIALS {
            self.index.insert(key.clone(), self.itemised.len());
            self.itemised.push(Denial {
                capability: key.0,
                target: key.1,
                reason: cut(&reason(), MAX_TARGET_BYTES).into_owned(),
                count,
            });
        } else {
            self.unlisted += count;
        }
    }

    /// The itemised refusals, in the order they first happened.
    pub fn itemised(&self) -> &[Denial] {
        &self.itemised
    }

    /// Whether nothing was refused.
    pub fn is_empty(&self) -> bool {
        self.itemised.is_empty() && self.unlisted == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_refusals_keeps_a_few_items_and_counts_the_rest() {
        let mut refusals = Refusals::default();
        for n in 0..40_000 {
            refusals.deny("kv", &format!("key-{n}"), || "quota".into());
        }
        for _ in 0..1000 {
            refusals.deny("kv", "key-0", || unreachable!("reason built once"));
        }
        assert_eq!(refusals.itemised().len(), MAX_ITEMISED_DENIALS);
        assert_eq!(refusals.itemised()[0].count, 1001);
        assert_eq!(refusals.unlisted, 40_000 - MAX_ITEMISED_DENIALS as u64);
        let mut all = Refusals::default();
        all.deny("kv", "key-0", || "quota".into());
        all.merge(refusals);
        assert_eq!(all.itemised()[0].count, 1002);
        assert_eq!(all.unlisted, 40_000 - MAX_ITEMISED_DENIALS as u64);
    }

    #[test]
    fn long_targets_are_cut() {
        let mut refusals = Refusals::default();
        refusals.deny("secrets", &"s".repeat(8 << 20), || "not granted".into());
        assert!(refusals.itemised()[0].target.len() < MAX_TARGET_BYTES + 40);
    }

    #[test]
    fn once_exceeded_every_charge_fails() {
        let mut budget = EventBudget::default();
        for _ in 0..MAX_READ_ENTRIES {
            budget.read(10).unwrap();
        }
        assert!(matches!(budget.read(10), Err(BotError::QuotaExceeded(_))));
        assert!(budget.exceeded().unwrap().contains("distinct kv keys"));
        assert!(budget.resize(0, 1).is_err(), "every later charge fails");
        let mut bytes = EventBudget::default();
        assert!(bytes.resize(0, MAX_EFFECT_BYTES + 1).is_err());
    }
}
