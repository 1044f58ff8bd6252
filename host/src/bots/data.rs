//! Bot data tables: reference data an admin imports from a CSV into a
//! bot's kv (a register, a price list), replaced whole and atomically while
//! the bot serves, and exported back.
//!
//! A bot declares its tables in its manifest:
//!
//! ```toml
//! [data.register]
//! key = "plate"                  # the column rows are found by
//! normalise = "alphanumeric-upper" # how keys compare ("none" by default)
//! audit = true                   # every read of a row goes to the audit log
//! ```
//!
//! Row `r` of table `t` is the kv key `data/<t>/<key>`, whose value is the
//! row as a JSON object of its columns; the bot reads it with `kv.get`.
//! A table counts against the bot's kv quota like any other key.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::policy::KvDelta;
use crate::runtime::LoadedBot;
use crate::store::{keys, Effects, Store};

/// One table a bot declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataTable {
    /// The column whose value finds a row.
    pub key: String,
    /// How that value becomes the kv key.
    #[serde(default)]
    pub normalise: KeyRule,
    /// Whether every read of a row is recorded in the audit log (who read
    /// which key, when): for personal data.
    #[serde(default)]
    pub audit: bool,
}

/// How a key column's value becomes the row's kv key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyRule {
    /// As it is.
    #[default]
    None,
    /// Letters and digits only, uppercased (`ab-123 cd` is `AB123CD`).
    AlphanumericUpper,
}

impl KeyRule {
    /// `value` as a key under this rule.
    pub fn apply(self, value: &str) -> String {
        match self {
            KeyRule::None => value.to_owned(),
            KeyRule::AlphanumericUpper => aviary_rules::kv::alphanumeric_upper(value),
        }
    }
}

/// The kv prefix of table `table`.
pub fn prefix(table: &str) -> String {
    format!("data/{table}/")
}

/// The table a kv key of a bot belongs to, if any.
pub fn table_of(key: &str) -> Option<&str> {
    key.strip_prefix("data/")?.split_once('/').map(|(t, _)| t)
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Imported {
    pub table: String,
    pub rows: usize,
    /// Rows of the table before, now gone or replaced.
    pub replaced: usize,
}

/// Replaces table `table` of `bot` with the rows of `csv` (a header line,
/// then one row per line), in one atomic write: a lookup sees the old table
/// or the new one, never a mix. Nothing changes when any row is refused.
pub fn import(store: &Store, bot: &LoadedBot, table: &str, csv: &[u8]) -> Result<Imported> {
    let id = &bot.manifest.id;
    let Some(spec) = bot.manifest.data.get(table) else {
        let declared: Vec<&String> = bot.manifest.data.keys().collect();
        bail!("bot `{id}` declares no data table `{table}` (it declares {declared:?}; see `[data.<table>]` in its manifest)");
    };
    let rows = parse(csv, spec)?;
    let full = |key: &str| keys::kv(id, &format!("{}{key}", prefix(table)));
    let old: Vec<(Vec<u8>, Vec<u8>)> = store
        .state()
        .scan_prefix(&full(""))
        .collect::<Result<_>>()?;
    let mut effects = Effects::default();
    let mut delta = KvDelta::default();
    let kv_prefix = keys::kv_prefix(id).len();
    for (key, value) in &old {
        effects.kv_writes.insert(key.clone(), None);
        delta.bytes -= (key.len() - kv_prefix + value.len()) as i64;
        delta.keys -= 1;
    }
    for (key, row) in &rows {
        let key = full(key);
        let value = serde_json::to_vec(row)?;
        delta.bytes += (key.len() - kv_prefix + value.len()) as i64;
        delta.keys += 1;
        effects.kv_writes.insert(key, Some(value));
    }
    bot.policy
        .kv
        .check(delta)
        .map_err(|why| anyhow::anyhow!("the table does not fit bot `{id}`'s kv: {why}"))?;
    store
        .commit_kv(&effects)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    store.flush()?;
    bot.policy.kv.apply(delta);
    Ok(Imported {
        table: table.to_owned(),
        rows: rows.len(),
        replaced: old.len(),
    })
}

/// The rows of `csv` by key, each a map of its columns, checked against
/// the kv rules and `spec`.
fn parse(csv: &[u8], spec: &DataTable) -> Result<BTreeMap<String, BTreeMap<String, String>>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(csv);
    let header: Vec<String> = reader
        .headers()
        .context("the CSV has no header line")?
        .iter()
        .map(str::to_owned)
        .collect();
    let Some(key_column) = header.iter().position(|h| *h == spec.key) else {
        bail!(
            "the CSV has no column `{}` (its header is {header:?})",
            spec.key
        );
    };
    let distinct: BTreeSet<&String> = header.iter().collect();
    anyhow::ensure!(
        distinct.len() == header.len(),
        "the CSV header names a column twice: {header:?}"
    );
    let mut rows = BTreeMap::new();
    for record in reader.records() {
        let record = record.context("the CSV is malformed")?;
        let line = record.position().map_or(0, |p| p.line());
        let key = spec.normalise.apply(&record[key_column]);
        aviary_rules::kv::check_key(&format!("{}{key}", prefix("t")))
            .map_err(|why| anyhow::anyhow!("line {line}: key `{key}`: {why}"))?;
        anyhow::ensure!(
            !key.is_empty(),
            "line {line}: the `{}` column is empty",
            spec.key
        );
        let row: BTreeMap<String, String> = header
            .iter()
            .cloned()
            .zip(record.iter().map(str::to_owned))
            .collect();
        aviary_rules::kv::check_value(&serde_json::to_vec(&row)?)
            .map_err(|why| anyhow::anyhow!("line {line}: {why}"))?;
        if rows.insert(key.clone(), row).is_some() {
            bail!("line {line}: key `{key}` is on an earlier line too");
        }
    }
    Ok(rows)
}

