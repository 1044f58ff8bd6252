//! A journal record's payload: the writes of one atomic batch.

use anyhow::{bail, Result};

use crate::store::codec::{Reader, Writer};

/// One write: a key and its new value, `None` to delete.
pub type Op = (Vec<u8>, Option<Vec<u8>>);

const VERSION: u8 = 1;
const PUT: u8 = 1;
const DELETE: u8 = 2;

pub fn encode(ops: &[Op]) -> Vec<u8> {
    let size: usize = ops
        .iter()
        .map(|(k, v)| 9 + k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let mut writer = Writer::new(VERSION, size + 4);
    writer.u32(ops.len() as u32);
    for (key, value) in ops {
        match value {
            Some(value) => writer.u8(PUT).bytes(key).bytes(value),
            None => writer.u8(DELETE).bytes(key),
        };
    }
    writer.finish()
}

pub fn decode(payload: &[u8]) -> Result<Vec<Op>> {
    let mut reader = Reader::new(payload, "journal batch", VERSION)?;
    let count = reader.u32()? as usize;
    let mut ops = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let op = reader.u8()?;
        let key = reader.bytes()?.to_vec();
        match op {
            PUT => ops.push((key, Some(reader.bytes()?.to_vec()))),
            DELETE => ops.push((key, None)),
            other => bail!("journal batch holds an unknown write kind {other}"),
        }
    }
    reader.end()?;
    Ok(ops)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_read_back() {
        let ops = vec![(b"a".to_vec(), Some(b"1".to_vec())), (b"b".to_vec(), None)];
        assert_eq!(decode(&encode(&ops)).unwrap(), ops);
        assert!(decode(&encode(&ops)[..6]).is_err());
    }
}
