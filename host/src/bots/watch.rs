//! Reloading when the plugins directory changes: `notify` reports changes
//! to `<id>.wasm` and `<id>.toml`; once none has come for [`SETTLE`], the
//! directory is rescanned. A file still being written is refused by the
//! rescan (it is not a valid component, or its manifest does not parse)
//! and the running version keeps serving; the next settled write loads.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use notify::{RecursiveMode, Watcher as _};

use super::Bots;

/// How long the directory must stay quiet before a rescan.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Watches the plugins directory while alive.
pub struct Watcher {
    _inner: notify::RecommendedWatcher,
}

impl Bots {
    /// Starts watching the plugins directory (made if missing).
    pub fn watch(self: &Arc<Bots>) -> Result<Watcher> {
        let dir = self.config.plugins_dir.clone();
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create the plugins directory {}", dir.display()))?;
        let (changed, changes) = crossbeam_channel::unbounded::<()>();
        let mut inner =
            notify::recommended_watcher(move |event: notify::Result<notify::Event>| match event {
                Ok(event)
                    if changes_content(&event.kind)
                        && event.paths.iter().any(|p| is_bot_file(p)) =>
                {
                    let _ = changed.send(());
                }
                Ok(_) => {}
                Err(error) => tracing::warn!("watching the plugins directory: {error}"),
            })
            .context("cannot watch the plugins directory")?;
        inner
            .watch(&dir, RecursiveMode::NonRecursive)
            .with_context(|| format!("cannot watch {}", dir.display()))?;
        let bots = Arc::downgrade(self);
        std::thread::Builder::new()
            .name("aviary-watch".into())
            .spawn(move || {
                while changes.recv().is_ok() {
                    // Every further change starts the quiet period again.
                    loop {
                        match changes.recv_timeout(SETTLE) {
                            Ok(()) => continue,
                            Err(crossbeam_channel::RecvTimeoutError::Timeout) => break,
                            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => return,
                        }
                    }
                    let Some(bots) = bots.upgrade() else { return };
                    tracing::info!("the plugins directory changed; reloading");
                    if let Err(error) = bots.reload() {
                        tracing::error!("reload after a change failed: {error:#}");
                    }
                }
            })
            .context("cannot start the watcher thread")?;
        tracing::info!("watching {} for new and changed bots", dir.display());
        Ok(Watcher { _inner: inner })
    }
}

/// Whether `path` is a bot's file (`<id>.wasm` or `<id>.toml`), not a
/// hidden temporary one.
fn is_bot_file(path: &Path) -> bool {
    let hidden = path
        .file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with('.'));
    !hidden && path.extension().is_some_and(|x| x == "wasm" || x == "toml")
}

/// Whether `kind` may change what a rescan loads: not a read (the rescan's
/// own) nor a change of times or permissions.
fn changes_content(kind: &notify::EventKind) -> bool {
    use notify::event::ModifyKind;
    use notify::EventKind;
    match kind {
        EventKind::Create(_) | EventKind::Remove(_) => true,
        EventKind::Modify(ModifyKind::Metadata(_)) => false,
        EventKind::Modify(_) => true,
        EventKind::Access(_) | EventKind::Any | EventKind::Other => false,
    }
}
