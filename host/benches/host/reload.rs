//! The reload storm and a restart with ten bots:
//!
//! - `reload_*`: conversations receive events steadily while the versioned
//!   test bot is swapped 200 times (a new build by `reload` every tenth
//!   time, rollbacks between) while a backlog of events waits; each swap's time from
//!   the new version being current to the first event on it, every
//!   event's time from admission to commit, and
//!   afterwards every message's replies counted (lost: none, duplicated: a
//!   second one);
//! - `startup_ms_10_bots`: the release binary started on ten installed
//!   bots whose compiled code is in the cache, until `/healthz` answers.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aviary_host::app::App;
use aviary_host::config::{BotConfig, Config, QueueConfig};
use aviary_host::dispatch::Dispatcher;
use aviary_host::policy::{KvQuota, SendRate};
use aviary_host::router::Router;

use super::{percentile, Timed};
use crate::served::{Served, Setup};

/// Bytes of label after the marker's prefix in the versioned test bot.
const LABEL_BYTES: usize = 48;
const MARKER_PREFIX: &[u8] = b"AVIARY-BUILD-LABEL:";
/// Swaps in the storm: every tenth a new build (compiled and loaded by
/// `reload`), the others rollbacks to the build before.
const SWAPS: u32 = 200;
const CONVERSATIONS: usize = 16;
/// Events kept queued during the storm.
const BACKLOG: usize = 64;

/// What the storm measured.
pub struct Storm {
    pub swap_p99_us: f64,
    /// The same wait with no swap: from an instant to the next event.
    pub baseline_p99_us: f64,
    pub swap_max_us: f64,
    pub swaps_seen: u64,
    pub lost: usize,
    pub duplicated: usize,
    pub worst_event_ms: f64,
    pub events: usize,
}

/// The versioned bot's component with `label` in its marker.
pub fn build(hostile: &Path, label: &str) -> Result<Vec<u8>> {
    let mut bytes = std::fs::read(hostile.join("versioned.wasm"))
        .context("build the hostile bots first (`cargo xtask bench` does)")?;
    let at = bytes
        .windows(MARKER_PREFIX.len())
        .position(|w| w == MARKER_PREFIX)
        .context("no marker in versioned.wasm")?
        + MARKER_PREFIX.len();
    let mut padded = label.as_bytes().to_vec();
    padded.resize(LABEL_BYTES, b'_');
    bytes[at..at + LABEL_BYTES].copy_from_slice(&padded);
    Ok(bytes)
}

/// Installs build `label` of the versioned bot as bot `id`, version `n`.
fn install(plugins: &Path, hostile: &Path, id: &str, n: u32, label: &str) -> Result<()> {
    let bytes = build(hostile, label)?;
    aviary_host::files::write_atomically(&plugins.join(format!("{id}.wasm")), &bytes)?;
    let manifest = format!(
        "id = \"{id}\"\nversion = \"{n}.0.0\"\n\n[asks.kv]\nmax_bytes = 65536\nmax_keys = 1000\n\n[asks.send]\nper_conversation_per_minute = 6000\nper_bot_per_minute = 60000\n"
    );
    aviary_host::files::write_atomically(&plugins.join(format!("{id}.toml")), manifest.as_bytes())
}

fn grant() -> BotConfig {
    let mut bot = BotConfig::default();
    bot.grant.send = Some(SendRate {
        per_conversation_per_minute: u32::MAX,
        per_bot_per_minute: u32::MAX,
    });
    bot.grant.kv = Some(KvQuota {
        max_bytes: 1 << 30,
        max_keys: 1 << 20,
    });
    bot
}

/// The reload storm, in-process on `workers` workers.
pub fn storm(scratch: &Path, hostile: &Path, workers: usize) -> Result<Storm> {
    let plugins = scratch.join("reload-plugins");
    std::fs::create_dir_all(&plugins)?;
    install(&plugins, hostile, "versioned", 0, "b00")?;
    let mut config = Config {
        plugins_dir: plugins.clone(),
        data_dir: scratch.join("reload-data"),
        policies_dir: scratch.join("no-policies"),
        workers,
        watch: false,
        ..Config::default()
    };
    config.bots.insert("versioned".into(), grant());
    let app = App::start(config)?;
    let timed = Arc::new(Timed::new(Dispatcher::new(
        app.bots.clone(),
        app.store.clone(),
    )));
    let limits = QueueConfig {
        per_conversation: 100_000,
        total: 1_000_000,
    };
    let router = Router::start(workers, limits, timed.clone());
    let stop = AtomicBool::new(false);
    let submitted = std::sync::atomic::AtomicUsize::new(0);
    std::thread::scope(|s| -> Result<()> {
        let submitter = s.spawn(|| -> Result<()> {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let conversation = format!("r{}", n % CONVERSATIONS);
                let reservation = router
                    .reserve("versioned", &conversation, 2)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                let start = Instant::now();
                let events = app
                    .store
                    .accept_inbound("versioned", &conversation, "bench", &format!("m{n}"), &[])?
                    .events;
                let mut started = timed.started.lock();
                for event in &events {
                    started.insert(event.seq, start);
                }
                drop(started);
                submitted.fetch_add(events.len(), Ordering::Relaxed);
                reservation.push(events);
                n += 1;
                // Under load: a backlog of events always waits, so that
                // the first event after a swap is not one yet to arrive.
                while router.queued() >= BACKLOG && !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_micros(50));
                }
            }
            Ok(())
        });
        std::thread::sleep(Duration::from_millis(300));
        let swaps = swap_storm(&app, &plugins, hostile, &timed);
        stop.store(true, Ordering::Relaxed);
        submitter.join().expect("the submitter panicked")?;
        swaps
    })?;
    let submitted = submitted.load(Ordering::Relaxed) as u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    while timed.finished.load(Ordering::Acquire) < submitted {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the storm's events did not drain"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    app.store.flush()?;
    let (lost, duplicated) = count_replies(&app)?;
    let slot = app
        .bots
        .slot("versioned")
        .context("the versioned bot is gone")?;
    let mut latencies = std::mem::take(&mut *timed.latencies.lock());
    latencies.sort();
    let mut probed = std::mem::take(&mut *timed.probed.lock());
    probed.sort();
    Ok(Storm {
        swap_p99_us: slot.stats.swap_us.quantile(0.99).unwrap_or(0) as f64,
        swap_max_us: slot.stats.swap_us.quantile(1.0).unwrap_or(0) as f64,
        baseline_p99_us: percentile(&probed, 0.99).as_secs_f64() * 1e6,
        swaps_seen: slot.stats.swap_us.count(),
        lost,
        duplicated,
        worst_event_ms: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        events: latencies.len(),
    })
    .inspect(|storm| {
        let p50 = percentile(&latencies, 0.5).as_secs_f64() * 1e3;
        let swap = |q| slot_quantile(&app, q);
        eprintln!(
            "reload storm: {} events, p50 {p50:.2} ms, worst {:.1} ms; {} swaps timed, first event after one: p50 {} us, p90 {} us, max {} us; next event with no swap: p50 {:.0} us, p90 {:.0} us, p99 {:.0} us",
            storm.events, storm.worst_event_ms, storm.swaps_seen, swap(0.5), swap(0.9), swap(1.0),
            percentile(&probed, 0.5).as_secs_f64() * 1e6,
            percentile(&probed, 0.9).as_secs_f64() * 1e6,
            storm.baseline_p99_us
        );
    })
}