/// Table `table` of `bot` as CSV: the union of its rows' columns (the key
/// column first), one row per line in key order.
pub fn export(store: &Store, bot: &LoadedBot, table: &str) -> Result<String> {
    let id = &bot.manifest.id;
    let Some(spec) = bot.manifest.data.get(table) else {
        bail!("bot `{id}` declares no data table `{table}`");
    };
    let rows: Vec<BTreeMap<String, String>> = store
        .state()
        .scan_prefix(&keys::kv(id, &prefix(table)))
        .map(|item| Ok(serde_json::from_slice(&item?.1)?))
        .collect::<Result<_>>()?;
    let mut columns: Vec<String> = vec![spec.key.clone()];
    for row in &rows {
        columns.extend(
            row.keys()
                .filter(|c| !columns.contains(c))
                .cloned()
                .collect::<Vec<_>>(),
        );
    }
    let mut writer = csv::Writer::from_writer(Vec::new());
    writer.write_record(&columns)?;
    for row in &rows {
        writer.write_record(
            columns
                .iter()
                .map(|c| row.get(c).map_or("", String::as_str)),
        )?;
    }
    Ok(String::from_utf8(writer.into_inner()?)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> DataTable {
        DataTable {
            key: "plate".into(),
            normalise: KeyRule::AlphanumericUpper,
            audit: true,
        }
    }

    #[test]
    fn rows_are_keyed_by_their_normalised_column() {
        let rows = parse(
            b"plate,status\nab-123-cd,stolen\n FG 456 HJ , ok \n",
            &spec(),
        )
        .unwrap();
        assert_eq!(rows["AB123CD"]["status"], "stolen");
        assert_eq!(rows["FG456HJ"]["plate"], "FG 456 HJ");
        assert_eq!(rows["FG456HJ"]["status"], "ok");
    }

    #[test]
    fn bad_csv_names_the_line_and_the_problem() {
        let error = |csv: &str| format!("{:#}", parse(csv.as_bytes(), &spec()).unwrap_err());
        assert!(error("make,status\nx,y\n").contains("no column `plate`"));
        assert!(error("plate,status\nAB-123-CD,a\nab123cd,b\n").contains("line 3"));
        assert!(error("plate,status\n--,a\n").contains("empty"));
        assert!(error("plate,status\nAB,a,extra\n").contains("malformed"));
    }
}
