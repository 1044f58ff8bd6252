//! The bots this host runs: loaded from the plugins directory, each checked
//! against the admin's grant. A bot that asks for more than it is granted is
//! held for approval while the version already running (if any) keeps
//! serving; one broken bot never stops the others. Every decision goes to
//! the audit log.
//!
//! A bot's identity is where it was installed: `<id>.toml` and `<id>.wasm`
//! in the plugins directory, whose manifest must say `id = "<id>"`.
//!
//! - [`slot`]: one bot's place in the registry, swapped atomically;
//! - [`scan`]: reading the plugins directory, binding ids to files;
//! - [`swap`]: the one way a version starts serving (policy, `init`,
//!   `migrate`, the pointer swap);
//! - [`watch`]: reloading when the plugins directory changes;
//! - [`versions`]: every loaded build kept in the data directory, rollback;
//! - [`lifecycle`]: disable, enable, remove;
//! - [`approval`]: approving or rejecting a version held for approval;
//! - [`stats`]: what each bot did since the host started;
//! - [`listing`]: what `aviary plugin list` and `aviary policy audit` show.

mod approval;
pub mod data;
mod lifecycle;
mod listing;
mod scan;
pub mod slot;
pub mod stats;
mod swap;
mod versions;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Mutex, RwLock};

use crate::config::Config;
use crate::runtime::{LoadedBot, Runtime};
use crate::store::{AuditEntry, Store};

pub use lifecycle::Removed;
pub use listing::{BotInfo, PendingUpgrade};
pub use slot::Slot;
pub use versions::{KeptVersion, RolledBack};
pub use watch::Watcher;

/// The registry of bots.
pub struct Bots {
    runtime: Arc<Runtime>,
    config: Config,
    store: Store,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// One change (reload, approval, rollback, removal) at a time.
    changing: Mutex<()>,
}

impl Bots {
    pub fn new(runtime: Arc<Runtime>, config: Config, store: Store) -> Bots {
        Bots {
            runtime,
            config,
            store,
            slots: RwLock::default(),
            changing: Mutex::new(()),
        }
    }

    /// Adds an already loaded bot (used by embedders and benchmarks).
    pub fn insert(&self, bot: LoadedBot) {
        let slot = self.slot_or_new(&bot.manifest.id);
        slot.swap(Arc::new(bot), self.store.state().generate_id());
    }

    /// Where bots are installed.
    pub fn plugins_dir(&self) -> &std::path::Path {
        &self.config.plugins_dir
    }

    /// Whether the host reloads by itself when the plugins directory changes.
    pub fn watches(&self) -> bool {
        self.config.watch
    }

    /// The slot of bot `id`, if the registry knows it.
    pub fn slot(&self, id: &str) -> Option<Arc<Slot>> {
        self.slots.read().get(id).cloned()
    }

    /// The running version of bot `id`, if any.
    pub fn get(&self, id: &str) -> Option<Arc<LoadedBot>> {
        self.slot(id)?.current()
    }

    /// Every running bot.
    pub fn running(&self) -> Vec<Arc<LoadedBot>> {
        self.slots
            .read()
            .values()
            .filter_map(|slot| slot.current())
            .collect()
    }

    /// The slot of `id`, made (disabled if the admin left it so) when new.
    fn slot_or_new(&self, id: &str) -> Arc<Slot> {
        if let Some(slot) = self.slot(id) {
            return slot;
        }
        let disabled = self.store.is_disabled(id).unwrap_or_else(|error| {
            tracing::error!(bot = %id, "cannot read whether the bot is disabled: {error:#}");
            false
        });
        self.slots
            .write()
            .entry(id.to_owned())
            .or_insert_with(|| Arc::new(Slot::new(disabled)))
            .clone()
    }

    /// The slot of `id`, or an error naming the known bots.
    fn known(&self, id: &str) -> anyhow::Result<Arc<Slot>> {
        self.slot(id).ok_or_else(|| {
            let known: Vec<String> = self.slots.read().keys().cloned().collect();
            anyhow::anyhow!(
                "no bot `{id}` is installed (installed: {}; see `aviary plugin list`)",
                if known.is_empty() {
                    "none".into()
                } else {
                    known.join(", ")
                }
            )
        })
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