fn slot_quantile(app: &App, q: f64) -> u64 {
    app.bots
        .slot("versioned")
        .and_then(|slot| slot.stats.swap_us.quantile(q))
        .unwrap_or(0)
}

/// The swaps: a new build (compiled and loaded by `reload`) every tenth
/// time, starting with the first, rollbacks to the build before between.
/// Halfway between swaps a probe times the same thing with no swap: from an
/// instant to the next event's start.
fn swap_storm(app: &App, plugins: &Path, hostile: &Path, timed: &Timed) -> Result<()> {
    for n in 1..=SWAPS {
        if n % 10 == 1 {
            install(plugins, hostile, "versioned", n, &format!("b{n:03}"))?;
            app.bots.reload()?;
        } else {
            app.bots.rollback("versioned", None)?;
        }
        std::thread::sleep(Duration::from_millis(10));
        *timed.probe.lock() = Some(Instant::now());
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// Inbound messages without a reply, and replies beyond the first.
fn count_replies(app: &App) -> Result<(usize, usize)> {
    let (mut lost, mut duplicated) = (0, 0);
    for c in 0..CONVERSATIONS {
        let conversation = format!("r{c}");
        let all = app
            .store
            .messages_after("versioned", &conversation, None, usize::MAX)?;
        let mut replies = std::collections::HashMap::<String, usize>::new();
        for message in &all {
            if let Some(to) = &message.reply_to {
                *replies.entry(to.clone()).or_default() += 1;
            }
        }
        for message in all
            .iter()
            .filter(|m| m.reply_to.is_none() && m.sender == "bench")
        {
            match replies.get(&message.id) {
                None => lost += 1,
                Some(n) => duplicated += n - 1,
            }
        }
    }
    Ok((lost, duplicated))
}

/// Milliseconds from spawning the release binary on ten installed bots
/// (compiled code cached by a first start) to `/healthz` answering; the
/// median of three starts.
pub fn startup_ms_10_bots(scratch: &Path, hostile: &Path) -> Result<f64> {
    let dir = scratch.join("startup");
    let plugins = dir.join("plugins");
    std::fs::create_dir_all(&plugins)?;
    let mut config = String::new();
    for n in 0..10 {
        let id = format!("bot{n}");
        install(&plugins, hostile, &id, 1, &format!("s{n}"))?;
        config.push_str(&format!(
            "[bots.{id}.grant]\nmemory_mb = 16\n[bots.{id}.grant.kv]\nmax_bytes = 65536\nmax_keys = 1000\n[bots.{id}.grant.send]\nper_conversation_per_minute = 6000\nper_bot_per_minute = 60000\n"
        ));
    }
    std::fs::write(dir.join("aviary.toml"), config)?;
    let cold = start_once(&dir)?;
    let mut warm: Vec<f64> = (0..3).map(|_| start_once(&dir)).collect::<Result<_>>()?;
    warm.sort_by(f64::total_cmp);
    eprintln!(
        "startup with 10 bots: first {cold:.0} ms (compiling), then {warm:?} ms from the cache"
    );
    Ok(warm[1])
}

fn start_once(dir: &Path) -> Result<f64> {
    let served = Served::start(Setup {
        dir: dir.to_owned(),
        config: std::fs::read_to_string(dir.join("aviary.toml"))?,
        plugins: &dir.join("plugins"),
        policies: &dir.join("no-policies"),
        timeout: Duration::from_secs(10),
    })?;
    let bots = served
        .client
        .get(format!("{}/api/v1/bots", served.base))
        .send()?
        .text()?;
    anyhow::ensure!(
        bots.matches("\"running\"").count() == 10,
        "not all ten bots run: {bots}"
    );
    Ok(served.ready_in.as_secs_f64() * 1e3)
}
