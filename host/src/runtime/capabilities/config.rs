//! `aviary:bot/config`: read-only access to the bot's own settings, and to
//! the secrets its grant names.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::Ctx;
use crate::policy::BotPolicy;
use crate::runtime::bindings::aviary::bot::config::Host;
use crate::runtime::bindings::BotError;

/// Per-event config state.
pub struct Config {
    pub settings: Arc<BTreeMap<String, String>>,
    pub policy: Arc<BotPolicy>,
}

impl Host for Ctx<'_, Config> {
    fn get(&mut self, key: String) -> Option<String> {
        self.cap.settings.get(&key).cloned()
    }

    fn secret(&mut self, name: String) -> Result<String, BotError> {
        let name = self.budget.name("secret", &name)?;
        if let Some(value) = self.cap.policy.secrets.get(name) {
            return Ok(value.clone());
        }
        let reason = if self.cap.policy.grant.secrets.iter().any(|s| s == name) {
            "granted but not configured"
        } else {
            "not granted"
        };
        self.budget.refusals.deny("secrets", name, || reason.into());
        Err(BotError::Denied(format!("secret `{name}` is {reason}")))
    }
}
