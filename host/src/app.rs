//! Wires the parts together: store, runtime, bots, router and channels.

use std::sync::Arc;

use anyhow::{Context, Result};

use crate::bots::Bots;
use crate::channels::web::{self, WebState};
use crate::config::Config;
use crate::dispatch::{Dispatcher, Engines};
use crate::outbox::Outbox;
use crate::router::Router;
use crate::runtime::capabilities::llm::models::Models;
use crate::runtime::capabilities::vision::engine::Vision;
use crate::runtime::{Runtime, Services};
use crate::schedule::Scheduler;
use crate::store::Store;

/// A started host: bots loaded, workers running, pending events requeued.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub router: Router,
    pub bots: Arc<Bots>,
    pub runtime: Arc<Runtime>,
    /// Watches the plugins directory unless `watch = false`.
    pub watcher: Option<crate::bots::Watcher>,
    /// Fires the bots' timers.
    pub scheduler: crate::schedule::Scheduler,
    /// Delivers the bots' outbox jobs.
    pub outbox: crate::outbox::Outbox,
}

impl App {
    /// Opens the store, loads the bots and resumes the events that were
    /// accepted but not handled before the last stop.
    pub fn start(config: Config) -> Result<App> {
        let store = Store::open_with(&config.data_dir, &config.store)?;
        let purged = store.purge_expired()?;
        if purged > 0 {
            tracing::info!(
                count = purged,
                "deleted expired tokens and idempotency keys"
            );
        }
        let models_dir = config.models_dir();
        let runtime = Arc::new(Runtime::new(&config.data_dir.join("cache"), |io| {
            Ok(Services {
                models: Arc::new(Models::start(&config.llm, &models_dir, io)?),
                vision: Arc::new(Vision::new(
                    config.vision.engine,
                    models_dir.clone(),
                    config.vision.parallel,
                )),
                live: Arc::default(),
            })
        })?);
        let bots = Arc::new(Bots::new(runtime.clone(), config.clone(), store.clone()));
        // Watch first, so that a change during the first scan is not missed.
        let watcher = if config.watch {
            Some(bots.watch()?)
        } else {
            None
        };
        bots.reload()?;
        let engines = Engines {
            scheduler: Scheduler::load(store.clone())?,
            outbox: Outbox::load(store.clone(), bots.clone(), config.outbox.clone())?,
        };
        let dispatcher =
            Arc::new(Dispatcher::new(bots.clone(), store.clone()).with_engines(engines.clone()));
        let router = Router::start(config.workers, config.queue.clone(), dispatcher);
        let pending = store.pending_events()?;
        if !pending.is_empty() {
            tracing::info!(
                count = pending.len(),
                "resuming events accepted before the last stop"
            );
        }
        router.requeue(pending);
        engines.scheduler.start(router.clone())?;
        engines.outbox.start(router.clone())?;
        collect_blobs(store.clone(), config.store.blob_grace());
        Ok(App {
            config,
            store,
            router,
            bots,
            runtime,
            watcher,
            scheduler: engines.scheduler,
            outbox: engines.outbox,
        })
    }

    /// Serves the web channel until Ctrl-C or SIGTERM.
    pub async fn serve(self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.config.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (is it in use? set `listen` or --listen)",
                    self.config.listen
                )
            })?;
        let state = WebState {
            store: self.store.clone(),
            router: self.router.clone(),
            bots: self.bots.clone(),
            web: Arc::new(self.config.web.clone()),
            signals: Arc::new(web::Signals::default()),
            hooks: Arc::new(self.config.hooks()),
            outbox: self.outbox.clone(),
        };
        let live = self.runtime.services().live.clone();
        live.tap(state.signals.clone());
        if !self.config.matrix.accounts.is_empty() {
            let matrix = crate::channels::matrix::Matrix::start(
                &self.config.matrix,
                self.store.clone(),
                self.router.clone(),
                self.config.web.max_upload_bytes,
            )
            .await?;
            live.tap(matrix);
        }
        let token = crate::admin::load_or_create_token(
            self.config.admin_token.as_deref(),
            &self.config.data_dir,
        )?;
        let routes = crate::admin::routes(state.clone(), token).merge(web::routes(state));
        let max_hook_bytes = crate::channels::webhooks::max_body_bytes(&self.config.hooks());
        let routes = web::guard(
            routes,
            self.config.max_body_bytes,
            max_hook_bytes,
            &self.config.web,
        );
        tracing::info!("aviary is serving on http://{}", listener.local_addr()?);
        if self.config.web.conversation_secret.is_none() && !self.config.listen.ip().is_loopback() {
            tracing::warn!(
                "anyone who reaches {} may start conversations: set `web.conversation_secret` \
                 when the port is not on loopback",
                self.config.listen
            );
        }
        web::server::serve(listener, routes, &self.config.web, shutdown_signal()).await?;
        self.store.flush()?;
        Ok(())
    }
}

/// Deletes unreferenced attachment blobs now and then, in the background.
fn collect_blobs(store: Store, grace: std::time::Duration) {
    let every = (grace / 4).max(std::time::Duration::from_secs(1));
    let spawned = std::thread::Builder::new()
        .name("aviary-blobs".into())
        .spawn(move || loop {
            match store.collect_blobs(grace) {
                Ok(0) => {}
                Ok(count) => tracing::info!(count, "deleted attachment files no message refers to"),
                Err(error) => tracing::warn!("cannot collect attachment files: {error:#}"),
            }
            std::thread::sleep(every);
        });
    if let Err(error) = spawned {
        tracing::warn!("cannot start the attachment collector: {error}");
    }
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("cannot watch SIGTERM");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
