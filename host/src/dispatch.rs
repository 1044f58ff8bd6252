//! Runs one event for the router: fresh instance, commit of its effects,
//! re-runs on kv conflicts, bounded retries on failure, then a dead letter.
//! Policy denials and contained failures go to the audit log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::bots::Bots;
use crate::policy::Denial;
use crate::router::Dispatch;
use crate::runtime::{HandleError, LoadedBot};
use crate::store::{AuditEntry, CommitError, PendingEvent, Store};

/// Re-runs allowed when kv reads keep changing under an event.
const MAX_CONFLICTS: u32 = 1000;

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

    fn dispatch(&self, event: PendingEvent) {
        let Some(bot) = self.bots.get(&event.bot) else {
            self.give_up(&event, "the bot is not loaded", 0);
            return;
        };
        let mut failures = 0;
        let mut conflicts = 0;
        loop {
            let outcome = bot.handle(self.store.tree(), &event);
            self.audit_denials(&event, &outcome.denials);
            let error = match outcome.result {
                Ok(effects) => match self.store.commit(&event.bot, event.seq, &effects) {
                    Ok(_) => {
                        bot.policy.kv.apply(effects.kv_delta);
                        return;
                    }
                    Err(CommitError::Conflict) if conflicts < MAX_CONFLICTS => {
                        conflicts += 1;
                        continue;
                    }
                    Err(error) => error.to_string(),
                },
                Err(error) => {
                    self.audit_containment(&bot, &event, &error);
                    error.to_string()
                }
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
