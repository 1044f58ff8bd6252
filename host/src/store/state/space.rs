//! The disk-space reserve: while the data directory's filesystem has less
//! than `min_free_bytes` free, the store accepts nothing new from outside,
//! so the events already accepted can still commit and nothing accepted is
//! lost to a full disk.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};

/// How long a free-space reading stays fresh.
const FRESH_MS: u64 = 50;

/// The filesystem of the data directory and its reserve.
pub struct Space {
    path: CString,
    min_free: u64,
    started: Instant,
    /// Milliseconds after `started` of the last reading, plus one.
    read_at: AtomicU64,
    free: AtomicU64,
    low: AtomicBool,
}

impl Space {
    /// The reserve of `min_free` bytes on the filesystem of `dir`.
    pub fn new(dir: &Path, min_free: u64) -> Result<Space> {
        let path = CString::new(dir.as_os_str().as_bytes())
            .context("the data directory's path holds a NUL byte")?;
        let space = Space {
            path,
            min_free,
            started: Instant::now(),
            read_at: AtomicU64::new(0),
            free: AtomicU64::new(u64::MAX),
            low: AtomicBool::new(false),
        };
        space.refresh();
        Ok(space)
    }

    /// Free bytes if under the reserve, from a reading at most 50 ms old.
    pub fn shortfall(&self) -> Option<(u64, u64)> {
        let now = self.started.elapsed().as_millis() as u64 + 1;
        if now.saturating_sub(self.read_at.load(Ordering::Relaxed)) > FRESH_MS {
            self.read_at.store(now, Ordering::Relaxed);
            self.refresh();
        }
        self.is_low()
            .then(|| (self.free.load(Ordering::Relaxed), self.min_free))
    }

    /// Whether the last reading was under the reserve.
    pub fn is_low(&self) -> bool {
        if self.low.load(Ordering::Relaxed) {
            // Read again: a waiter (the applier) must see space come back.
            self.refresh();
        }
        self.low.load(Ordering::Relaxed)
    }

    fn refresh(&self) {
        let free = free_bytes(&self.path).unwrap_or(u64::MAX);
        self.free.store(free, Ordering::Relaxed);
        self.low.store(free < self.min_free, Ordering::Relaxed);
    }
}

/// Bytes an unprivileged writer may still use on the filesystem of `path`.
fn free_bytes(path: &CString) -> Option<u64> {
    // SAFETY: `path` is a NUL-terminated string that outlives the call, and
    // `stat` is a plain-data struct that statvfs fills in.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the return value says whether `stat` was filled.
    let status = unsafe { libc::statvfs(path.as_ptr(), &mut stat) };
    (status == 0).then(|| stat.f_bavail as u64 * stat.f_frsize as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_the_disk_is_short_and_none_is_not() {
        let dir = tempfile::tempdir().unwrap();
        assert!(Space::new(dir.path(), 0).unwrap().shortfall().is_none());
        let (free, min) = Space::new(dir.path(), u64::MAX)
            .unwrap()
            .shortfall()
            .unwrap();
        assert!(free < min);
    }
}
