//! Approving or rejecting a version held because it asks for more than its
//! grant.

use anyhow::{Context, Result};

use super::{Bots, PendingUpgrade};
use crate::runtime::Manifest;

impl Bots {
    /// Approves the held `version` of `bot`: its asks join its grant and it
    /// replaces the running version.
    pub fn approve(&self, bot: &str, version: &str) -> Result<()> {
        let _one_at_a_time = self.changing.lock();
        let held = self.held(bot, version)?;
        let manifest = Manifest::read(&held.path)?;
        anyhow::ensure!(
            manifest.id == bot,
            "{} now says `id = \"{}\"`; run `aviary reload` and review it again",
            held.path.display(),
            manifest.id
        );
        let bytes = std::fs::read(held.path.with_extension("wasm"))?;
        let inspected = self.runtime.inspect(&bytes)?;
        anyhow::ensure!(inspected.sha256 == held.sha256, "the component of `{bot}` {version} changed since it was held; run `aviary reload` and review it again");
        self.store
            .record_approval(bot, version, &held.sha256, &manifest.asks)?;
        self.audit(
            "approve",
            bot,
            None,
            Some(version),
            &format!("sha256 {}", held.sha256),
        );
        let grant = self.config.grant(bot)?.widened_by(&manifest.asks);
        self.install(manifest, inspected, &bytes, grant, &held.path, "load")
    }

    /// Drops the held `version` of `bot`; the running version stays.
    pub fn reject(&self, bot: &str, version: &str) -> Result<()> {
        let _one_at_a_time = self.changing.lock();
        let held = self.held(bot, version)?;
        *self.known(bot)?.pending.lock() = None;
        self.audit(
            "reject",
            bot,
            None,
            Some(version),
            &format!("sha256 {}", held.sha256),
        );
        Ok(())
    }

    fn held(&self, bot: &str, version: &str) -> Result<PendingUpgrade> {
        let slot = self.slot(bot);
        let pending = slot.as_ref().and_then(|slot| slot.pending.lock().clone());
        let held = pending.with_context(|| {
            format!("bot `{bot}` has no version waiting for approval (see `aviary policy audit`)")
        })?;
        anyhow::ensure!(
            held.version == version,
            "bot `{bot}` has version {} waiting, not {version}",
            held.version
        );
        Ok(held.clone())
    }
}
