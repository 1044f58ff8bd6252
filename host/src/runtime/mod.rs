//! The WebAssembly runtime: one engine, components compiled once and cached,
//! a fresh instance per event under the bot's limits.

pub mod bindings;
mod bot;
mod cache;
pub mod capabilities;
mod engine;
pub mod state;

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use wasmtime::component::Linker;
use wasmtime::Engine;

pub use bot::{HandleError, Limits, LoadedBot, Manifest};
pub use engine::EPOCH_TICK;

use bindings::BotPre;
use cache::ArtifactCache;
use state::EventState;

/// Largest memory cap a bot may be given; the pooling allocator reserves
/// address space for this much per slot.
pub const MAX_MEMORY_BYTES: usize = 4096 * 1024 * 1024;

/// Loads and runs bots.
pub struct Runtime {
    engine: Engine,
    linker: Linker<EventState>,
    cache: ArtifactCache,
    _ticker: engine::EpochTicker,
}

impl Runtime {
    /// A runtime caching compiled components under `cache_dir`.
    pub fn new(cache_dir: &Path) -> Result<Runtime> {
        let engine = engine::build_engine(MAX_MEMORY_BYTES)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(wasm_error)?;
        capabilities::link_all(&mut linker).map_err(wasm_error)?;
        let cache = ArtifactCache::new(cache_dir, &engine)?;
        let ticker = engine::EpochTicker::start(&engine);
        Ok(Runtime { engine, linker, cache, _ticker: ticker })
    }

    /// Loads a component from `bytes`, links it and calls its `init`.
    pub fn load(
        &self,
        manifest: Manifest,
        bytes: &[u8],
        limits: Limits,
        settings: std::collections::BTreeMap<String, String>,
        tree: &sled::Tree,
    ) -> Result<LoadedBot> {
        let id = manifest.id.clone();
        let (component, sha256) = self.cache.component(&self.engine, bytes).with_context(|| format!("cannot load bot `{id}`"))?;
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(wasm_error)
            .with_context(|| format!("bot `{id}` imports something the host does not provide"))?;
        let pre = BotPre::new(instance_pre).map_err(wasm_error).with_context(|| format!("bot `{id}` does not export aviary:bot/handler@0.1.0"))?;
        let bot = LoadedBot {
            manifest,
            sha256,
            limits,
            engine: self.engine.clone(),
            pre,
            id: Arc::from(id.as_str()),
            settings: Arc::new(settings),
        };
        bot.init(tree)?;
        Ok(bot)
    }
}

/// Turns a `wasmtime::Error` (its own type since wasmtime 48) into an
/// `anyhow::Error`, keeping its whole chain of causes in the message.
pub(crate) fn wasm_error(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:?}")
}
