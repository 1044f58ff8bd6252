//! The one way a version of a bot starts serving: built under its policy,
//! `init` called, `migrate` run and committed, then one pointer swap. When
//! any step fails, the version already serving keeps serving.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use super::{Bots, Slot};
use crate::policy::{BotPolicy, Capabilities};
use crate::runtime::{BotSpec, Inspected, LoadedBot, Manifest};
use crate::store::CommitError;

/// Re-runs of `migrate` allowed when events keep changing the keys it read.
const MIGRATE_CONFLICTS: u32 = 100;

impl Bots {
    /// Runs `manifest`'s bot from `source` under `grant`, replacing the
    /// version running from the same file; never one loaded from another.
    /// `bytes` are the component's, kept in the data directory for
    /// rollbacks; `how` says what started it (`load`, `approve`).
    pub(super) fn install(
        &self,
        manifest: Manifest,
        inspected: Inspected,
        bytes: &[u8],
        grant: Capabilities,
        source: &Path,
        how: &str,
    ) -> Result<()> {
        let id = manifest.id.clone();
        let slot = self.slot_or_new(&id);
        if let Some(loaded_from) = slot.source.lock().as_ref() {
            anyhow::ensure!(
                loaded_from == source,
                "bot `{id}` is already loaded from {}; {} cannot replace it",
                loaded_from.display(),
                source.display()
            );
        }
        let bot = self.build(&slot, manifest, inspected, grant)?;
        self.versions().keep(&bot, bytes)?;
        let detail = format!(
            "file {}; version {} sha256 {} imports {}",
            source.display(),
            bot.manifest.version,
            bot.sha256,
            bot.imports.join(", ")
        );
        self.activate(&slot, bot, how, &detail)?;
        *slot.source.lock() = Some(source.to_owned());
        Ok(())
    }

    /// Links `inspected` under `grant` with its configured settings and
    /// secrets and calls its `init`: a version ready to serve in `slot`.
    pub(super) fn build(
        &self,
        slot: &Slot,
        manifest: Manifest,
        inspected: Inspected,
        grant: Capabilities,
    ) -> Result<Arc<LoadedBot>> {
        let bot_config = self.config.bot(&manifest.id);
        let policy = BotPolicy::new(&manifest.id, grant, &bot_config.secrets, self.store.state())?;
        let spec = BotSpec {
            manifest,
            policy,
            settings: bot_config.settings,
            max_retries: bot_config.max_retries,
            logs: slot.logs.clone(),
        };
        Ok(Arc::new(self.runtime.load(inspected, spec, &self.store)?))
    }

    /// Makes `bot` serve in `slot`: runs its `migrate` from the build that
    /// served before (now, or before the last stop) when that was another
    /// build, commits what it wrote, swaps, and records the version.
    /// Returns when the swap happened.
    pub(super) fn activate(
        &self,
        slot: &Slot,
        bot: Arc<LoadedBot>,
        how: &str,
        detail: &str,
    ) -> Result<Instant> {
        let id = &bot.manifest.id;
        // The build that served before: now, or before the last stop.
        let before = match slot.current() {
            Some(running) => Some((running.manifest.version.clone(), running.sha256.clone())),
            None => self
                .store
                .versions(id)?
                .pop()
                .map(|entry| (entry.version, entry.sha256)),
        };
        let same_build = before.as_ref().is_some_and(|(_, sha)| *sha == bot.sha256);
        let mut migrated = String::new();
        if let Some((from, sha256)) = before.filter(|(_, sha)| *sha != bot.sha256) {
            if bot.has_migrate() {
                self.migrate(&bot, &from)?;
                migrated = format!("; migrated from {from} ({})", &sha256[..12]);
            }
        }
        slot.swap(bot.clone(), self.store.state().generate_id());
        let swapped = Instant::now();

        *slot.pending.lock() = None;
        tracing::info!(bot = %id, version = %bot.manifest.version, sha256 = %bot.sha256, "{how}: serving{migrated}");
        // A restart serving the build that served last is no new version.
        if !same_build {
            self.store
                .record_version(id, &bot.manifest.version, &bot.sha256, how)
                .context("cannot record the version")?;
        }
        self.audit(
            how,
            id,
            None,
            Some(&bot.manifest.version),
            &format!("{detail}{migrated}"),
        );
        Ok(swapped)
    }

    /// Runs and commits `bot`'s `migrate(from)`, again while events change
    /// what it read.
    fn migrate(&self, bot: &LoadedBot, from: &str) -> Result<()> {
        for _ in 0..MIGRATE_CONFLICTS {
            let effects = bot.run_migrate(&self.store, from)?;
            if effects.kv_reads.is_empty() && effects.kv_writes.is_empty() {
                return Ok(());
            }
            match self.store.commit_kv(&effects) {
                Ok(()) => {
                    bot.policy.kv.apply(effects.kv_delta);
                    return Ok(());
                }
                Err(CommitError::Conflict) => continue,
                Err(CommitError::Store(error)) => return Err(error),
            }
        }
        anyhow::bail!(
            "bot `{}` could not migrate: the keys it reads kept changing ({MIGRATE_CONFLICTS} tries)",
            bot.manifest.id
        )
    }
}
