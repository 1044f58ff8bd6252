//! Compiles each component once and keeps the machine code on disk, keyed
//! by the component's sha256 and the engine's settings, so a restart or a
//! reload of the same bytes loads in under a millisecond.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use wasmtime::component::Component;
use wasmtime::Engine;

use super::wasm_error;

/// The on-disk cache of precompiled components.
pub struct ArtifactCache {
    dir: PathBuf,
    engine_key: String,
}

impl ArtifactCache {
    pub fn new(dir: &Path, engine: &Engine) -> Result<ArtifactCache> {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot create the cache directory {}", dir.display()))?;
        // SipHash with fixed keys: stable for one build of the host, which is
        // all the compatibility hash promises anyway.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        Ok(ArtifactCache {
            dir: dir.to_owned(),
            engine_key: format!("{:016x}", hasher.finish()),
        })
    }

    /// Returns the component for `bytes` and their sha256 (hex), compiling
    /// only on a cache miss.
    pub fn component(&self, engine: &Engine, bytes: &[u8]) -> Result<(Component, String)> {
        let sha256 = super::sha256_hex(bytes);
        let path = self.dir.join(format!("{sha256}-{}.cwasm", self.engine_key));
        if path.exists() {
            // SAFETY: files in this directory are written only by `store` below,
            // from `Component::serialize` of this engine configuration, and the
            // name binds them to the exact source bytes and engine settings.
            match unsafe { Component::deserialize_file(engine, &path) } {
                Ok(component) => return Ok((component, sha256)),
                Err(error) => {
                    tracing::warn!(path = %path.display(), "discarding unreadable cached component: {error}")
                }
            }
        }
        let component = Component::new(engine, bytes)
            .map_err(wasm_error)
            .context("not a valid WebAssembly component")?;
        self.store(&path, &component)?;
        Ok((component, sha256))
    }

    fn store(&self, path: &Path, component: &Component) -> Result<()> {
        let bytes = component.serialize().map_err(wasm_error)?;
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(())
    }
}
