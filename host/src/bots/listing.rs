//! What the registry shows: `GET /api/v1/bots` and `aviary policy audit`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Result;
use serde::Serialize;

use super::{Bots, Slot};
use crate::policy::report::BotAudit;
use crate::policy::Shortfall;
use crate::runtime::Manifest;

/// What `GET /api/v1/bots` and `aviary plugin list` show for one bot.
#[derive(Debug, Clone, Serialize)]
pub struct BotInfo {
    pub id: String,
    /// The version serving (empty when none loaded).
    pub version: String,
    pub description: String,
    /// `running`, `disabled` (loaded, its events wait), `failed` (no
    /// version loaded; see `error`) or `pending` (only a held version).
    pub status: &'static str,
    /// Why the last build tried failed to load, even while an older
    /// version keeps serving.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// When that failure happened (milliseconds since the Unix epoch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_at: Option<u64>,
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
        let slots: Vec<(String, Arc<Slot>)> = self
            .slots
            .read()
            .iter()
            .map(|(id, slot)| (id.clone(), slot.clone()))
            .collect();
        slots.iter().map(|(id, slot)| info(id, slot)).collect()
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
        let held: Vec<(String, PendingUpgrade)> = self
            .slots
            .read()
            .iter()
            .filter(|(id, _)| wanted(id))
            .filter_map(|(id, slot)| Some((id.clone(), slot.pending.lock().clone()?)))
            .collect();
        for (id, held) in &held {
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

/// What the listing shows of bot `id` in `slot`.
pub(super) fn info(id: &str, slot: &Slot) -> BotInfo {
    let running = slot.current();
    let failure = slot.failure.lock().clone();
    let pending = slot.pending.lock().clone();
    let status = match (&running, &pending) {
        (Some(_), _) if slot.is_disabled() => "disabled",
        (Some(_), _) => "running",
        (None, Some(_)) if failure.is_none() => "pending",
        (None, _) => "failed",
    };
    BotInfo {
        id: id.to_owned(),
        version: running
            .as_ref()
            .map(|b| b.manifest.version.clone())
            .or_else(|| {
                pending
                    .as_ref()
                    .filter(|_| failure.is_none())
                    .map(|p| p.version.clone())
            })
            .unwrap_or_default(),
        description: running
            .as_ref()
            .map(|b| b.manifest.description.clone())
            .unwrap_or_default(),
        status,
        error: failure.as_ref().map(|f| f.error.clone()),
        error_at: failure.as_ref().map(|f| f.at),
        sha256: running.as_ref().map(|b| b.sha256.clone()),
        pending,
    }
}
