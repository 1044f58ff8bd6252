//! The Matrix channel's figures, through the release binary and the `echo`
//! bot, against a real Synapse on loopback (the e2e tests' peer), with a
//! human driven over plain HTTP in a direct room with the bot:
//!
//! - `matrix_p50_ms`/`matrix_p99_ms`: [`LATENCY_MESSAGES`] messages one at
//!   a time, from the human's send to the bot's reply seen by the human's
//!   `/sync` long-poll;
//! - `matrix_msgs_per_s`: [`BURST`] messages sent as fast as Synapse takes
//!   them, from the first send to the last reply seen by the human; every
//!   message of the run is then checked to be answered exactly once;
//! - `matrix_host_cpu_ms_per_msg`: the host process's CPU time (user and
//!   system) over that burst, per message;
//! - `web_echo_p50_ms`/`web_echo_p99_ms`: the same one-at-a-time latency
//!   through the same host's web API (post, then long-poll until the reply
//!   is readable), so that the two channels compare as a ratio.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aviary_e2e::synapse::{timeline_events, Account, Synapse};
use serde_json::Value;

use crate::served::{Served, Setup};

/// Messages timed one at a time, on each channel.
const LATENCY_MESSAGES: usize = 100;
/// Messages sent at once for the throughput.
const BURST: usize = 200;
/// How long anything the benchmark waits for may take.
const WAIT: Duration = Duration::from_secs(120);
/// How long each of the human's `/sync` long-polls waits for news.
const SYNC_TIMEOUT_MS: u64 = 10_000;
const BOT_LOCALPART: &str = "echo-bot";
const BOT_PASSWORD: &str = "bench-echo-password";

/// What this benchmark measured.
pub struct MatrixFigures {
    pub msgs_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub host_cpu_ms_per_msg: f64,
    pub web_p50_ms: f64,
    pub web_p99_ms: f64,
}

/// Starts Synapse and a host with `echo` on a Matrix account, and measures.
pub fn figures(scratch: &Path, bots: &Path, policies: &Path) -> Result<MatrixFigures> {
    let synapse = Synapse::start();
    let human = synapse.register("human", "bench-human-password", false);
    synapse.register(BOT_LOCALPART, BOT_PASSWORD, false);
    let bot = synapse.user_id(BOT_LOCALPART);
    let served = Served::start(Setup {
        dir: scratch.join("matrix"),
        config: matrix_config(&synapse, human.user_id()),
        plugins: bots,
        policies,
        timeout: Duration::from_secs(30),
    })?;
    let mut room = Room::open(human, &bot)?;
    room.round_trip("warm up")?;

    let latencies = (0..LATENCY_MESSAGES)
        .map(|n| room.round_trip(&format!("ping {n}")))
        .collect::<Result<Vec<_>>>()?;
    let p50_ms = super::percentile_f64(latencies.clone(), 0.50);
    let p99_ms = super::percentile_f64(latencies, 0.99);
    eprintln!("matrix: one at a time, send to reply seen p50 {p50_ms:.1} ms, p99 {p99_ms:.1} ms");

    let host = host_pid(&scratch.join("matrix"))?;
    let cpu_before = cpu_time(host)?;
    let burst = room.burst()?;
    let cpu = cpu_time(host)? - cpu_before;
    let msgs_per_s = BURST as f64 / burst.as_secs_f64();
    let host_cpu_ms_per_msg = cpu.as_secs_f64() * 1e3 / BURST as f64;
    eprintln!(
        "matrix: {BURST} at once answered at {msgs_per_s:.1} msgs/s, host CPU {host_cpu_ms_per_msg:.2} ms a message"
    );

    let web = web_echo_ms(&served)?;
    let web_p50_ms = super::percentile_f64(web.clone(), 0.50);
    let web_p99_ms = super::percentile_f64(web, 0.99);
    eprintln!("matrix: the web API beside it, p50 {web_p50_ms:.1} ms, p99 {web_p99_ms:.1} ms");

    room.check_answered_once()?;
    Ok(MatrixFigures {
        msgs_per_s,
        p50_ms,
        p99_ms,
        host_cpu_ms_per_msg,
        web_p50_ms,
        web_p99_ms,
    })
}

