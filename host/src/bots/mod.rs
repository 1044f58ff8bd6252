//! The bots this host runs: loaded from the plugins directory, each checked
//! against the admin's grant. A bot that asks for more than it is granted is
//! held for approval while the version already running (if any) keeps
//! serving; one broken bot never stops the others. Every decision goes to
//! the audit log.
//!
//! A bot's identity is where it was installed: `<id>.toml` and `<id>.wasm`
//! in the plugins directory, whose manifest must say `id = "<id>"`.
//!
//! - [`scan`]: reading the plugins directory, binding ids to files, loading;
//! - [`approval`]: approving or rejecting a version held for approval;
//! - [`listing`]: what `GET /api/v1/bots` and `aviary policy audit` show.

mod approval;
mod listing;
mod scan;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::runtime::{LoadedBot, Runtime};
use crate::store::{AuditEntry, Store};

pub use listing::{BotInfo, PendingUpgrade};

/// The registry of bots.
pub struct Bots {
    runtime: Arc<Runtime>,
    config: Config,
    store: Store,
    running: RwLock<BTreeMap<String, Arc<LoadedBot>>>,
    /// The manifest each running bot was installed from: its identity.
    sources: RwLock<BTreeMap<String, PathBuf>>,
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
            sources: RwLock::default(),
            failed: RwLock::default(),
            pending: RwLock::default(),
            changing: Mutex::new(()),
        }
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
