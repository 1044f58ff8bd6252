//! Runs one event for the router: fresh instance, commit of its effects,
//! re-runs on kv conflicts, retries with growing backoff on failure (the
//! router waits, no worker sleeps), then a dead letter. A send refused by a
//! send-rate bucket that will refill delays the event instead of failing it.
//! Policy denials and contained failures go to the audit log.

use std::sync::Arc;
use std::time::Duration;

use crate::bots::{Bots, Slot};
use crate::router::{Dispatch, Next};
use crate::runtime::budget::Refusals;
use crate::runtime::{HandleError, LoadedBot, Outcome};
use crate::store::{AuditEntry, CommitError, PendingEvent, Store};

/// Re-runs allowed when kv reads keep changing under an event.
const MAX_CONFLICTS: u32 = 1000;

/// How often the event at the front of a disabled bot's lane looks again.
const DISABLED_POLL: Duration = Duration::from_millis(100);

/// Wait before the first retry of a failed event; each further one doubles.
const RETRY_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between two runs of a failed event.
const RETRY_MAX: Duration = Duration::from_secs(30);

/// The production [`Dispatch`].
pub struct Dispatcher {
    pub bots: Arc<Bots>,
    pub store: Store,
    /// Told of the timers and outbox jobs each commit changed.
    pub engines: Option<Engines>,
}

/// What runs the effects that outlive an event: the timers and the outbox.
#[derive(Clone)]
pub struct Engines {
    pub scheduler: crate::schedule::Scheduler,
    pub outbox: crate::outbox::Outbox,
}

impl Dispatch for Dispatcher {
    /// A bot that trapped or overran a limit recently (see
    /// [`crate::runtime::clock::Containment`]) runs one event at a time,
    /// so a looping, sleeping or memory-hungry bot cannot take every worker.
    fn concurrency_limit(&self, bot: &str) -> Option<usize> {
        self.bots
            .get(bot)
            .filter(|bot| bot.containment.is_active())
            .map(|_| 1)
    }

    /// One run of `event`: committed, or to run again later (a send-rate
    /// wait, or a failure with growing backoff), or dead-lettered once it
    /// failed more than `max_retries` times after the first.
    fn dispatch(&self, event: &PendingEvent, failures: u32) -> Next {
        let Some((bot, slot)) = self
            .bots
            .slot(&event.bot)
            .and_then(|slot| Some((slot.current()?, slot)))
        else {
            self.give_up(None, event, "the bot is not loaded", failures);
            return Next::Done;
        };
        if slot.is_disabled() {
            // Waits, first in its lane, until the admin enables the bot.
            return Next::RunAgain {
                after: DISABLED_POLL,
                failed: false,
            };
        }
        slot.event_starts(&bot, event.seq);
        let mut conflicts = 0;
        loop {
            let outcome = bot.handle(&self.store, event);
            if let Some(wait) = outcome.send_wait {
                // A quota that will refill: discard this run, run it again
                // when the bucket holds enough. Not a failure.
                tracing::debug!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, "send rate reached; the event runs again in {wait:?}");
                return Next::RunAgain {
                    after: wait,
                    failed: false,
                };
            }
            slot.stats.record_run(
                outcome.elapsed,
                outcome.memory_bytes,
                &outcome.refusals,
                outcome.result.is_ok(),
            );
            slot.stats.record_reads(&outcome.audit);
            let error = match self.settle(&bot, event, outcome) {
                Settled::Committed => return Next::Done,
                Settled::Conflict if conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    continue;
                }
                Settled::Conflict => CommitError::Conflict.to_string(),
                Settled::Failed(error) => error,
            };
            let failures = failures + 1;
            tracing::warn!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, attempt = failures, "event failed: {error}");
            if failures > bot.limits.max_retries {
                self.give_up(Some(&slot), event, &error, failures);
                return Next::Done;
            }
            return Next::RunAgain {
                after: backoff(failures),
                failed: true,
            };
        }
    }
}

/// What became of one run of an event once `handle` returned.
pub enum Settled {
    /// Its effects are committed and it left the pending queue.
    Committed,
    /// A kv key it read changed before it could commit: run it again.
    Conflict,
    /// It failed; nothing was committed.
    Failed(String),
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
            engines: None,
        }
    }

    /// The same dispatcher, telling `engines` of committed timers and jobs.
    pub fn with_engines(self, engines: Engines) -> Dispatcher {
        Dispatcher {
            engines: Some(engines),
            ..self
        }
    }

    /// Everything a worker does for one run of an event after `handle`
    /// returned: audit what was refused or contained, then commit. Its cost
    /// is bounded whatever the bot did (the benchmark's
    /// `hostile_post_event_ms` measures it).
    pub fn settle(&self, bot: &LoadedBot, event: &PendingEvent, outcome: Outcome) -> Settled {
        self.audit_refusals(event, &outcome.refusals);
        for entry in outcome.audit {
            self.append(entry);
        }
        match outcome.result {
            Ok(effects) => match self.store.commit(&event.bot, event.seq, &effects) {
                Ok(_) => {
                    bot.policy.kv.apply(effects.kv_delta);
                    if let Some(engines) = &self.engines {
                        if !effects.timers.is_empty() {
                            engines.scheduler.changed(&event.bot, &effects.timers);
                        }
                        if !effects.jobs.is_empty() {
                            engines.outbox.added(&effects.jobs);
                        }
                    }
                    Settled::Committed
                }
                Err(CommitError::Conflict) => Settled::Conflict,
                Err(error) => Settled::Failed(error.to_string()),
            },
            Err(error) => {
                self.audit_containment(bot, event, &error);
                Settled::Failed(error.to_string())
            }
        }
    }

    fn give_up(&self, slot: Option<&Slot>, event: &PendingEvent, error: &str, attempts: u32) {
        if let Some(slot) = slot {
            slot.stats.record_dead_letter();
        }
        tracing::error!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, attempts, "event dead-lettered: {error}");
        if let Err(store_error) = self.store.dead_letter(event, error, attempts) {
            tracing::error!("cannot store the dead letter: {store_error:#}");
        }
    }

    /// One audit record per itemised refusal of the event, and one that
    /// counts the rest: a bounded number of records however many there were.
    fn audit_refusals(&self, event: &PendingEvent, refusals: &Refusals) {
        for denial in refusals.itemised() {
            self.append(AuditEntry {
                action: "deny".into(),
                bot: event.bot.clone(),
                capability: Some(denial.capability.into()),
                target: Some(denial.target.clone()),
                detail: if denial.count > 1 {
                    format!("{} ({} times in one event)", denial.reason, denial.count)
                } else {
                    denial.reason.clone()
                },
            });
        }
        if refusals.unlisted > 0 {
            self.append(AuditEntry {
                action: "deny".into(),
                bot: event.bot.clone(),
                capability: None,
                target: Some(event.conversation.clone()),
                detail: format!(
                    "{} more refusals in one event, not itemised",
                    refusals.unlisted
                ),
            });
        }
    }

    /// Traps, overruns and spent budgets are the sandbox containing the
    /// bot: audit them (the quarantine already started at the overrun).
    fn audit_containment(&self, bot: &LoadedBot, event: &PendingEvent, error: &HandleError) {
        let Some(capability) = error.contained() else {
            return;
        };
        bot.containment.mark();
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
