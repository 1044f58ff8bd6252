//! Every build that ever served, kept content-addressed in
//! `<data_dir>/versions/<bot>/<sha256>.wasm` (with its manifest as
//! `<sha256>.toml`), and rollback to one of them: no file is needed from
//! the admin, and a build this process loaded before swaps back in without
//! compiling or calling `init` again.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use serde::Serialize;

use super::Bots;
use crate::files::write_atomically;
use crate::runtime::{LoadedBot, Manifest};
use crate::store::VersionEntry;

/// Shortest sha256 prefix `--to` accepts.
const MIN_PREFIX: usize = 4;

/// The kept builds of the bots.
pub(super) struct Versions {
    dir: PathBuf,
}

/// A build as `aviary plugin versions` lists it.
#[derive(Debug, Clone, Serialize)]
pub struct KeptVersion {
    #[serde(flatten)]
    pub entry: VersionEntry,
    /// Whether it is the build serving now (its newest entry).
    pub current: bool,
}

/// What a rollback did.
#[derive(Debug, Clone, Serialize)]
pub struct RolledBack {
    pub bot: String,
    pub from: String,
    pub to: String,
    pub sha256: String,
    /// From the build being ready (found in memory or loaded, its files
    /// back in the plugins directory) to the swap, `migrate` included.
    pub took_us: u64,
    /// Whether the build was still loaded in memory (no compile, no `init`).
    pub in_memory: bool,
}

impl Versions {
    /// Keeps `bot`'s component `bytes` and manifest, once per sha256.
    pub(super) fn keep(&self, bot: &LoadedBot, bytes: &[u8]) -> Result<()> {
        let dir = self.dir.join(&bot.manifest.id);
        let wasm = dir.join(format!("{}.wasm", bot.sha256));
        if wasm.exists() {
            return Ok(());
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let manifest = toml::to_string(&bot.manifest)?;
        write_atomically(&wasm.with_extension("toml"), manifest.as_bytes())?;
        write_atomically(&wasm, bytes)
    }

    /// The kept component and manifest of build `sha256` of `bot`.
    fn read(&self, bot: &str, sha256: &str) -> Result<(Manifest, Vec<u8>)> {
        let wasm = self.dir.join(bot).join(format!("{sha256}.wasm"));
        let manifest = Manifest::read(&wasm.with_extension("toml"))?;
        let bytes = std::fs::read(&wasm)
            .with_context(|| format!("cannot read the kept build {}", wasm.display()))?;
        Ok((manifest, bytes))
    }
}

impl Bots {
    pub(super) fn versions(&self) -> Versions {
        Versions {
            dir: self.config.data_dir.join("versions"),
        }
    }

    /// The builds `bot` served, oldest first, one entry per time it started.
    pub fn kept_versions(&self, bot: &str) -> Result<Vec<KeptVersion>> {
        let slot = self.known(bot)?;
        let current = slot.current().map(|b| b.sha256.clone());
        let mut kept: Vec<KeptVersion> = self
            .store
            .versions(bot)?
            .into_iter()
            .map(|entry| KeptVersion {
                current: false,
                entry,
            })
            .collect();
        // The newest entry of the build serving is the current one.
        if let Some(last) = kept
            .iter_mut()
            .rev()
            .find(|k| current.as_deref() == Some(k.entry.sha256.as_str()))
        {
            last.current = true;
        }
        Ok(kept)
    }

    /// Puts back the build of `bot` that served before the current one, or
    /// the newest that matches `to` (a version or a sha256 prefix). The
    /// plugins directory gets its files back, so a rescan keeps it.
    pub fn rollback(&self, bot: &str, to: Option<&str>) -> Result<RolledBack> {
        let _one_at_a_time = self.changing.lock();
        let slot = self.known(bot)?;
        let running = slot
            .current()
            .with_context(|| format!("bot `{bot}` is not running; nothing to roll back"))?;
        let target = self.target(bot, &running, to)?;
        let (loaded, in_memory) = match slot.kept(&target.sha256) {
            Some(loaded) => (loaded, true),
            None => (self.reload_kept(bot, &target.sha256)?, false),
        };
        let detail = format!(
            "from {} ({}) to {} ({})",
            running.manifest.version,
            &running.sha256[..12],
            loaded.manifest.version,
            &loaded.sha256[..12]
        );
        // The files first: writing them is slow, and nothing should slow
        // the events right after the swap. If the swap fails, the running
        // build's files go back.
        self.restore_files(&loaded)?;
        let activating = Instant::now();
        let swapped = match self.activate(&slot, loaded.clone(), "rollback", &detail) {
            Ok(swapped) => swapped,
            Err(error) => {
                if let Err(restore) = self.restore_files(&running) {
                    tracing::error!(bot = %bot, "cannot put back the files of the running build: {restore:#}");
                }
                return Err(error);
            }
        };
        let took_us = (swapped - activating).as_micros() as u64;
        Ok(RolledBack {
            bot: bot.into(),
            from: running.manifest.version.clone(),
            to: loaded.manifest.version.clone(),
            sha256: loaded.sha256.clone(),
            took_us,
            in_memory,
        })
    }

    /// The version entry a rollback goes to.
    fn target(&self, bot: &str, running: &LoadedBot, to: Option<&str>) -> Result<VersionEntry> {
        let served = self.store.versions(bot)?;
        let mut older = served.iter().rev().filter(|v| v.sha256 != running.sha256);
        let found = match to {
            None => older.next().cloned(),
            Some(to)
                if to == running.manifest.version
                    || running.sha256.starts_with(to) && to.len() >= MIN_PREFIX =>
            {
                anyhow::bail!("bot `{bot}` already runs {to} ({})", &running.sha256[..12])
            }
            Some(to) => older
                .find(|v| v.version == to || (to.len() >= MIN_PREFIX && v.sha256.starts_with(to)))
                .cloned(),
        };
        found.with_context(|| match to {
            None => format!("bot `{bot}` has no earlier build to roll back to (see `aviary plugin versions {bot}`)"),
            Some(to) => format!("bot `{bot}` never served a build matching `{to}` (a version, or at least {MIN_PREFIX} hex digits of a sha256; see `aviary plugin versions {bot}`)"),
        })
    }

    /// Loads a kept build again under today's grant (and its approval).
    fn reload_kept(&self, bot: &str, sha256: &str) -> Result<Arc<LoadedBot>> {
        let (manifest, bytes) = self.versions().read(bot, sha256)?;
        let inspected = self.runtime.inspect(&bytes)?;
        let grant = self.approved_grant(bot, &manifest.version, sha256)?;
        let shortfalls = grant.shortfalls(&manifest.asks);
        anyhow::ensure!(
            shortfalls.is_empty(),
            "bot `{bot}` {} asks for more than its grant now allows: {}",
            manifest.version,
            shortfalls
                .iter()
                .map(|s| s.capability.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
        let slot = self.known(bot)?;
        self.build(&slot, manifest, inspected, grant)
    }

    /// Writes `bot`'s kept files over its files in the plugins directory.
    fn restore_files(&self, bot: &LoadedBot) -> Result<()> {
        let (manifest, bytes) = self.versions().read(&bot.manifest.id, &bot.sha256)?;
        let plugins = &self.config.plugins_dir;
        let wasm = plugins.join(format!("{}.wasm", manifest.id));
        write_atomically(&wasm, &bytes)?;
        write_atomically(
            &wasm.with_extension("toml"),
            toml::to_string(&manifest)?.as_bytes(),
        )
    }
}
