//! What `aviary plugin stats` shows of one bot since the host started:
//! events, errors, dead letters, handle times, memory high-water,
//! denials by capability and reads of its data tables (lookups in a
//! register). Counted by the dispatcher, shared by every version of the
//! bot.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::runtime::budget::Refusals;
use crate::store::AuditEntry;

/// Sub-buckets per power of two in [`Histogram`]: values are kept to
/// within 1/8 (12.5 %).
const SUB_BUCKETS: u32 = 8;
const BUCKETS: usize = 64 * SUB_BUCKETS as usize;

/// A lock-free histogram of microsecond values, log-linear buckets.
pub struct Histogram {
    counts: Box<[AtomicU64]>,
    total: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Histogram {
        Histogram {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            total: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// Records one value.
    pub fn record(&self, value: u64) {
        self.counts[bucket(value)].fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// The value below which `fraction` of the recorded values lie (the
    /// upper bound of its bucket), or `None` when nothing was recorded.
    pub fn quantile(&self, fraction: f64) -> Option<u64> {
        let total = self.total.load(Ordering::Relaxed);
        if total == 0 {
            return None;
        }
        let wanted = ((total as f64 * fraction).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count.load(Ordering::Relaxed);
            if seen >= wanted {
                return Some(upper_bound(index));
            }
        }
        Some(upper_bound(BUCKETS - 1))
    }
}

fn bucket(value: u64) -> usize {
    if value < u64::from(SUB_BUCKETS) {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros();
    let sub = (value >> (exponent - 3)) & u64::from(SUB_BUCKETS - 1);
    ((exponent - 2) * SUB_BUCKETS) as usize + sub as usize
}

fn upper_bound(index: usize) -> u64 {
    let index = index as u64;
    let sub_buckets = u64::from(SUB_BUCKETS);
    if index < sub_buckets {
        return index;
    }
    let exponent = index / sub_buckets + 2;
    let sub = index % sub_buckets;
    let width = 1u64 << (exponent - 3);
    ((sub_buckets + sub) << (exponent - 3)) + width - 1
}

/// The counters of one bot.
#[derive(Default)]
pub struct Stats {
    events: AtomicU64,
    errors: AtomicU64,
    dead_letters: AtomicU64,
    handle_us: Histogram,
    memory_high_water: AtomicUsize,
    denials: Mutex<BTreeMap<&'static str, u64>>,
    tables: Mutex<BTreeMap<String, TableReads>>,
    /// Time from a version becoming current to its first event, per swap
    /// that found events waiting.
    pub swap_us: Histogram,
    swaps: AtomicU64,
}

impl Stats {
    /// Counts one run of an event: how long it took, the memory it had,
    /// what the policy refused, and whether it failed.
    pub fn record_run(
        &self,
        elapsed: Duration,
        memory_bytes: usize,
        refusals: &Refusals,
        ok: bool,
    ) {
        self.events.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.handle_us.record(elapsed.as_micros() as u64);
        self.memory_high_water
            .fetch_max(memory_bytes, Ordering::Relaxed);
        if refusals.is_empty() {
            return;
        }
        let mut denials = self.denials.lock();
        for denial in refusals.itemised() {
            *denials.entry(denial.capability).or_default() += denial.count;
        }
        if refusals.unlisted > 0 {
            *denials.entry("unlisted").or_default() += refusals.unlisted;
        }
    }

    /// Counts the reads of audited data tables among what a run audited
    /// (they are audited whether or not the run commits).
    pub fn record_reads(&self, audit: &[AuditEntry]) {
        let mut tables = self.tables.lock();
        for (key, found) in audit
            .iter()
            .filter_map(crate::runtime::capabilities::kv::data_read)
        {
            let Some(table) = super::data::table_of(key) else {
                continue;
            };
            let reads = tables.entry(table.to_owned()).or_default();
            reads.reads += 1;
            reads.found += u64::from(found);
        }
    }

    /// Counts a swap to another version.
    pub fn record_swap(&self) {
        self.swaps.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an event that was dead-lettered.
    pub fn record_dead_letter(&self) {
        self.dead_letters.fetch_add(1, Ordering::Relaxed);
    }

    /// The figures as `aviary plugin stats` shows them.
    pub fn report(&self) -> StatsReport {
        StatsReport {
            events: self.events.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            dead_letters: self.dead_letters.load(Ordering::Relaxed),
            handle_p50_us: self.handle_us.quantile(0.50),
            handle_p99_us: self.handle_us.quantile(0.99),
            memory_high_water_bytes: self.memory_high_water.load(Ordering::Relaxed),
            denials: self
                .denials
                .lock()
                .iter()
                .map(|(k, v)| (k.to_string(), *v))
                .collect(),
            tables: self.tables.lock().clone(),
        }
    }
}

/// Reads of one audited data table: lookups, and how many found a row.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TableReads {
    pub reads: u64,
    pub found: u64,
}

/// A bot's counters since the host started (runs, retries included).
#[derive(Debug, Clone, Serialize)]
pub struct StatsReport {
    pub events: u64,
    pub errors: u64,
    pub dead_letters: u64,
    pub handle_p50_us: Option<u64>,
    pub handle_p99_us: Option<u64>,
    pub memory_high_water_bytes: usize,
    /// Refusals by capability (`send`, `kv`, `http`, `secret`, …).
    pub denials: BTreeMap<String, u64>,
    /// Reads of the bot's audited data tables, by table.
    pub tables: BTreeMap<String, TableReads>,
}

/// What `aviary plugin stats <bot>` shows.
#[derive(Debug, Clone, Serialize)]
pub struct BotStats {
    pub bot: String,
    /// The version serving (empty when none).
    pub version: String,
    pub status: &'static str,
    #[serde(flatten)]
    pub counters: StatsReport,
    pub kv_keys: i64,
    pub kv_bytes: i64,
    /// The grant's kv quota, when kv is granted.
    pub kv_max_keys: Option<u64>,
    pub kv_max_bytes: Option<u64>,
    /// Swaps to another version since the host started.
    pub swaps: u64,
    /// Of swaps that found events waiting: p99 of the time until the
    /// first of them started on the new version.
    pub swap_p99_us: Option<u64>,
}

impl super::Bots {
    /// The figures of bot `id` since the host started.
    pub fn stats(&self, id: &str) -> anyhow::Result<BotStats> {
        let slot = self.known(id)?;
        let running = slot.current();
        let info = super::listing::info(id, &slot);
        let used = running
            .as_ref()
            .map(|b| b.policy.kv.used())
            .unwrap_or_default();
        let quota = running.as_ref().and_then(|b| b.policy.grant.kv);
        Ok(BotStats {
            bot: id.into(),
            version: info.version,
            status: info.status,
            counters: slot.stats.report(),
            kv_keys: used.keys,
            kv_bytes: used.bytes,
            kv_max_keys: quota.map(|q| q.max_keys),
            kv_max_bytes: quota.map(|q| q.max_bytes),
            swaps: slot.stats.swaps.load(Ordering::Relaxed),
            swap_p99_us: slot.stats.swap_us.quantile(0.99),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_their_values_within_an_eighth() {
        for value in [
            0,
            1,
            7,
            8,
            9,
            15,
            16,
            100,
            1000,
            65_537,
            10_000_000,
            u64::MAX / 2,
        ] {
            let index = bucket(value);
            let upper = upper_bound(index);
            assert!(upper >= value, "{value} in bucket {index} up to {upper}");
            assert!(upper - value <= value / 8 + 1, "{value} kept as {upper}");
            if index > 0 {
                assert!(
                    upper_bound(index - 1) < value,
                    "{value} is past the bucket before"
                );
            }
        }
    }

    #[test]
    fn quantiles_follow_the_recorded_values() {
        let histogram = Histogram::default();
        assert_eq!(histogram.quantile(0.5), None);
        for value in 1..=1000 {
            histogram.record(value);
        }
        let p50 = histogram.quantile(0.5).unwrap();
        let p99 = histogram.quantile(0.99).unwrap();
        assert!((500..=563).contains(&p50), "p50 {p50}");
        assert!((990..=1023).contains(&p99), "p99 {p99}");
    }

    #[test]
    fn runs_count_errors_memory_and_denials_by_capability() {
        let stats = Stats::default();
        let mut refusals = Refusals::default();
        refusals.deny("send", "c1", || "rate".into());
        refusals.deny("send", "c2", || "rate".into());
        refusals.deny("kv", "k", || "quota".into());
        stats.record_run(
            Duration::from_micros(40),
            1 << 20,
            &Refusals::default(),
            true,
        );
        stats.record_run(Duration::from_micros(90), 3 << 20, &refusals, false);
        stats.record_dead_letter();
        let report = stats.report();
        assert_eq!(
            (report.events, report.errors, report.dead_letters),
            (2, 1, 1)
        );
        assert_eq!(report.memory_high_water_bytes, 3 << 20);
        assert_eq!(report.denials["send"], 2);
        assert_eq!(report.denials["kv"], 1);
        assert!(report.handle_p99_us.unwrap() >= 90);
    }

    #[test]
    fn reads_of_audited_tables_are_counted_by_table_and_found() {
        let read = |key: &str, detail: &str| AuditEntry {
            action: "data_read".into(),
            bot: "plates".into(),
            capability: Some("kv".into()),
            target: Some(key.into()),
            detail: detail.into(),
        };
        let stats = Stats::default();
        stats.record_reads(&[
            read("data/register/AB123CD", "by u in conversation c (found)"),
            read(
                "data/register/ZZ999ZZ",
                "by u in conversation c (not found)",
            ),
            AuditEntry {
                action: "external_call".into(),
                ..read("data/register/X", "(found)")
            },
        ]);
        stats.record_reads(&[read("data/owners/7", "outside any conversation (found)")]);
        let tables = stats.report().tables;
        assert_eq!(tables["register"], TableReads { reads: 2, found: 1 });
        assert_eq!(tables["owners"], TableReads { reads: 1, found: 1 });
        assert_eq!(tables.len(), 2);
    }
}
