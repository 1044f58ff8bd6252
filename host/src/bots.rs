//! The bots this host runs: loaded from the plugins directory, each checked
//! against the admin's grant. A bot that asks for more than it is granted is
//! held for approval while the version already running (if any) keeps
//! serving; one broken bot never stops the others. Every decision goes to
//! the audit log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;

use crate::config::Config;
use crate::policy::report::BotAudit;
use crate::policy::{BotPolicy, Capabilities, Shortfall};
use crate::runtime::{BotSpec, Inspected, LoadedBot, Manifest, Runtime};
use crate::store::{AuditEntry, Store};

/// What `GET /api/v1/bots` shows for one bot.
#[derive(Debug, Clone, Serialize)]
pub struct BotInfo {
    pub id: String,
    pub version: String,
    pub description: String,
    /// `running`, `failed` (see `error`) or `pending` (an upgrade awaits approval).
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// A held version waiting for `aviary policy approve`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingUpgrade>,
}

/// A version held because it asks for more than is granted.
#[derive(Debug, Clone, Serialize)]
pub struct PendingUpgrade {
    pub version: String,
    pub sha256: String,
    pub shortfalls: Vec<Shortfall>,
    #[serde(skip)]
    imports: Vec<String>,
    #[serde(skip)]
    manifest: Option<Manifest>,
    #[serde(skip)]
    path: PathBuf,
}

/// The registry of bots.
pub struct Bots {
    runtime: Arc<Runtime>,
    config: Config,
    store: Store,
    running: RwLock<BTreeMap<String, Arc<LoadedBot>>>,
    failed: RwLock<BTreeMap<String, String>>,
    pending: RwLock<BTreeMap<String, PendingUpgrade>>,
    /// One reload or approval at a time.
    changing: Mutex<()>,
}

impl Bots {
    pub fn new(runtime: Arc<Runtime>, config: Config, store: Store) -> Bots {
        Bots {
            runtime,
            config,
            store,
            running: RwLock::default(),
            failed: RwLock::default(),
            pending: RwLock::default(),
            changing: Mutex::new(()),
        }
    }

    /// Loads every `<id>.toml` + `<id>.wasm` pair in the plugins directory
    /// that is new or changed, and unloads bots whose files are gone.
    pub fn reload(&self) -> Result<()> {
        let _one_at_a_time = self.changing.lock();
        let dir = &self.config.plugins_dir;
        if !dir.exists() {
            tracing::warn!("the plugins directory {} does not exist; serving no bots (build some with `aviary plugin build <dir> --out {}`)", dir.display(), dir.display());
            return Ok(());
        }
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read the plugins directory {}", dir.display()))?;
        let mut manifests: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        manifests.sort();
        let mut seen = Vec::new();
        for path in &manifests {
            seen.push(self.load_file(path));
        }
        let gone: Vec<String> = self
            .running
            .read()
            .keys()
            .filter(|id| !seen.contains(id))
            .cloned()
            .collect();
        for id in gone {
            self.running.write().remove(&id);
            self.audit(
                "unload",
                &id,
                None,
                None,
                "its files left the plugins directory",
            );
        }
        Ok(())
    }

    /// Loads one bot from its manifest path; returns the bot id.
    fn load_file(&self, manifest_path: &Path) -> String {
        let fallback_id = manifest_path
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let result = Manifest::read(manifest_path).and_then(|manifest| {
            let wasm = manifest_path.with_extension("wasm");
            let bytes = std::fs::read(&wasm)
                .with_context(|| format!("cannot read the component {}", wasm.display()))?;
            let sha256 = crate::runtime::sha256_hex(&bytes);
            let unchanged = self.running.read().get(&manifest.id).is_some_and(|bot| {
                bot.sha256 == sha256 && bot.manifest.version == manifest.version
            }) || self
                .pending
                .read()
                .get(&manifest.id)
                .is_some_and(|held| held.sha256 == sha256 && held.version == manifest.version);
            if unchanged {
                return Ok(manifest.id);
            }
            let inspected = self
                .runtime
                .inspect(&bytes)
                .with_context(|| format!("{} is not a loadable component", wasm.display()))?;
            self.decide(manifest, inspected, manifest_path)
        });
        match result {
            Ok(id) => id,
            Err(error) => {
                let error =
                    crate::text::cut(&format!("{error:#}"), 2 * crate::text::MAX_ERROR_BYTES)
                        .into_owned();
                tracing::error!(bot = %fallback_id, "bot not loaded: {error}");
                self.audit("refuse", &fallback_id, None, None, &error);
                self.failed.write().insert(fallback_id.clone(), error);
                fallback_id
            }
        }
    }

