//! `aviary:bot/schedule`: timers that survive restarts. Changes are
//! buffered and commit with the event; the timer count each change reads
//! makes concurrent events conflict rather than pass the `timers` grant
//! together. The scheduler ([`crate::schedule`]) fires them.

use std::sync::Arc;

use super::buffer::Buffer;
use super::Ctx;
use crate::policy::BotPolicy;
use crate::runtime::bindings::aviary::bot::schedule::{Host, TimerInfo};
use crate::runtime::bindings::BotError;
use crate::store::timers::{decode_count, encode_count};
use crate::store::{keys, now_ms, TimerRecord};

/// Largest timer payload, in bytes.
pub const MAX_PAYLOAD_BYTES: usize = 4096;
/// Shortest period of a repeating timer.
pub const MIN_EVERY_MS: u64 = 1000;
/// Furthest a timer may be set ahead: a year.
pub const MAX_AFTER_MS: u64 = 366 * 24 * 3600 * 1000;

/// Per-event schedule state.
pub struct Schedule {
    store: crate::store::Store,
    bot: Arc<str>,
    policy: Arc<BotPolicy>,
    /// The conversation of the event, which the bot has seen by definition.
    conversation: Option<String>,
    pub buffer: Buffer,
    /// Ids of the timers this event set or cancelled.
    pub changed: Vec<String>,
}

impl Schedule {
    pub fn new(
        store: crate::store::Store,
        bot: Arc<str>,
        policy: Arc<BotPolicy>,
        conversation: Option<String>,
    ) -> Schedule {
        Schedule {
            store,
            bot,
            policy,
            conversation,
            buffer: Buffer::default(),
            changed: Vec::new(),
        }
    }
}

impl Ctx<'_, Schedule> {
    fn deny(&mut self, target: &str, error: BotError) -> BotError {
        let reason = crate::runtime::bindings::reason(&error).to_owned();
        self.budget.refusals.deny("timers", target, || reason);
        error
    }

    fn timer(&mut self, id: &str) -> Result<Option<TimerRecord>, BotError> {
        let state = self.cap.store.state().clone();
        self.cap
            .buffer
            .read(&state, &keys::timer(&self.cap.bot, id))?
            .map(|v| TimerRecord::decode(&v).map_err(|e| BotError::Unavailable(e.to_string())))
            .transpose()
    }

    /// Adds `by` to the bot's timer count; refuses to pass the grant.
    fn count(&mut self, by: i64) -> Result<(), BotError> {
        let state = self.cap.store.state().clone();
        let key = keys::timer_count(&self.cap.bot);
        let count = decode_count(self.cap.buffer.read(&state, &key)?.as_deref());
        let cap = u64::from(self.cap.policy.grant.timers.unwrap_or(0));
        let next = count.saturating_add_signed(by);
        if by > 0 && next > cap {
            return Err(BotError::QuotaExceeded(format!(
                "the bot holds {count} timers, as many as its `timers` grant allows ({cap}); cancel one first"
            )));
        }
        self.cap.buffer.write(key, Some(encode_count(next)));
        Ok(())
    }

    fn check_conversation(&mut self, conversation: &str) -> Result<(), BotError> {
        if !crate::ids::is_valid_id(conversation) {
            return Err(BotError::Invalid(
                "not a valid conversation id (1 to 128 of A-Z a-z 0-9 . _ : -)".into(),
            ));
        }
        if self.cap.conversation.as_deref() == Some(conversation) {
            return Ok(());
        }
        match self.cap.store.conversation_ref(&self.cap.bot, conversation) {
            Ok(Some(_)) => Ok(()),
            Ok(None) => Err(BotError::Denied(format!(
                "conversation `{conversation}` is not one this bot has seen"
            ))),
            Err(e) => Err(BotError::Unavailable(format!("store error: {e}"))),
        }
    }
}

impl Host for Ctx<'_, Schedule> {
    fn set(
        &mut self,
        id: String,
        after_ms: u64,
        every_ms: Option<u64>,
        conversation: Option<String>,
        payload: String,
    ) -> Result<(), BotError> {
        self.budget.check()?;
        if !crate::ids::is_valid_id(&id) {
            return Err(BotError::Invalid(
                "timer ids are 1 to 128 of A-Z a-z 0-9 . _ : -".into(),
            ));
        }
        if payload.len() > MAX_PAYLOAD_BYTES {
            return Err(BotError::Invalid(format!(
                "a timer's payload is at most {MAX_PAYLOAD_BYTES} bytes"
            )));
        }
        if every_ms.is_some_and(|every| every < MIN_EVERY_MS) {
            return Err(BotError::Invalid(format!(
                "a repeating timer fires at most every {MIN_EVERY_MS} ms"
            )));
        }
        if after_ms > MAX_AFTER_MS {
            return Err(BotError::Invalid(
                "a timer is set at most a year ahead".into(),
            ));
        }
        if let Some(conversation) = &conversation {
            if let Err(error) = self.check_conversation(conversation) {
                return Err(self.deny(conversation, error));
            }
        }
        if self.timer(&id)?.is_none() {
            if let Err(error) = self.count(1) {
                return Err(self.deny(&id, error));
            }
        }
        let record = TimerRecord {
            id: id.clone(),
            due_at: now_ms().saturating_add(after_ms),
            every_ms,
            conversation,
            payload,
        };
        self.budget.resize(0, record.payload.len() + 64)?;
        self.cap
            .buffer
            .write(keys::timer(&self.cap.bot, &id), Some(record.encode()));
        self.cap.changed.push(id);
        Ok(())
    }

    fn cancel(&mut self, id: String) -> Result<bool, BotError> {
        self.budget.check()?;
        if !crate::ids::is_valid_id(&id) || self.timer(&id)?.is_none() {
            return Ok(false);
        }
        self.count(-1)?;
        self.cap.buffer.write(keys::timer(&self.cap.bot, &id), None);
        self.cap.changed.push(id);
        Ok(true)
    }

    fn list(&mut self) -> Result<Vec<TimerInfo>, BotError> {
        self.budget.check()?;
        let prefix = keys::timers_prefix(&self.cap.bot);
        let mut timers = std::collections::BTreeMap::new();
        for item in self.cap.store.state().scan_prefix(&prefix) {
            let (key, value) = item.map_err(|e| BotError::Unavailable(e.to_string()))?;
            timers.insert(key, Some(value));
        }
        for (key, value) in self.cap.buffer.writes.range(prefix.clone()..) {
            if !key.starts_with(&prefix) {
                break;
            }
            timers.insert(key.clone(), value.clone());
        }
        timers
            .into_values()
            .flatten()
            .map(|value| {
                let t = TimerRecord::decode(&value)
                    .map_err(|e| BotError::Unavailable(e.to_string()))?;
                Ok(TimerInfo {
                    id: t.id,
                    due_at: t.due_at,
                    every_ms: t.every_ms,
                    conversation: t.conversation,
                    payload: t.payload,
                })
            })
            .collect()
    }
}