/// The host's `aviary.toml`: `echo` on the bot's account, invites taken
/// from `inviter` only.
fn matrix_config(synapse: &Synapse, inviter: &str) -> String {
    format!(
        "[matrix]\nhomeserver = \"{}\"\nallow_inviters = [\"{inviter}\"]\nsync_timeout_ms = 5000\n\
         [[matrix.accounts]]\nbot = \"echo\"\nuser = \"{}\"\npassword = \"{BOT_PASSWORD}\"\n",
        synapse.base_url(),
        synapse.user_id(BOT_LOCALPART),
    )
}

/// The human's direct room with the bot, and the human's `/sync` position
/// in it: what the human has seen so far.
#[derive(Clone)]
struct Room {
    human: Account,
    bot: String,
    id: String,
    /// The `next_batch` of the human's last sync.
    since: String,
    /// The texts the human sent, to check each was answered once.
    sent: Vec<String>,
}

impl Room {
    /// Creates a direct room from `human` to `bot` and waits for the bot
    /// (which accepts the invite) to join.
    fn open(human: Account, bot: &str) -> Result<Room> {
        let since = next_batch(&human.sync(None, 0))?;
        let id = human.create_direct_room(bot);
        let mut room = Room {
            human,
            bot: bot.to_owned(),
            id,
            since,
            sent: Vec::new(),
        };
        let deadline = Instant::now() + WAIT;
        while !room.news()?.iter().any(|e| room.is_bot_join(e)) {
            anyhow::ensure!(Instant::now() < deadline, "the bot never joined");
        }
        Ok(room)
    }

    /// Whether `event` is the bot joining.
    fn is_bot_join(&self, event: &Value) -> bool {
        event["type"] == "m.room.member"
            && event["state_key"] == self.bot.as_str()
            && event["content"]["membership"] == "join"
    }

    /// Sends `text` as the human; remembered for [`check_answered_once`](Self::check_answered_once).
    fn send(&mut self, text: &str) {
        self.human.send_text(&self.id, text);
        self.sent.push(text.to_owned());
    }

    /// Sends `text` and long-polls until the bot's echo of it arrives; the
    /// time between, in ms.
    fn round_trip(&mut self, text: &str) -> Result<f64> {
        let sent = Instant::now();
        self.send(text);
        let echo = format!("echo: {text}");
        while !self.bot_said()?.contains(&echo) {
            anyhow::ensure!(sent.elapsed() < WAIT, "no echo of {text:?} within {WAIT:?}");
        }
        Ok(sent.elapsed().as_secs_f64() * 1e3)
    }

    /// Sends [`BURST`] messages one after the other, as fast as Synapse
    /// takes them, while another thread long-polls for their echoes; from
    /// the first send to the last echo seen.
    fn burst(&mut self) -> Result<Duration> {
        let texts: Vec<String> = (0..BURST).map(|n| format!("burst {n}")).collect();
        let mut awaited: Vec<String> = texts.iter().map(|t| format!("echo: {t}")).collect();
        let mut watcher = self.clone();
        let started = Instant::now();
        let last = std::thread::scope(|s| {
            let watching = s.spawn(move || -> Result<(Instant, String)> {
                while !awaited.is_empty() {
                    let said = watcher.bot_said()?;
                    awaited.retain(|echo| !said.contains(echo));
                    anyhow::ensure!(
                        started.elapsed() < WAIT,
                        "{} echoes missing after {WAIT:?}",
                        awaited.len()
                    );
                }
                Ok((Instant::now(), watcher.since))
            });
            for text in &texts {
                self.send(text);
            }
            // Beside the figure: how much of it is Synapse taking the sends.
            let took = started.elapsed().as_secs_f64();
            eprintln!("matrix: Synapse took the {BURST} sends in {took:.1} s");
            watching.join().expect("the watcher panicked")
        });
        let (last, since) = last?;
        self.since = since;
        Ok(last - started)
    }

