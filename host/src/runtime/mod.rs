//! The WebAssembly runtime: one engine, components compiled once and cached,
//! a fresh instance per event under the bot's limits.

pub mod bindings;
mod bot;
pub mod budget;
mod cache;
pub mod capabilities;
pub mod clock;
mod engine;
pub mod limits;
pub mod state;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use wasmtime::component::{Component, Linker};
use wasmtime::Engine;

pub use bot::{HandleError, Limits, LoadedBot, Manifest, Outcome};
pub use engine::EPOCH_TICK;

use crate::policy::{
    capabilities::DEFAULT_MEMORY_MB, capabilities::DEFAULT_TIMEOUT_MS, imports::component_imports,
    BotPolicy,
};
use bindings::BotPre;
use cache::ArtifactCache;
use capabilities::log::LogRing;
pub use capabilities::Services;
use clock::Containment;
use state::{EventState, Identity};

/// Largest memory cap a bot may be given; the pooling allocator reserves
/// address space for this much per slot.
pub const MAX_MEMORY_BYTES: usize = 4096 * 1024 * 1024;

/// Loads and runs bots.
pub struct Runtime {
    engine: Engine,
    linker: Linker<EventState>,
    cache: ArtifactCache,
    /// Drives what bots wait for inside host calls: timers, sockets, DNS.
    io: tokio::runtime::Runtime,
    services: Services,
    _ticker: engine::EpochTicker,
}

/// A compiled component and what it imports, before any policy decision.
pub struct Inspected {
    /// sha256 of the component bytes, hex.
    pub sha256: String,
    /// Interfaces it imports, with versions, sorted.
    pub imports: Vec<String>,
    component: Component,
}

/// Everything besides the component that a loaded bot needs.
pub struct BotSpec {
    pub manifest: Manifest,
    pub policy: BotPolicy,
    pub settings: BTreeMap<String, String>,
    pub max_retries: u32,
    /// Where the bot's log lines and stdio go (shared by its versions).
    pub logs: Arc<LogRing>,
}

/// The interface of the optional `migrate` export, any `0.1.x`.
const LIFECYCLE: &str = "aviary:bot/lifecycle@0.1.5";

impl Runtime {
    /// A runtime caching compiled components under `cache_dir`, whose bots
    /// reach the host-wide `services` made by `services` on the runtime's
    /// own I/O threads.
    pub fn new(
        cache_dir: &Path,
        services: impl FnOnce(tokio::runtime::Handle) -> Result<Services>,
    ) -> Result<Runtime> {
        let engine = engine::build_engine(MAX_MEMORY_BYTES)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(wasm_error)?;
        capabilities::link_all(&mut linker).map_err(wasm_error)?;
        let cache = ArtifactCache::new(cache_dir, &engine)?;
        let ticker = engine::EpochTicker::start(&engine);
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("aviary-bot-io")
            .enable_all()
            .build()
            .context("cannot start the runtime for bots' host calls")?;
        let services = services(io.handle().clone())?;
        Ok(Runtime {
            engine,
            linker,
            cache,
            io,
            services,
            _ticker: ticker,
        })
    }

    /// Compiles (or finds in the cache) a component and lists its imports.
    pub fn inspect(&self, bytes: &[u8]) -> Result<Inspected> {
        limits::check_shape(bytes)?;
        let (component, sha256) = self.cache.component(&self.engine, bytes)?;
        let imports = component_imports(&self.engine, &component);
        Ok(Inspected {
            sha256,
            imports,
            component,
        })
    }

    /// Links an inspected component under `spec` and calls its `init`.
    /// Refuses it when an import is not covered by the grant.
    pub fn load(
        &self,
        inspected: Inspected,
        spec: BotSpec,
        store: &crate::store::Store,
    ) -> Result<LoadedBot> {
        let id = spec.manifest.id.clone();
        let refusals = spec.policy.import_refusals(&inspected.imports);
        anyhow::ensure!(
            refusals.is_empty(),
            "bot `{id}` is refused: {}",
            refusals.join("; ")
        );
        let instance_pre = self
            .linker
            .instantiate_pre(&inspected.component)
            .map_err(wasm_error)
            .with_context(|| format!("bot `{id}` imports something the host does not provide"))?;
        let pre = BotPre::new(instance_pre)
            .map_err(wasm_error)
            .with_context(|| {
                format!("bot `{id}` does not export aviary:bot/handler@0.1 (any 0.1.x)")
            })?;
        let migrate = inspected
            .component
            .get_export_index(None, LIFECYCLE)
            .and_then(|lifecycle| {
                inspected
                    .component
                    .get_export_index(Some(&lifecycle), "migrate")
            });
        let callbacks = inspected
            .component
            .get_export_index(None, bot::CALLBACKS)
            .map(|callbacks| bot::Callbacks {
                webhook: inspected
                    .component
                    .get_export_index(Some(&callbacks), "on-webhook"),
                delivery: inspected
                    .component
                    .get_export_index(Some(&callbacks), "on-delivery"),
            })
            .unwrap_or_default();
        let grant = &spec.policy.grant;
        let limits = Limits {
            memory_bytes: (grant.memory_mb.unwrap_or(DEFAULT_MEMORY_MB) * 1024 * 1024) as usize,
            timeout: Duration::from_millis(grant.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS)),
            wall: Duration::from_millis(grant.wall_ms()),
            max_retries: spec.max_retries,
        };
        let policy = Arc::new(spec.policy);
        let identity = Identity {
            id: Arc::from(id.as_str()),
            version: Arc::from(spec.manifest.version.as_str()),
            settings: Arc::new(spec.settings),
            policy: policy.clone(),
            logs: spec.logs,
            memory_bytes: limits.memory_bytes,
            services: self.services.clone(),
            audited: Arc::new(
                spec.manifest
                    .data
                    .iter()
                    .filter(|(_, table)| table.audit)
                    .map(|(name, _)| crate::bots::data::prefix(name))
                    .collect(),
            ),
        };
        let bot = LoadedBot {
            manifest: spec.manifest,
            sha256: inspected.sha256,
            limits,
            imports: inspected.imports,
            policy,
            engine: self.engine.clone(),
            pre,
            migrate,
            callbacks,
            identity,
            io: self.io.handle().clone(),
            containment: Arc::new(Containment::default()),
        };
        bot.init(store)?;
        Ok(bot)
    }

    /// The host-wide services bots reach.
    pub fn services(&self) -> &Services {
        &self.services
    }

    /// The engine (for tools that inspect components).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

/// Turns a `wasmtime::Error` (its own type since wasmtime 48) into an
/// `anyhow::Error`, keeping its whole chain of causes in the message.
pub(crate) fn wasm_error(error: wasmtime::Error) -> anyhow::Error {
    anyhow::anyhow!("{error:?}")
}

/// sha256 of component bytes, hex: the identity of a bot build.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
