//! The append-only, hash-chained audit log: every load, unload, approval,
//! rejection and denial. Each record carries the sha256 of the previous
//! one, so changing or removing a record breaks the chain at that point.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{keys, now_ms, Op, Store};

/// Hash that the first record chains to.
const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// What the host records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// `load`, `unload`, `hold`, `approve`, `reject`, `deny`, `contain`, ...
    pub action: String,
    pub bot: String,
    /// The capability involved (`http`, `kv`, `memory`, ...), if any.
    pub capability: Option<String>,
    /// What was asked for: a URL, a key, a version, ...
    pub target: Option<String>,
    pub detail: String,
}

/// One stored record of the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: u64,
    pub at: u64,
    #[serde(flatten)]
    pub entry: AuditEntry,
    pub prev: String,
    pub hash: String,
}

/// Where `verify` found the chain broken.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChainBreak {
    pub seq: u64,
    pub reason: String,
}

impl AuditRecord {
    fn compute_hash(seq: u64, at: u64, entry: &AuditEntry, prev: &str) -> String {
        let body = serde_json::to_vec(&(seq, at, entry, prev)).expect("audit entries serialise");
        hex::encode(Sha256::digest(body))
    }
}

impl Store {
    /// Appends `entry` to the audit log, its target and detail cut to a
    /// bound (they may carry text a bot chose).
    pub fn audit(&self, mut entry: AuditEntry) -> Result<AuditRecord> {
        use crate::text::{cut, MAX_STORED_TEXT_BYTES, MAX_TARGET_BYTES};
        entry.target = entry.target.map(|t| cut(&t, MAX_TARGET_BYTES).into_owned());
        entry.detail = cut(&entry.detail, MAX_STORED_TEXT_BYTES).into_owned();
        // The chain's head (next seq, last hash) is read from the store once,
        // then kept here: appends happen on the event path.
        let mut head = self.inner.audit_head.lock();
        let (seq, prev) = match head.take() {
            Some(head) => head,
            None => self.read_audit_head()?,
        };
        let at = now_ms();
        let hash = AuditRecord::compute_hash(seq, at, &entry, &prev);
        let record = AuditRecord {
            seq,
            at,
            entry,
            prev,
            hash,
        };
        self.inner.state.write(vec![Op::Put(
            keys::audit(seq),
            serde_json::to_vec(&record)?,
        )]);
        *head = Some((seq + 1, record.hash.clone()));
        Ok(record)
    }

    /// The next sequence number and the last hash, from the stored chain.
    fn read_audit_head(&self) -> Result<(u64, String)> {
        match self
            .inner
            .state
            .scan_prefix_rev(keys::AUDIT)
            .next()
            .transpose()?
        {
            Some((_, value)) => {
                let record: AuditRecord =
                    serde_json::from_slice(&value).context("corrupt audit record")?;
                Ok((record.seq + 1, record.hash))
            }
            None => Ok((0, GENESIS.to_owned())),
        }
    }

    /// The last `count` audit records, oldest first.
    pub fn audit_tail(&self, count: usize) -> Result<Vec<AuditRecord>> {
        let mut records: Vec<AuditRecord> = self
            .inner
            .state
            .scan_prefix_rev(keys::AUDIT)
            .take(count)
            .map(|item| Ok(serde_json::from_slice(&item?.1).context("corrupt audit record")?))
            .collect::<Result<_>>()?;
        records.reverse();
        Ok(records)
    }

    /// Checks the whole chain; returns how many records are intact or the
    /// first place where it is broken.
    pub fn audit_verify(&self) -> Result<Result<u64, ChainBreak>> {
        let mut prev = GENESIS.to_owned();
        let mut expected_seq = 0;
        for item in self.inner.state.scan_prefix(keys::AUDIT) {
            let (key, value) = item?;
            let seq_in_key = keys::audit_seq(&key).unwrap_or(u64::MAX);
            let record: AuditRecord = match serde_json::from_slice(&value) {
                Ok(record) => record,
                Err(error) => {
                    return Ok(Err(ChainBreak {
                        seq: seq_in_key,
                        reason: format!("record is not valid JSON: {error}"),
                    }))
                }
            };
            let broken = |reason: String| {
                Ok(Err(ChainBreak {
                    seq: seq_in_key,
                    reason,
                }))
            };
            if record.seq != expected_seq || seq_in_key != expected_seq {
                return broken(format!(
                    "expected record {expected_seq}, found {} (a record was removed or inserted)",
                    record.seq
                ));
            }
            if record.prev != prev {
                return broken("its `prev` is not the hash of the record before it".into());
            }
            if AuditRecord::compute_hash(record.seq, record.at, &record.entry, &record.prev)
                != record.hash
            {
                return broken(
                    "its content does not match its hash (the record was altered)".into(),
                );
            }
            prev = record.hash;
            expected_seq += 1;
        }
        Ok(Ok(expected_seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(action: &str) -> AuditEntry {
        AuditEntry {
            action: action.into(),
            bot: "echo".into(),
            capability: Some("http".into()),
            target: None,
            detail: "x".into(),
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_an_altered_record_is_reported_where_it_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for action in ["load", "deny", "approve", "unload"] {
            store.audit(entry(action)).unwrap();
        }
        assert_eq!(store.audit_verify().unwrap(), Ok(4));
        assert_eq!(
            store
                .audit_tail(2)
                .unwrap()
                .iter()
                .map(|r| r.entry.action.as_str())
                .collect::<Vec<_>>(),
            ["approve", "unload"]
        );

        let key = keys::audit(2);
        let mut record: AuditRecord =
            serde_json::from_slice(&store.state().get(&key).unwrap().unwrap()).unwrap();
        record.entry.action = "deny".into();
        store
            .state()
            .write(vec![Op::Put(key, serde_json::to_vec(&record).unwrap())]);
        let broken = store.audit_verify().unwrap().unwrap_err();
        assert_eq!(broken.seq, 2);
        assert!(broken.reason.contains("altered"), "{}", broken.reason);
    }

    #[test]
    fn a_removed_record_breaks_the_chain() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for action in ["load", "deny", "unload"] {
            store.audit(entry(action)).unwrap();
        }
        store.state().write(vec![Op::Delete(keys::audit(1))]);
        assert_eq!(store.audit_verify().unwrap().unwrap_err().seq, 2);
    }
}