    /// The bodies of the bot's messages among the next events the human sees.
    fn bot_said(&mut self) -> Result<Vec<String>> {
        Ok(self
            .news()?
            .iter()
            .filter(|e| e["type"] == "m.room.message" && e["sender"] == self.bot.as_str())
            .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
            .collect())
    }

    /// One `/sync` long-poll of the human since the last: the room's new
    /// events, oldest first, those a `limited` timeline left out fetched
    /// from `/messages`.
    fn news(&mut self) -> Result<Vec<Value>> {
        let sync = self.human.sync(Some(&self.since), SYNC_TIMEOUT_MS);
        let timeline = &sync["rooms"]["join"][&self.id]["timeline"];
        let mut events = Vec::new();
        if timeline["limited"] == true {
            let gap_end = timeline["prev_batch"].as_str().context("no prev_batch")?;
            events = self
                .human
                .messages_between(&self.id, Some(gap_end), Some(&self.since));
        }
        events.extend(timeline_events(&sync, &self.id));
        self.since = next_batch(&sync)?;
        Ok(events)
    }

    /// Checks that the bot answered every message the human sent exactly
    /// once, reading the whole room back.
    fn check_answered_once(&self) -> Result<()> {
        let mut answers: BTreeMap<String, usize> = BTreeMap::new();
        for event in self.human.messages(&self.id) {
            if event["type"] == "m.room.message" && event["sender"] == self.bot.as_str() {
                let body = event["content"]["body"].as_str().unwrap_or_default();
                *answers.entry(body.to_owned()).or_default() += 1;
            }
        }
        for text in &self.sent {
            let times = answers.remove(&format!("echo: {text}")).unwrap_or(0);
            anyhow::ensure!(times == 1, "{text:?} was answered {times} times");
        }
        anyhow::ensure!(answers.is_empty(), "answers to nothing sent: {answers:?}");
        Ok(())
    }
}

/// The `next_batch` token of a `/sync` answer.
fn next_batch(sync: &Value) -> Result<String> {
    Ok(sync["next_batch"]
        .as_str()
        .context("no next_batch in the sync")?
        .to_owned())
}

/// [`LATENCY_MESSAGES`] post-to-reply times (ms) of one web chat client of
/// the served host's echo bot.
fn web_echo_ms(served: &Served) -> Result<Vec<f64>> {
    let client = super::echo_client(
        reqwest::Client::new(),
        served.base.clone(),
        "bench-web".into(),
        |sent| sent < LATENCY_MESSAGES,
    );
    let latencies = super::two_thread_runtime()?.block_on(client)?;
    Ok(latencies.iter().map(|d| d.as_secs_f64() * 1e3).collect())
}

/// The pid of the `aviary up` started in `dir`: the process whose command
/// line names its `aviary.toml` ([`Served`] keeps its child to itself).
fn host_pid(dir: &Path) -> Result<u32> {
    let config = dir.join("aviary.toml");
    let config = config.to_string_lossy();
    for entry in std::fs::read_dir("/proc")? {
        let entry = entry?;
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline
            .split(|&b| b == 0)
            .any(|arg| arg == config.as_bytes())
        {
            return Ok(pid);
        }
    }
    anyhow::bail!("no process runs with {config}")
}

/// The CPU time, user and system, that process `pid` has used so far,
/// from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields 14 and 15, counted after the command name, which may hold spaces.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .context("no command name in the stat")?
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    // SAFETY: sysconf reads a constant of the system and has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    anyhow::ensure!(per_second > 0, "no clock ticks per second");
    Ok(Duration::from_secs_f64(ticks as f64 / per_second as f64))
}
