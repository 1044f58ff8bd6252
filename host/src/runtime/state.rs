//! The data of one `wasmtime::Store`: everything a single event may touch.

use std::collections::BTreeMap;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime::{StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::capabilities::{config::Config, kv::Kv, log::Log, messaging::Messaging};
use crate::store::Effects;

/// Per-event state, made fresh for every event and dropped after it.
pub struct EventState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub limits: StoreLimits,
    pub messaging: Messaging,
    pub kv: Kv,
    pub log: Log,
    pub config: Config,
}

impl EventState {
    /// State for one event of bot `bot`, reading kv from `tree`.
    pub fn new(bot: &Arc<str>, tree: &sled::Tree, settings: &Arc<BTreeMap<String, String>>, memory_bytes: usize) -> EventState {
        EventState {
            // No preopened directories, no environment, no network: WASI is
            // linked only because Rust's std imports it.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new().memory_size(memory_bytes).instances(16).tables(16).memories(4).trap_on_grow_failure(true).build(),
            messaging: Messaging::default(),
            kv: Kv::new(tree.clone(), bot),
            log: Log::new(bot.clone()),
            config: Config { settings: settings.clone() },
        }
    }

    /// The effects buffered during the call, to commit.
    pub fn into_effects(self) -> Effects {
        Effects { sends: self.messaging.sends, kv_reads: self.kv.reads, kv_writes: self.kv.writes }
    }
}

impl WasiView for EventState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}