    /// Loads, or holds for approval, an inspected component.
    fn decide(&self, manifest: Manifest, inspected: Inspected, path: &Path) -> Result<String> {
        let id = manifest.id.clone();
        let grant = self.config.grant(&id)?;
        let approved = self
            .store
            .approval(&id, &manifest.version, &inspected.sha256)?;
        let effective = match approved {
            Some(asks) => grant.widened_by(&asks),
            None => grant,
        };
        // Imports that even an approval of the asks would not cover: refuse.
        let refusals = BotPolicy::import_refusals_of(
            &effective.widened_by(&manifest.asks),
            &inspected.imports,
        );
        anyhow::ensure!(
            refusals.is_empty(),
            "bot `{id}` is refused: {}",
            refusals.join("; ")
        );
        let shortfalls = effective.shortfalls(&manifest.asks);
        if !shortfalls.is_empty() {
            let detail = shortfalls
                .iter()
                .map(|s| {
                    format!(
                        "{}: asks {} but granted {}",
                        s.capability, s.asked, s.granted
                    )
                })
                .collect::<Vec<_>>()
                .join("; ");
            tracing::warn!(bot = %id, version = %manifest.version, "held for approval: {detail}");
            self.audit("hold", &id, None, Some(&manifest.version), &detail);
            let upgrade = PendingUpgrade {
                version: manifest.version.clone(),
                sha256: inspected.sha256,
                shortfalls,
                imports: inspected.imports,
                manifest: Some(manifest),
                path: path.to_owned(),
            };
            self.pending.write().insert(id.clone(), upgrade);
            return Ok(id);
        }
        self.install(manifest, inspected, effective)?;
        Ok(id)
    }

    fn install(&self, manifest: Manifest, inspected: Inspected, grant: Capabilities) -> Result<()> {
        let id = manifest.id.clone();
        let bot_config = self.config.bot(&id);
        let policy = BotPolicy::new(&id, grant, &bot_config.secrets, self.store.tree())?;
        let spec = BotSpec {
            manifest,
            policy,
            settings: bot_config.settings,
            max_retries: bot_config.max_retries,
        };
        let bot = self.runtime.load(inspected, spec, self.store.tree())?;
        tracing::info!(bot = %id, version = %bot.manifest.version, sha256 = %bot.sha256, "bot loaded");
        let detail = format!(
            "version {} sha256 {} imports {}",
            bot.manifest.version,
            bot.sha256,
            bot.imports.join(", ")
        );
        self.audit("load", &id, None, Some(&bot.manifest.version), &detail);
        self.failed.write().remove(&id);
        self.pending.write().remove(&id);
        self.running.write().insert(id, Arc::new(bot));
        Ok(())
    }

    /// Approves the held `version` of `bot`: its asks join its grant and it
    /// replaces the running version.
    pub fn approve(&self, bot: &str, version: &str) -> Result<()> {
        let _one_at_a_time = self.changing.lock();
        let held = self.held(bot, version)?;
        let manifest = Manifest::read(&held.path)?;
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
        self.install(manifest, inspected, grant)
    }

