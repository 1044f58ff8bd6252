//! Runs one event for the router: fresh instance, commit of its effects,
//! re-runs on kv conflicts, retries with growing backoff on failure (the
//! router waits, no worker sleeps), then a dead letter. A send refused by a
//! send-rate bucket that will refill delays the event instead of failing it.
//! Policy denials and contained failures go to the audit log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::bots::Bots;
use crate::policy::Denial;
use crate::router::{Dispatch, Next};
use crate::runtime::{HandleError, LoadedBot};
use crate::store::{AuditEntry, CommitError, PendingEvent, Store};

/// Re-runs allowed when kv reads keep changing under an event.
const MAX_CONFLICTS: u32 = 1000;

/// Wait before the first retry of a failed event; each further one doubles.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two runs of a failed event.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long a bot stays held to one worker after a trap or timeout.
const QUARANTINE: Duration = Duration::from_secs(30);

/// The production [`Dispatch`].
pub struct Dispatcher {
    pub bots: Arc<Bots>,
    pub store: Store,
    /// When each bot last trapped or ran out of time.
    contained: Mutex<HashMap<String, Instant>>,
}

impl Dispatch for Dispatcher {
    /// A bot that trapped or timed out recently runs one event at a time,
    /// so a looping or memory-hungry bot cannot take every worker.
    fn concurrency_limit(&self, bot: &str) -> Option<usize> {
        let contained = self.contained.lock();
        contained
            .get(bot)
            .filter(|at| at.elapsed() < QUARANTINE)
            .map(|_| 1)
    }

    /// One run of `event`: committed, or to run again later (a send-rate
    /// wait, or a failure with growing backoff), or dead-lettered once it
    /// failed more than `max_retries` times after the first.
    fn dispatch(&self, event: &PendingEvent, failures: u32) -> Next {
        let Some(bot) = self.bots.get(&event.bot) else {
            self.give_up(event, "the bot is not loaded", failures);
            return Next::Done;
        };
        let mut conflicts = 0;
        loop {
            let outcome = bot.handle(self.store.tree(), event);
            if let Some(wait) = outcome.send_wait {
                // A quota that will refill: discard this run, run it again
                // when the bucket holds enough. Not a failure.
                tracing::debug!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, "send rate reached; the event runs again in {wait:?}");
                return Next::RunAgain {
                    after: wait,
                    failed: false,
                };
            }
            self.audit_denials(event, &outcome.denials);
            let error = match outcome.result {
                Ok(effects) => match self.store.commit(&event.bot, event.seq, &effects) {
                    Ok(_) => {
                        bot.policy.kv.apply(effects.kv_delta);
                        return Next::Done;
                    }
                    Err(CommitError::Conflict) if conflicts < MAX_CONFLICTS => {
                        conflicts += 1;
                        continue;
                    }
                    Err(error) => error.to_string(),
                },
                Err(error) => {
                    self.audit_containment(&bot, event, &error);
                    error.to_string()
                }
            };
            let failures = failures + 1;
            tracing::warn!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, attempt = failures, "event failed: {error}");
            if failures > bot.limits.max_retries {
                self.give_up(event, &error, failures);
                return Next::Done;
            }
            return Next::RunAgain {
                after: backoff(failures),
                failed: true,
            };
        }
    }
}

/// The wait before the run after the `failures`-th failure: 100 ms,
/// doubling, at most 30 s.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(20);
    (RETRY_FIRST * 2u32.pow(doublings)).min(RETRY_MAX)
}

impl Dispatcher {
    pub fn new(bots: Arc<Bots>, store: Store) -> Dispatcher {
        Dispatcher {
            bots,
            store,
            contained: Mutex::default(),
        }
    }

    fn give_up(&self, event: &PendingEvent, error: &str, attempts: u32) {
        tracing::error!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, attempts, "event dead-lettered: {error}");
        if let Err(store_error) = self.store.dead_letter(event, error, attempts) {
            tracing::error!("cannot store the dead letter: {store_error:#}");
        }
    }

    /// One audit record per distinct refusal of the event.
    fn audit_denials(&self, event: &PendingEvent, denials: &[Denial]) {
        let mut seen: Vec<(&str, &str)> = Vec::new();
        for denial in denials {
            if seen.contains(&(denial.capability, denial.target.as_str())) {
                continue;
            }
            seen.push((denial.capability, &denial.target));
            let repeats = denials
                .iter()
                .filter(|d| d.capability == denial.capability && d.target == denial.target)
                .count();
            self.append(AuditEntry {
                action: "deny".into(),
                bot: event.bot.clone(),
                capability: Some(denial.capability.into()),
                target: Some(denial.target.clone()),
                detail: if repeats > 1 {
                    format!("{} ({repeats} times in one event)", denial.reason)
                } else {
                    denial.reason.clone()
                },
            });
        }
    }

    /// Traps and timeouts are the sandbox containing the bot: audit them.
    fn audit_containment(&self, bot: &LoadedBot, event: &PendingEvent, error: &HandleError) {
        let capability = match error {
            HandleError::Bot(_) => return,
            HandleError::Timeout(_) => "cpu_time",
            HandleError::Trap(message) if message.contains("growing memory") => "memory",
            HandleError::Trap(message)
                if message.contains("out of bounds")
                    || message.contains("call stack exhausted") =>
            {
                "stack"
            }
            HandleError::Trap(_) => "trap",
        };
        self.contained
            .lock()
            .insert(bot.manifest.id.clone(), Instant::now());
        self.append(AuditEntry {
            action: "contain".into(),
            bot: bot.manifest.id.clone(),
            capability: Some(capability.into()),
            target: Some(event.conversation.clone()),
            detail: error.to_string(),
        });
    }

    fn append(&self, entry: AuditEntry) {
        if let Err(error) = self.store.audit(entry) {
            tracing::error!("cannot append to the audit log: {error:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_up_to_a_cap() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(3), Duration::from_millis(400));
        assert_eq!(backoff(12), RETRY_MAX);
        assert_eq!(backoff(u32::MAX), RETRY_MAX);
    }
}
