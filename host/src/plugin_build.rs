//! `aviary plugin build <dir>`: compile a bot crate to a component and put
//! it, with its manifest, where the host loads bots from.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::files::write_atomically;
use crate::runtime::Manifest;

/// Where a built bot went.
pub struct Built {
    pub id: String,
    pub version: String,
    pub wasm: PathBuf,
}

/// Builds the bot crate in `dir` (release, wasm32-wasip2) into `out`.
pub fn build(dir: &Path, out: &Path) -> Result<Built> {
    let manifest = Manifest::read(&dir.join("bot.toml"))
        .context("a bot crate needs a bot.toml manifest beside its Cargo.toml")?;
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-wasip2",
            "--manifest-path",
        ])
        .arg(dir.join("Cargo.toml"))
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context("cannot run cargo")?;
    anyhow::ensure!(status.success(), "cargo build failed for {} (is the wasm32-wasip2 target installed? `rustup target add wasm32-wasip2`)", dir.display());
    let crate_name = crate_name(dir)?;
    let built = target_dir
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", crate_name.replace('-', "_")));
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let wasm = out.join(format!("{}.wasm", manifest.id));
    let bytes = std::fs::read(&built).with_context(|| {
        format!(
            "cannot read {} (does the crate have crate-type = [\"cdylib\"]?)",
            built.display()
        )
    })?;
    // The component first, its manifest last, each by an atomic rename: a
    // host watching `out` never loads half a file.
    write_atomically(&wasm, &bytes)?;
    write_atomically(
        &out.join(format!("{}.toml", manifest.id)),
        &std::fs::read(dir.join("bot.toml"))?,
    )?;
    Ok(Built {
        id: manifest.id,
        version: manifest.version,
        wasm,
    })
}

fn crate_name(dir: &Path) -> Result<String> {
    let text = std::fs::read_to_string(dir.join("Cargo.toml"))
        .with_context(|| format!("{} has no Cargo.toml", dir.display()))?;
    let value: toml::Value = toml::from_str(&text)?;
    value
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .context("Cargo.toml has no package.name")
}
