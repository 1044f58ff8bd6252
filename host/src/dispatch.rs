//! Runs one event for the router: fresh instance, commit of its effects,
//! re-runs on kv conflicts, bounded retries on failure, then a dead letter.

use std::sync::Arc;

use crate::bots::Bots;
use crate::router::Dispatch;
use crate::store::{CommitError, PendingEvent, Store};

/// Re-runs allowed when kv reads keep changing under an event.
const MAX_CONFLICTS: u32 = 1000;

/// The production [`Dispatch`].
pub struct Dispatcher {
    pub bots: Arc<Bots>,
    pub store: Store,
}

impl Dispatch for Dispatcher {
    fn dispatch(&self, event: PendingEvent) {
        let Some(bot) = self.bots.get(&event.bot) else {
            self.give_up(&event, "the bot is not loaded", 0);
            return;
        };
        let mut failures = 0;
        let mut conflicts = 0;
        loop {
            let error = match bot.handle(self.store.tree(), &event) {
                Ok(effects) => match self.store.commit(&event.bot, event.seq, &effects) {
                    Ok(_) => return,
                    Err(CommitError::Conflict) if conflicts < MAX_CONFLICTS => {
                        conflicts += 1;
                        continue;
                    }
                    Err(error) => error.to_string(),
                },
                Err(error) => error.to_string(),
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
    fn give_up(&self, event: &PendingEvent, error: &str, attempts: u32) {
        tracing::error!(bot = %event.bot, conversation = %event.conversation, seq = event.seq, attempts, "event dead-lettered: {error}");
        if let Err(store_error) = self.store.dead_letter(event, error, attempts) {
            tracing::error!("cannot store the dead letter: {store_error:#}");
        }
    }
}
