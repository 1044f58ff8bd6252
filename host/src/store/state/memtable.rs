//! Recent writes that the state engine does not hold yet. Every write lands
//! here first (that is what makes a commit cost microseconds); the applier
//! moves them into the engine in large batches and then evicts them. A read
//! looks here first and falls back to the engine.

use std::collections::BTreeMap;

use parking_lot::RwLock;

use super::batch::Op;

/// A key's latest write: the record that wrote it and the value (`None`
/// for a delete).
#[derive(Debug, Clone)]
struct Entry {
    seq: u64,
    value: Option<Vec<u8>>,
    /// The engine has never held the key: it was [`Op::New`] here and has
    /// not reached the engine since.
    fresh: bool,
}

/// What the memtable knows of a key.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Written recently: this value (`None`: deleted).
    Written(Option<Vec<u8>>),
    /// Not written since the engine got it: ask the engine.
    Unknown,
}

/// The memtable. Writers are serialised by the state's commit lock.
#[derive(Default)]
pub struct Memtable {
    map: RwLock<BTreeMap<Vec<u8>, Entry>>,
}

impl Memtable {
    /// Records the writes of record `seq`.
    pub fn write(&self, seq: u64, ops: Vec<Op>) {
        let mut map = self.map.write();
        for op in ops {
            let (key, value, new) = match op {
                Op::Put(key, value) => (key, Some(value), false),
                Op::New(key, value) => (key, Some(value), true),
                Op::Delete(key) => (key, None, false),
            };
            let fresh = new || map.get(&key).is_some_and(|entry| entry.fresh);
            map.insert(key, Entry { seq, value, fresh });
        }
    }

    /// Which of `writes` (of the durable records up to `applied`, in
    /// order) the engine must get: not one that a later write among them
    /// supersedes, nor the delete of a key the engine never held. A write
    /// superseded only by a later record still goes: that record may not
    /// be durable yet.
    pub fn for_engine(&self, writes: &[(u64, &Op)], applied: u64) -> Vec<bool> {
        let map = self.map.read();
        writes
            .iter()
            .map(|(seq, op)| match map.get(op.key()) {
                Some(entry) if entry.seq > *seq && entry.seq <= applied => false,
                Some(entry) if entry.seq == *seq => !(entry.fresh && entry.value.is_none()),
                _ => true,
            })
            .collect()
    }

    /// What the memtable knows of `key`.
    pub fn get(&self, key: &[u8]) -> Lookup {
        match self.map.read().get(key) {
            Some(entry) => Lookup::Written(entry.value.clone()),
            None => Lookup::Unknown,
        }
    }

    /// Writes from `start` on while keys start with `prefix`, in key order.
    pub fn range(&self, start: &[u8], prefix: &[u8]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        self.map
            .read()
            .range(start.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(key, entry)| (key.clone(), entry.value.clone()))
            .collect()
    }

    /// After the engine got `writes` (each with whether it was sent):
    /// forgets their keys where the latest write is at or before `applied`,
    /// and remembers that the engine now holds the keys that were sent.
    pub fn settle<'a>(&self, writes: impl Iterator<Item = (&'a [u8], bool)>, applied: u64) {
        let mut map = self.map.write();
        for (key, sent) in writes {
            match map.get_mut(key) {
                Some(entry) if entry.seq <= applied => {
                    map.remove(key);
                }
                Some(entry) if sent => entry.fresh = false,
                _ => {}
            }
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.read().len()
    }
}

/// Merges the memtable's writes over the engine's entries, both in key
/// order: a memtable write wins over the engine's value for its key, and a
/// delete hides it.
pub struct Merged<I: Iterator> {
    memory: std::iter::Peekable<std::vec::IntoIter<(Vec<u8>, Option<Vec<u8>>)>>,
    engine: std::iter::Peekable<I>,
    /// Both sides come in descending key order.
    descending: bool,
}

impl<I> Merged<I>
where
    I: Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>>,
{
    /// Merges two sides in ascending (or, if `descending`, descending) key order.
    pub fn new(memory: Vec<(Vec<u8>, Option<Vec<u8>>)>, engine: I, descending: bool) -> Merged<I> {
        Merged {
            memory: memory.into_iter().peekable(),
            engine: engine.peekable(),
            descending,
        }
    }
}

