//! The journal's on-disk frame, and the reading of a journal file that tells
//! a torn tail (dropped) from a corrupt record (refused).
//!
//! A frame, little-endian: magic `AVJ1`, payload length (u32), crc32 of
//! (seq bytes + payload) (u32), seq (u64), payload. Sequence numbers of
//! consecutive frames increase by one.

use std::path::{Path, PathBuf};

/// Every frame starts with these bytes.
pub const MAGIC: [u8; 4] = *b"AVJ1";
/// Bytes before the payload.
pub const HEADER: usize = 20;

/// Appends the frame of record `seq` to `out`.
pub fn encode(seq: u64, payload: &[u8], out: &mut Vec<u8>) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
}

/// The frame at the start of `bytes`, if a whole and intact one is there:
/// its seq, payload and length.
fn decode(bytes: &[u8]) -> Option<(u64, &[u8], usize)> {
    if bytes.len() < HEADER || bytes[..4] != MAGIC {
        return None;
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().ok()?);
    let seq_bytes = &bytes[12..20];
    let payload = bytes.get(HEADER..HEADER + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(seq_bytes);
    hasher.update(payload);
    (hasher.finalize() == crc).then(|| {
        let seq = u64::from_le_bytes(seq_bytes.try_into().expect("8 bytes"));
        (seq, payload, HEADER + len)
    })
}

/// Why a journal file cannot be read back.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error(
        "corrupt journal record in {} at offset {offset}: {why}; the records after it are \
         intact, so it is not a torn write. Restore the data directory from a backup, or move \
         the file away to start without the records from this one on",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        why: &'static str,
    },
    #[error("cannot read the journal file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What one journal file holds.
#[derive(Debug)]
pub struct FileRecords {
    /// (seq, payload) in file order.
    pub records: Vec<(u64, Vec<u8>)>,
    /// Where the intact frames end; anything after it is a torn tail.
    pub intact_len: u64,
    /// The file's length.
    pub len: u64,
}

/// Reads every frame of `path`. A frame that is cut short or damaged with
/// no intact frame after it is a torn tail (the write that a crash cut):
/// reading stops there. A damaged frame followed by an intact one, or a
/// sequence number out of order, is corruption and an error naming the
/// file and offset.
pub fn read_file(path: &Path) -> Result<FileRecords, ReadError> {
    let bytes = std::fs::read(path).map_err(|source| ReadError::Io {
        path: path.to_owned(),
        source,
    })?;
    let corrupt = |offset: usize, why| ReadError::Corrupt {
        path: path.to_owned(),
        offset: offset as u64,
        why,
    };
    let mut records = Vec::new();
    let mut offset = 0;
    while offset < bytes.len() {
        match decode(&bytes[offset..]) {
            Some((seq, payload, len)) => {
                if let Some(&(previous, _)) = records.last() {
                    if seq != previous + 1 {
                        return Err(corrupt(offset, "its sequence number is out of order"));
                    }
                }
                records.push((seq, payload.to_vec()));
                offset += len;
            }
            None if intact_frame_after(&bytes, offset) => {
                return Err(corrupt(offset, "its checksum or header does not match"));
            }
            None => break,
        }
    }
    Ok(FileRecords {
        records,
        intact_len: offset as u64,
        len: bytes.len() as u64,
    })
}

/// Whether an intact frame starts anywhere after `offset`.
fn intact_frame_after(bytes: &[u8], offset: usize) -> bool {
    (offset + 1..bytes.len().saturating_sub(HEADER - 1))
        .filter(|&at| bytes[at..at + 4] == MAGIC)
        .any(|at| decode(&bytes[at..]).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(records: &[(u64, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (seq, payload) in records {
            encode(*seq, payload, &mut out);
        }
        out
    }

    fn read(bytes: &[u8]) -> Result<FileRecords, ReadError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("1.log");
        std::fs::write(&path, bytes).unwrap();
        read_file(&path)
    }

    #[test]
    fn intact_frames_read_back_in_order() {
        let bytes = journal(&[(7, b"a"), (8, b""), (9, b"ccc")]);
        let file = read(&bytes).unwrap();
        let seqs: Vec<u64> = file.records.iter().map(|r| r.0).collect();
        assert_eq!(seqs, [7, 8, 9]);
        assert_eq!(file.records[2].1, b"ccc");
        assert_eq!(file.intact_len, bytes.len() as u64);
    }

    #[test]
    fn a_cut_or_garbage_tail_is_dropped() {
        let bytes = journal(&[(1, b"first"), (2, b"second")]);
        let cut = &bytes[..bytes.len() - 3];
        let file = read(cut).unwrap();
        assert_eq!(file.records.len(), 1);
        assert_eq!(file.intact_len, (HEADER + 5) as u64);
        let mut garbage = bytes.clone();
        garbage.extend_from_slice(&[0x5a; 37]);
        let file = read(&garbage).unwrap();
        assert_eq!(file.records.len(), 2);
        assert_eq!(file.intact_len, bytes.len() as u64);
    }

    #[test]
    fn a_damaged_frame_before_intact_ones_is_an_error_naming_its_offset() {
        let mut bytes = journal(&[(1, b"first"), (2, b"second"), (3, b"third")]);
        let second = HEADER + 5;
        bytes[second + HEADER + 1] ^= 0x01;
        let error = read(&bytes).unwrap_err().to_string();
        assert!(
            error.contains(&format!("1.log at offset {second}")),
            "{error}"
        );
        let mut bytes = journal(&[(1, b"first"), (3, b"third")]);
        bytes.truncate(bytes.len());
        let error = read(&bytes).unwrap_err().to_string();
        assert!(error.contains("out of order"), "{error}");
    }
}
