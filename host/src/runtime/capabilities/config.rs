//! `aviary:bot/config`: read-only access to the bot's own settings, and to
//! the secrets its grant names.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::policy::{BotPolicy, Denial};
use crate::runtime::bindings::aviary::bot::config::Host;
use crate::runtime::bindings::BotError;

/// Per-event config state.
pub struct Config {
    pub settings: Arc<BTreeMap<String, String>>,
    pub policy: Arc<BotPolicy>,
    pub denials: Vec<Denial>,
}

impl Host for Config {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }

    fn secret(&mut self, name: String) -> Result<String, BotError> {
        match self.policy.secrets.get(&name) {
            Some(value) => Ok(value.clone()),
            None => {
                let reason = if self.policy.grant.secrets.contains(&name) {
                    "granted but not configured"
                } else {
                    "not granted"
                };
                self.denials.push(Denial {
                    capability: "secrets",
                    target: name.clone(),
                    reason: reason.into(),
                });
                Err(BotError::Denied(format!("secret `{name}` is {reason}")))
            }
        }
    }
}
