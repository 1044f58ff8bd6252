//! Start-up: replays into the engine the journal records it lacks, then
//! flushes it and clears the journal, so each run starts a fresh file.

use std::path::Path;

use anyhow::{bail, Context, Result};

use super::applier::decode;
use super::engine::Engine;
use super::frame::{self, ReadError};
use super::journal;

/// Records replayed per engine batch.
const REPLAY_CHUNK: usize = 4096;

/// Replays the journal in `dir` into `engine`; returns the next seq.
pub fn recover(dir: &Path, engine: &Engine) -> Result<u64> {
    let applied = engine.applied()?;
    let mut last = applied;
    let mut previous: Option<u64> = None;
    let files = journal::files(dir)?;
    let mut chunk = Vec::new();
    for (i, (first, path)) in files.iter().enumerate() {
        let file = frame::read_file(path)?;
        let corrupt = |offset, why| ReadError::Corrupt {
            path: path.clone(),
            offset,
            why,
        };
        if file.intact_len < file.len {
            if i + 1 < files.len() {
                return Err(corrupt(
                    file.intact_len,
                    "a torn record in a journal file that is not the newest",
                )
                .into());
            }
            tracing::warn!(
                "dropped a torn tail of {} bytes at offset {} of {} (a write cut short by a \
                 crash, never acknowledged)",
                file.len - file.intact_len,
                file.intact_len,
                path.display()
            );
        }
        if let Some(&(seq, _)) = file.records.first() {
            if seq != *first || previous.is_some_and(|p| seq != p + 1) {
                return Err(corrupt(0, "records are missing before it").into());
            }
        }
        previous = file.records.last().map(|r| r.0).or(previous);
        for (seq, payload) in file.records.into_iter().filter(|r| r.0 > applied) {
            if seq != last + 1 {
                bail!(
                    "the journal in {} goes on at record {seq} but the state holds only up to \
                     {last}: records are missing; restore the data directory from a backup",
                    dir.display()
                );
            }
            last = seq;
            chunk.push((seq, payload));
            if chunk.len() >= REPLAY_CHUNK {
                replay(engine, &std::mem::take(&mut chunk))?;
            }
        }
    }
    replay(engine, &chunk)?;
    if last > applied {
        tracing::info!(
            records = last - applied,
            "replayed the journal into the state"
        );
    }
    engine
        .persist()
        .context("cannot sync the state after replaying the journal")?;
    for (_, path) in &files {
        std::fs::remove_file(path).with_context(|| {
            format!("cannot remove the replayed journal file {}", path.display())
        })?;
    }
    Ok(last.max(previous.unwrap_or(0)) + 1)
}

fn replay(engine: &Engine, records: &[(u64, Vec<u8>)]) -> Result<()> {
    let Some(&(last, _)) = records.last() else {
        return Ok(());
    };
    let decoded = decode(records)?;
    engine.apply(decoded.iter().flat_map(|(_, ops)| ops.iter()), last)
}
