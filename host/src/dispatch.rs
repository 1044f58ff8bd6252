//! Runs one event for the router: fresh instance, commit of its effects,
//! re-runs on kv conflicts, bounded retries on failure, then a dead letter.
//! Policy denials and contained failures go to the audit log.

use std::sync::Arc;

use crate::bots::Bots;
use crate::router::Dispatch;
use crate::runtime::budget::Refusals;
use crate::runtime::{HandleError, LoadedBot, Outcome};
use crate::store::{AuditEntry, CommitError, PendingEvent, Store};

/// Re-runs allowed when kv reads keep changing under an event.
const MAX_CONFLICTS: u32 = 1000;

/// The production [`Dispatch`].
pub struct Dispatcher {
    pub bots: Arc<Bots>,
    pub store: Store,
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

    fn dispatch(&self, event: PendingEvent) {
        let Some(bot) = self.bots.get(&event.bot) else {
            self.give_up(&event, "the bot is not loaded", 0);
            return;
        };
        let mut failures = 0;
        let mut conflicts = 0;
        loop {
            let outcome = bot.handle(self.store.tree(), &event);
            let error = match self.settle(&bot, &event, outcome) {
                Settled::Committed => return,
                Settled::Conflict if conflicts < MAX_CONFLICTS => {
                    conflicts += 1;
                    continue;
                }
                Settled::Conflict => CommitError::Conflict.to_string(),
                Settled::Failed(error) => error,
            };
            failures += 1;
            tracing::warn!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, attempt = failures, "event failed: {error}");
            if failures > bot.limits.max_retries {
                self.give_up(&event, &error, failures);
                return;
            }
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

impl Dispatcher {
    pub fn new(bots: Arc<Bots>, store: Store) -> Dispatcher {
        Dispatcher { bots, store }
    }

    /// Everything a worker does for one run of an event after `handle`
    /// returned: audit what was refused or contained, then commit. Its cost
    /// is bounded whatever the bot did (the benchmark's
    /// `hostile_post_event_ms` measures it).
    pub fn settle(&self, bot: &LoadedBot, event: &PendingEvent, outcome: Outcome) -> Settled {
        self.audit_refusals(event, &outcome.refusals);
        match outcome.result {
            Ok(effects) => match self.store.commit(&event.bot, event.seq, &effects) {
                Ok(_) => {
                    bot.policy.kv.apply(effects.kv_delta);
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

    fn give_up(&self, event: &PendingEvent, error: &str, attempts: u32) {
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
