//! Reading the plugins directory: each `<id>.toml` + `<id>.wasm` pair is a
//! bot whose identity is its file name, loaded, held or refused.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use super::slot::Failure;
use super::{Bots, PendingUpgrade};
use crate::policy::BotPolicy;
use crate::runtime::{Inspected, Manifest};

impl Bots {
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
            .filter(|p| {
                !p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .collect();
        manifests.sort();
        let mut seen = Vec::new();
        for path in &manifests {
            seen.push(self.load_file(path));
        }
        let gone: Vec<String> = self
            .slots
            .read()
            .keys()
            .filter(|id| !seen.contains(id))
            .cloned()
            .collect();
        for id in gone {
            let Some(slot) = self.slots.write().remove(&id) else {
                continue;
            };
            if slot.current().is_some() {
                slot.unload();
                self.audit(
                    "unload",
                    &id,
                    None,
                    None,
                    "its files left the plugins directory",
                );
            }
        }
        Ok(())
    }

    /// Loads one bot from its manifest path; returns the bot id, which is
    /// the file's name whatever the manifest claims.
    fn load_file(&self, manifest_path: &Path) -> String {
        let id = installed_id(manifest_path);
        let mut build = None;
        let result =
            self.read_installed(&id, manifest_path)
                .and_then(|(manifest, bytes)| {
                    let sha256 = crate::runtime::sha256_hex(&bytes);
                    build = Some((manifest.version.clone(), sha256.clone()));
                    if self.seen_before(&id, &manifest.version, &sha256) {
                        return Ok(());
                    }
                    let wasm = manifest_path.with_extension("wasm");
                    let inspected = self.runtime.inspect(&bytes).with_context(|| {
                        format!("{} is not a loadable component", wasm.display())
                    })?;
                    self.decide(manifest, inspected, &bytes, manifest_path)
                });
        if let Err(error) = result {
            let error = crate::text::cut(&format!("{error:#}"), 2 * crate::text::MAX_ERROR_BYTES)
                .into_owned();
            let file = manifest_path.display().to_string();
            let serving = self
                .get(&id)
                .map(|bot| format!("; {} keeps serving", bot.manifest.version))
                .unwrap_or_default();
            tracing::error!(bot = %id, file = %file, "bot not loaded: {error}{serving}");
            self.audit("refuse", &id, None, Some(&file), &error);
            let (version, sha256) = build.unwrap_or_default();
            *self.slot_or_new(&id).failure.lock() = Some(Failure {
                version,
                sha256,
                at: crate::store::now_ms(),
                error,
            });
        }
        id
    }

    /// Whether this build of `id` is the one serving, the one held, or the
    /// one that failed last: nothing to do again.
    fn seen_before(&self, id: &str, version: &str, sha256: &str) -> bool {
        let Some(slot) = self.slot(id) else {
            return false;
        };
        let same = |v: &str, s: &str| v == version && s == sha256;
        slot.current()
            .is_some_and(|bot| same(&bot.manifest.version, &bot.sha256))
            || slot
                .pending
                .lock()
                .as_ref()
                .is_some_and(|held| same(&held.version, &held.sha256))
            || slot
                .failure
                .lock()
                .as_ref()
                .is_some_and(|f| same(&f.version, &f.sha256))
    }

    /// Reads the manifest and component installed as bot `id`, refusing
    /// whatever would let them claim another identity: a manifest whose id
    /// is not its file name, or a file that links outside the plugins
    /// directory.
    fn read_installed(&self, id: &str, manifest_path: &Path) -> Result<(Manifest, Vec<u8>)> {
        let file = manifest_path.display();
        anyhow::ensure!(
            crate::ids::is_valid_id(id),
            "{file}: the file name `{id}` is not a valid bot id (1 to 128 letters, digits, `.`, `_`, `:` or `-`); rename the file"
        );
        let wasm = manifest_path.with_extension("wasm");
        let dir = std::fs::canonicalize(&self.config.plugins_dir).with_context(|| {
            format!(
                "cannot read the plugins directory {}",
                self.config.plugins_dir.display()
            )
        })?;
        for path in [manifest_path, wasm.as_path()] {
            let real = std::fs::canonicalize(path).with_context(|| {
                format!(
                    "cannot read {} (bot `{id}` needs {id}.toml and {id}.wasm)",
                    path.display()
                )
            })?;
            anyhow::ensure!(
                real.parent() == Some(dir.as_path()),
                "{} leads to {}, outside the plugins directory {}: copy the file in instead of linking it",
                path.display(),
                real.display(),
                dir.display()
            );
        }
        let manifest = Manifest::read(manifest_path)?;
        anyhow::ensure!(
            manifest.id == id,
            "{file} says `id = \"{}\"` but is installed as `{id}`: a bot's id is its file name, so rename the files to {}.toml and {}.wasm or set `id = \"{id}\"`",
            manifest.id,
            manifest.id,
            manifest.id
        );
        let bytes = std::fs::read(&wasm)
            .with_context(|| format!("cannot read the component {}", wasm.display()))?;
        Ok((manifest, bytes))
    }

    /// The admin's grant of `id`, widened by what was approved for this
    /// exact build.
    pub(super) fn approved_grant(
        &self,
        id: &str,
        version: &str,
        sha256: &str,
    ) -> Result<crate::policy::Capabilities> {
        let grant = self.config.grant(id)?;
        Ok(match self.store.approval(id, version, sha256)? {
            Some(asks) => grant.widened_by(&asks),
            None => grant,
        })
    }

    /// Loads, or holds for approval, an inspected component.
    fn decide(
        &self,
        manifest: Manifest,
        inspected: Inspected,
        bytes: &[u8],
        path: &Path,
    ) -> Result<()> {
        let id = manifest.id.clone();
        let effective = self.approved_grant(&id, &manifest.version, &inspected.sha256)?;
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
            let detail = format!("file {}; {detail}", path.display());
            self.audit("hold", &id, None, Some(&manifest.version), &detail);
            let upgrade = PendingUpgrade {
                version: manifest.version.clone(),
                sha256: inspected.sha256,
                shortfalls,
                imports: inspected.imports,
                manifest: Some(manifest),
                path: path.to_owned(),
            };
            *self.slot_or_new(&id).pending.lock() = Some(upgrade);
            return Ok(());
        }
        self.install(manifest, inspected, bytes, effective, path, "load")
    }
}

/// The id of the bot installed at `manifest_path`: its file name without
/// `.toml`.
fn installed_id(manifest_path: &Path) -> String {
    manifest_path
        .file_stem()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned()
}
