//! The admin's switches on an installed bot: disable (its events wait,
//! nothing is lost), enable, and remove (its files leave the plugins
//! directory; its kv stays unless purged).

use anyhow::{Context, Result};
use serde::Serialize;

use super::Bots;

/// What a removal did.
#[derive(Debug, Clone, Serialize)]
pub struct Removed {
    pub bot: String,
    /// kv keys deleted (`--purge`); 0 when kv was kept.
    pub purged_keys: usize,
}

impl Bots {
    /// Stops running `bot`'s events until [`Bots::enable`]: they stay
    /// queued in order (within the queue bounds) and survive a restart.
    pub fn disable(&self, bot: &str) -> Result<()> {
        self.switch(bot, true)
    }

    /// Runs `bot`'s events again, the waiting ones first.
    pub fn enable(&self, bot: &str) -> Result<()> {
        self.switch(bot, false)
    }

    fn switch(&self, bot: &str, disabled: bool) -> Result<()> {
        let _one_at_a_time = self.changing.lock();
        let slot = self.known(bot)?;
        let (action, word) = if disabled {
            ("disable", "disabled")
        } else {
            ("enable", "enabled")
        };
        anyhow::ensure!(
            slot.is_disabled() != disabled,
            "bot `{bot}` is already {word}"
        );
        self.store.set_disabled(bot, disabled)?;
        slot.set_disabled(disabled);
        tracing::info!(bot = %bot, "{word} by the admin");
        self.audit(action, bot, None, None, &format!("{word} by the admin"));
        Ok(())
    }

    /// Unloads `bot` and deletes its files from the plugins directory; its
    /// kv is kept unless `purge`. Events still queued for it are
    /// dead-lettered. Its kept builds stay in the data directory.
    pub fn remove(&self, bot: &str, purge: bool) -> Result<Removed> {
        let _one_at_a_time = self.changing.lock();
        let slot = self.known(bot)?;
        for ext in ["toml", "wasm"] {
            let path = self.config.plugins_dir.join(format!("{bot}.{ext}"));
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                Err(error) => {
                    return Err(error).with_context(|| format!("cannot delete {}", path.display()))
                }
            }
        }
        slot.unload();
        self.slots.write().remove(bot);
        let purged_keys = if purge { self.store.purge_kv(bot)? } else { 0 };
        if self.store.is_disabled(bot)? {
            self.store.set_disabled(bot, false)?;
        }
        let detail = if purge {
            format!("removed by the admin; its kv purged ({purged_keys} keys)")
        } else {
            "removed by the admin; its kv kept".to_owned()
        };
        tracing::info!(bot = %bot, "{detail}");
        self.audit("remove", bot, None, None, &detail);
        Ok(Removed {
            bot: bot.into(),
            purged_keys,
        })
    }
}
