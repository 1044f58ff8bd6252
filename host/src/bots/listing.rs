//! What the registry shows: `GET /api/v1/bots` and `aviary policy audit`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use serde::Serialize;

use super::Bots;
use crate::policy::report::BotAudit;
use crate::policy::Shortfall;
use crate::runtime::Manifest;

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
    pub(super) imports: Vec<String>,
    #[serde(skip)]
    pub(super) manifest: Option<Manifest>,
    #[serde(skip)]
    pub(super) path: PathBuf,
}

impl Bots {
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
}
