//! Writing files so that a reader (the plugins directory's watcher, a
//! restart) never sees half of one.

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to a hidden file beside `path`, syncs it and renames it
/// over `path`: a reader sees the old file or the whole new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        std::io::Write::write_all(&mut file, bytes)?;
        file.sync_data()?;
        std::fs::rename(&tmp, path)
    };
    write().with_context(|| format!("cannot write {}", path.display()))
}
