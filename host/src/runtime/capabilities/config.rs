//! `aviary:bot/config`: read-only access to the bot's own settings.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::runtime::bindings::aviary::bot::config::Host;

/// Per-event config state: a shared view of the bot's settings.
pub struct Config {
    pub settings: Arc<BTreeMap<String, String>>,
}

impl Host for Config {
    fn get(&mut self, key: String) -> Option<String> {
        self.settings.get(&key).cloned()
    }
}
