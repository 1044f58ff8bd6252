//! The bots this host runs: loaded from the plugins directory at start-up,
//! each with its status, so one broken bot never stops the others.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use parking_lot::RwLock;
use serde::Serialize;

use crate::config::Config;
use crate::runtime::{Limits, LoadedBot, Manifest, Runtime};

/// What `GET /api/v1/bots` shows for one bot.
#[derive(Debug, Clone, Serialize)]
pub struct BotInfo {
    pub id: String,
    pub version: String,
    pub description: String,
    /// `running`, or `failed` with `error` saying why.
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// The registry of bots.
#[derive(Default)]
pub struct Bots {
    running: RwLock<BTreeMap<String, Arc<LoadedBot>>>,
    failed: RwLock<BTreeMap<String, BotInfo>>,
}

impl Bots {
    /// Loads every `<id>.toml` + `<id>.wasm` pair in the plugins directory.
    pub fn load_dir(&self, runtime: &Runtime, config: &Config, tree: &sled::Tree) -> Result<()> {
        let dir = &config.plugins_dir;
        if !dir.exists() {
            tracing::warn!("the plugins directory {} does not exist; serving no bots (build some with `aviary plugin build <dir> --out {}`)", dir.display(), dir.display());
            return Ok(());
        }
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the plugins directory {} (set `plugins_dir` in aviary.toml or pass --plugins-dir)", dir.display()))?;
        let mut manifests: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        manifests.sort();
        for path in manifests {
            self.load_one(runtime, config, tree, &path);
        }
        Ok(())
    }

    fn load_one(&self, runtime: &Runtime, config: &Config, tree: &sled::Tree, manifest_path: &Path) {
        let fallback_id = manifest_path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
        let outcome = Manifest::read(manifest_path).and_then(|manifest| {
            let wasm = manifest_path.with_extension("wasm");
            let bytes = std::fs::read(&wasm).with_context(|| format!("cannot read the component {}", wasm.display()))?;
            let bot_config = config.bot(&manifest.id);
            let limits = Limits {
                memory_bytes: (bot_config.memory_mb * 1024 * 1024) as usize,
                timeout: Duration::from_millis(bot_config.timeout_ms),
                max_retries: bot_config.max_retries,
            };
            runtime.load(manifest, &bytes, limits, bot_config.settings, tree)
        });
        match outcome {
            Ok(bot) => {
                tracing::info!(bot = %bot.manifest.id, version = %bot.manifest.version, sha256 = %bot.sha256, "bot loaded");
                self.failed.write().remove(&bot.manifest.id);
                self.running.write().insert(bot.manifest.id.clone(), Arc::new(bot));
            }
            Err(error) => {
                let error = format!("{error:#}");
                tracing::error!(bot = %fallback_id, "bot not loaded: {error}");
                let info = BotInfo { id: fallback_id.clone(), version: String::new(), description: String::new(), status: "failed", error: Some(error), sha256: None };
                self.failed.write().insert(fallback_id, info);
            }
        }
    }

    /// Adds an already loaded bot (used by embedders and benchmarks).
    pub fn insert(&self, bot: LoadedBot) {
        self.running.write().insert(bot.manifest.id.clone(), Arc::new(bot));
    }

    /// The running bot `id`, if any.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedBot>> {
        self.running.read().get(id).cloned()
    }

    /// Every bot, running or failed, by id.
    pub fn list(&self) -> Vec<BotInfo> {
        let mut all: BTreeMap<String, BotInfo> = self.failed.read().clone();
        for (id, bot) in self.running.read().iter() {
            all.insert(id.clone(), BotInfo {
                id: id.clone(),
                version: bot.manifest.version.clone(),
                description: bot.manifest.description.clone(),
                status: "running",
                error: None,
                sha256: Some(bot.sha256.clone()),
            });
        }
        all.into_values().collect()
    }
}