    /// Drops the held `version` of `bot`; the running version stays.
    pub fn reject(&self, bot: &str, version: &str) -> Result<()> {
        let _one_at_a_time = self.changing.lock();
        let held = self.held(bot, version)?;
        self.pending.write().remove(bot);
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
        let pending = self.pending.read();
        let held = pending.get(bot).with_context(|| {
            format!("bot `{bot}` has no version waiting for approval (see `aviary policy audit`)")
        })?;
        anyhow::ensure!(
            held.version == version,
            "bot `{bot}` has version {} waiting, not {version}",
            held.version
        );
        Ok(held.clone())
    }

    /// Adds an already loaded bot (used by embedders and benchmarks).
    pub fn insert(&self, bot: LoadedBot) {
        self.running
            .write()
            .insert(bot.manifest.id.clone(), Arc::new(bot));
    }

    /// The running bot `id`, if any.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedBot>> {
        self.running.read().get(id).cloned()
    }

    /// Every running bot.
    pub fn running(&self) -> Vec<Arc<LoadedBot>> {
        self.running.read().values().cloned().collect()
    }

    /// Every bot, running, held or failed, by id.
    pub fn list(&self) -> Vec<BotInfo> {
        let mut all: BTreeMap<String, BotInfo> = BTreeMap::new();
        for (id, error) in self.failed.read().iter() {
            all.insert(
                id.clone(),
                BotInfo {
                    id: id.clone(),
                    version: String::new(),
                    description: String::new(),
                    status: "failed",
                    error: Some(error.clone()),
                    sha256: None,
                    pending: None,
                },
            );
        }
        for (id, bot) in self.running.read().iter() {
            all.insert(
                id.clone(),
                BotInfo {
                    id: id.clone(),
                    version: bot.manifest.version.clone(),
                    description: bot.manifest.description.clone(),
                    status: "running",
                    error: None,
                    sha256: Some(bot.sha256.clone()),
                    pending: None,
                },
            );
        }
        for (id, held) in self.pending.read().iter() {
            let info = all.entry(id.clone()).or_insert_with(|| BotInfo {
                id: id.clone(),
                version: held.version.clone(),
                description: String::new(),
                status: "pending",
                error: None,
                sha256: None,
                pending: None,
            });
            info.pending = Some(held.clone());
        }
        all.into_values().collect()
    }

    /// The policy audit of every bot (or just `only`): running builds and
    /// builds held for approval.
    pub fn audits(&self, only: Option<&str>) -> Result<Vec<BotAudit>> {
        let wanted = |id: &str| only.is_none_or(|o| o == id);
        let mut out = Vec::new();
        for bot in self
            .running()
            .into_iter()
            .filter(|b| wanted(&b.manifest.id))
        {
            let m = &bot.manifest;
            out.push(BotAudit::new(
                &m.id,
                &m.version,
                &bot.sha256,
                "running",
                bot.imports.clone(),
                m.asks.clone(),
                bot.policy.grant.clone(),
            ));
        }
        for (id, held) in self.pending.read().iter().filter(|(id, _)| wanted(id)) {
            let asks = held
                .manifest
                .as_ref()
                .map(|m| m.asks.clone())
                .unwrap_or_default();
            out.push(BotAudit::new(
                id,
                &held.version,
                &held.sha256,
                "pending approval",
                held.imports.clone(),
                asks,
                self.config.grant(id)?,
            ));
        }
        if let Some(id) = only {
            anyhow::ensure!(
                !out.is_empty(),
                "no bot named `{id}` is running or held (see `aviary policy audit` for all)"
            );
        }
        Ok(out)
    }

    fn audit(
        &self,
        action: &str,
        bot: &str,
        capability: Option<&str>,
        target: Option<&str>,
        detail: &str,
    ) {
        let entry = AuditEntry {
            action: action.into(),
            bot: bot.into(),
            capability: capability.map(Into::into),
            target: target.map(Into::into),
            detail: detail.into(),
        };
        if let Err(error) = self.store.audit(entry) {
            tracing::error!("cannot append to the audit log: {error:#}");
        }
    }
}