impl<I> Iterator for Merged<I>
where
    I: Iterator<Item = anyhow::Result<(Vec<u8>, Vec<u8>)>>,
{
    type Item = anyhow::Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let from_engine = match (self.memory.peek(), self.engine.peek()) {
                (None, None) => return None,
                (Some(_), None) => false,
                (None, Some(_)) => true,
                (Some(_), Some(Err(_))) => true,
                (Some((memory_key, _)), Some(Ok((engine_key, _)))) => {
                    if engine_key == memory_key {
                        self.engine.next();
                        false
                    } else {
                        (engine_key < memory_key) != self.descending
                    }
                }
            };
            if from_engine {
                return self.engine.next();
            }
            let (key, value) = self.memory.next().expect("peeked");
            if let Some(value) = value {
                return Some(Ok((key, value)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(items: &[(&str, Option<&str>)]) -> Vec<(Vec<u8>, Option<Vec<u8>>)> {
        items
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn ops(items: &[(&str, Option<&str>)]) -> Vec<Op> {
        pairs(items).into_iter().map(Op::from).collect()
    }

    #[test]
    fn writes_win_over_the_engine_and_deletes_hide_it() {
        let memtable = Memtable::default();
        memtable.write(
            1,
            ops(&[("a/2", Some("new")), ("a/3", None), ("a/5", Some("5"))]),
        );
        let engine = pairs(&[
            ("a/1", Some("1")),
            ("a/2", Some("old")),
            ("a/3", Some("3")),
            ("b/1", Some("x")),
        ])
        .into_iter()
        .map(|(k, v)| Ok((k, v.unwrap())));
        let merged: Vec<(Vec<u8>, Vec<u8>)> =
            Merged::new(memtable.range(b"a/", b"a/"), engine, false)
                .take_while(|item| item.as_ref().is_ok_and(|(k, _)| k.starts_with(b"a/")))
                .map(Result::unwrap)
                .collect();
        let expected = pairs(&[("a/1", Some("1")), ("a/2", Some("new")), ("a/5", Some("5"))]);
        let expected: Vec<_> = expected.into_iter().map(|(k, v)| (k, v.unwrap())).collect();
        assert_eq!(merged, expected);
    }

    #[test]
    fn settling_keeps_keys_written_again_later() {
        let memtable = Memtable::default();
        memtable.write(1, ops(&[("k", Some("1")), ("j", Some("1"))]));
        memtable.write(2, ops(&[("k", Some("2"))]));
        memtable.settle(
            [(b"k".as_slice(), true), (b"j".as_slice(), true)].into_iter(),
            1,
        );
        assert_eq!(memtable.get(b"k"), Lookup::Written(Some(b"2".to_vec())));
        assert_eq!(memtable.get(b"j"), Lookup::Unknown);
        memtable.settle([(b"k".as_slice(), true)].into_iter(), 2);
        assert_eq!(memtable.len(), 0);
    }

    #[test]
    fn the_engine_gets_neither_superseded_writes_nor_deletes_of_keys_it_never_had() {
        let memtable = Memtable::default();
        let new = Op::New(b"q/1".to_vec(), b"event".to_vec());
        let put = Op::Put(b"k".to_vec(), b"1".to_vec());
        let gone = Op::Delete(b"q/1".to_vec());
        let old = Op::Delete(b"old".to_vec());
        memtable.write(1, vec![new.clone(), put.clone()]);
        memtable.write(2, vec![gone.clone(), old.clone()]);
        let writes = [(1, &new), (1, &put), (2, &gone), (2, &old)];
        assert_eq!(memtable.for_engine(&writes, 2), [false, true, false, true]);
    }

    #[test]
    fn a_write_superseded_by_a_record_not_yet_applied_still_reaches_the_engine() {
        let memtable = Memtable::default();
        let new = Op::New(b"q/1".to_vec(), b"event".to_vec());
        let gone = Op::Delete(b"q/1".to_vec());
        memtable.write(1, vec![new.clone()]);
        memtable.write(2, vec![gone.clone()]);
        // Only record 1 is due: its write goes, and the later delete must
        // then reach the engine too.
        assert_eq!(memtable.for_engine(&[(1, &new)], 1), [true]);
        memtable.settle([(b"q/1".as_slice(), true)].into_iter(), 1);
        assert_eq!(memtable.for_engine(&[(2, &gone)], 2), [true]);
    }
}
