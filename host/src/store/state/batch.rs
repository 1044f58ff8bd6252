//! A journal record's payload: the writes of one atomic batch.

use anyhow::{bail, Result};

use crate::store::codec::{Reader, Writer};

/// One write of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Sets the key's value.
    Put(Vec<u8>, Vec<u8>),
    /// Sets the value of a key that the writer knows was never written
    /// before (its name holds a fresh id). If it is deleted again before
    /// the engine got it, the engine never hears of it.
    New(Vec<u8>, Vec<u8>),
    /// Removes the key.
    Delete(Vec<u8>),
}

impl Op {
    /// The key it writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put(key, _) | Op::New(key, _) | Op::Delete(key) => key,
        }
    }

    /// The value it leaves, `None` for a delete.
    pub fn value(&self) -> Option<&[u8]> {
        match self {
            Op::Put(_, value) | Op::New(_, value) => Some(value),
            Op::Delete(_) => None,
        }
    }
}

/// A key and its new value, `None` to delete.
impl From<(Vec<u8>, Option<Vec<u8>>)> for Op {
    fn from((key, value): (Vec<u8>, Option<Vec<u8>>)) -> Op {
        match value {
            Some(value) => Op::Put(key, value),
            None => Op::Delete(key),
        }
    }
}

const VERSION: u8 = 1;
const PUT: u8 = 1;
const DELETE: u8 = 2;
const NEW: u8 = 3;

/// The payload of one journal record holding `ops`.
pub fn encode(ops: &[Op]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|op| 9 + op.key().len() + op.value().map_or(0, <[u8]>::len))
        .sum();
    let mut writer = Writer::new(VERSION, size + 4);
    writer.u32(ops.len() as u32);
    for op in ops {
        match op {
            Op::Put(key, value) => writer.u8(PUT).bytes(key).bytes(value),
            Op::New(key, value) => writer.u8(NEW).bytes(key).bytes(value),
            Op::Delete(key) => writer.u8(DELETE).bytes(key),
        };
    }
    writer.finish()
}

/// The writes of a journal record's payload.
pub fn decode(payload: &[u8]) -> Result<Vec<Op>> {
    let mut reader = Reader::new(payload, "journal batch", VERSION)?;
    let count = reader.u32()? as usize;
    let mut ops = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let op = reader.u8()?;
        let key = reader.bytes()?.to_vec();
        ops.push(match op {
            PUT => Op::Put(key, reader.bytes()?.to_vec()),
            NEW => Op::New(key, reader.bytes()?.to_vec()),
            DELETE => Op::Delete(key),
            other => bail!("journal batch holds an unknown write kind {other}"),
        });
    }
    reader.end()?;
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back() {
        let ops = vec![
            Op::Put(b"a".to_vec(), b"1".to_vec()),
            Op::New(b"n".to_vec(), b"2".to_vec()),
            Op::Delete(b"b".to_vec()),
        ];
        assert_eq!(decode(&encode(&ops)).unwrap(), ops);
        assert!(decode(&encode(&ops)[..6]).is_err());
    }
}
