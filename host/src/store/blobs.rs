//! Attachment bytes, stored content-addressed as files under the data
//! directory: `blobs/<2 hex>/<62 hex>`, named by the SHA-256 of the bytes.
//!
//! A blob is written in full and synced to disk before anything refers to
//! it (a message is acknowledged only after), so a crash leaves at worst an
//! unreferenced blob, never a reference to missing bytes. Which messages
//! refer to a blob is an index in the state (see [`keys::blob_ref`]);
//! [`Blobs::sweep`] deletes the blobs no message refers to once they are
//! older than a grace period (uploads whose message was refused, files a
//! bot made in an event that did not commit).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

use super::sha256_hex;

#[cfg(doc)]
use super::keys;

/// The blob files of one data directory.
pub struct Blobs {
    dir: PathBuf,
}

/// Whether `id` can name a blob: 64 lowercase hex digits.
pub fn is_blob_id(id: &str) -> bool {
    id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Blobs {
    /// The blobs under `data_dir/blobs`, created if absent; half-written
    /// files a crash left behind are removed.
    pub fn open(data_dir: &Path) -> Result<Blobs> {
        let dir = data_dir.join("blobs");
        let blobs = Blobs { dir };
        let tmp = blobs.tmp_dir();
        fs::create_dir_all(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        for entry in fs::read_dir(&tmp).with_context(|| format!("read {}", tmp.display()))? {
            let path = entry?.path();
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        }
        Ok(blobs)
    }

    fn tmp_dir(&self) -> PathBuf {
        self.dir.join("tmp")
    }

    /// Where blob `id` lives (whether or not it exists); `None` for an id
    /// that cannot name a blob.
    pub fn path(&self, id: &str) -> Option<PathBuf> {
        is_blob_id(id).then(|| self.dir.join(&id[..2]).join(&id[2..]))
    }

    /// Stores `bytes` durably and returns their id. Storing bytes already
    /// present writes nothing and restarts their grace period.
    pub fn put(&self, bytes: &[u8]) -> Result<String> {
        let id = sha256_hex(bytes);
        let path = self.path(&id).expect("a sha256 names a blob");
        if path.exists() {
            File::options()
                .write(true)
                .open(&path)
                .and_then(|file| file.set_modified(SystemTime::now()))
                .with_context(|| format!("touch {}", path.display()))?;
            return Ok(id);
        }
        let tmp = self.tmp_dir().join(format!("{id}.{}", std::process::id()));
        let mut file = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_data())
            .with_context(|| format!("write {}", tmp.display()))?;
        let parent = path.parent().expect("a blob path has a parent");
        fs::create_dir_all(parent).with_context(|| format!("create {}", parent.display()))?;
        if let Err(error) = fs::rename(&tmp, &path) {
            let _ = fs::remove_file(&tmp);
            return Err(error).with_context(|| format!("move a blob to {}", path.display()));
        }
        File::open(parent)
            .and_then(|dir| dir.sync_all())
            .with_context(|| format!("sync {}", parent.display()))?;
        Ok(id)
    }

    /// The bytes of blob `id`.
    pub fn read(&self, id: &str) -> Result<Vec<u8>> {
        let path = self
            .path(id)
            .with_context(|| format!("{id:?} is not a blob id"))?;
        fs::read(&path).with_context(|| format!("read {}", path.display()))
    }

    /// Deletes the blobs older than `grace` for which `referenced` says no;
    /// returns how many it deleted.
    pub fn sweep(
        &self,
        grace: Duration,
        mut referenced: impl FnMut(&str) -> Result<bool>,
    ) -> Result<usize> {
        let mut deleted = 0;
        let now = SystemTime::now();
        for (id, path) in self.list()? {
            let modified = path.metadata().and_then(|m| m.modified());
            let young = modified.is_ok_and(|at| now.duration_since(at).unwrap_or_default() < grace);
            if young || referenced(&id)? {
                continue;
            }
            fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
            deleted += 1;
        }
        Ok(deleted)
    }

    /// Every blob: its id and its path.
    fn list(&self) -> Result<Vec<(String, PathBuf)>> {
        let mut out = Vec::new();
        for shard in
            fs::read_dir(&self.dir).with_context(|| format!("read {}", self.dir.display()))?
        {
            let shard = shard?;
            let prefix = shard.file_name().to_string_lossy().into_owned();
            if prefix.len() != 2 || !shard.file_type()?.is_dir() {
                continue;
            }
            for entry in fs::read_dir(shard.path())? {
                let entry = entry?;
                let id = format!("{prefix}{}", entry.file_name().to_string_lossy());
                if is_blob_id(&id) {
                    out.push((id, entry.path()));
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blobs_are_named_by_their_content_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let id = blobs.put(b"a photo").unwrap();
        assert_eq!(id, sha256_hex(b"a photo"));
        assert_eq!(
            blobs.put(b"a photo").unwrap(),
            id,
            "the same bytes, the same blob"
        );
        assert_eq!(blobs.read(&id).unwrap(), b"a photo");
        assert!(blobs.path("../etc/passwd").is_none());
        assert!(blobs.read(&"0".repeat(64)).is_err());
    }

    #[test]
    fn sweep_keeps_referenced_and_young_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let kept = blobs.put(b"referenced").unwrap();
        let dropped = blobs.put(b"orphan").unwrap();
        assert_eq!(
            blobs.sweep(Duration::from_secs(60), |_| Ok(false)).unwrap(),
            0
        );
        let deleted = blobs.sweep(Duration::ZERO, |id| Ok(id == kept)).unwrap();
        assert_eq!(deleted, 1);
        assert!(blobs.read(&kept).is_ok());
        assert!(blobs.read(&dropped).is_err());
    }

    #[test]
    fn a_half_written_blob_is_removed_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path()).unwrap();
        let stale = blobs.tmp_dir().join("partial.1");
        fs::write(&stale, b"cut sh").unwrap();
        Blobs::open(dir.path()).unwrap();
        assert!(!stale.exists());
    }
}
