//! Shared set-up for the end-to-end tests: start the real `aviary` binary on
//! its own port and data directory, talk to it over HTTP, stop it hard.
//!
//! - [`Host::start`] (or [`Host::start_with_plugins`] for another plugins
//!   dir) writes a config into a fresh temp dir, spawns
//!   `aviary up` with its output in `<dir>/host.log`, and waits for
//!   `/healthz` (failing with the log when the host does not come up).
//! - [`Host::kill`] sends SIGKILL; [`Host::restart`] starts the host again on
//!   the same data dir; dropping a [`Host`] kills it.
//!   [`Host::restart_expecting_failure`] starts it where it must refuse.
//! - Fault injection: [`Host::start_on_tmpfs`] gives the host a small data
//!   filesystem that [`fill_disk`] fills; [`Host::newest_journal_file`] and
//!   [`journal_frames`] find the store's write-ahead journal records to cut
//!   or corrupt.
//! - Checks after a crash: [`Flood`] posts from many threads recording every
//!   [`Acked`] message; [`Stored`] reads what the conversations hold and
//!   asserts nothing acknowledged is lost nor answered twice.
//! - [`Conversation`] wraps the message endpoints of one conversation.
//!   The host runs with a `web.conversation_secret` (the harness adds one
//!   unless the config sets it), so the harness acts as a website backend:
//!   it names each conversation and mints a token per sender on first use
//!   (tokens are durable, so they outlive restarts). [`Host::start_open`]
//!   starts a host without a secret, where only raw requests work.
//!
//! Peers on loopback: [`helpdesk`] (django-helpdesk) and [`synapse`] (a
//! Matrix homeserver).
//!
//! Where things are, overridable through the environment:
//! `AVIARY_BIN` (default `<workspace>/target/debug/aviary`) and
//! `AVIARY_BOTS_DIR` (default `<workspace>/target/bots`).

pub mod helpdesk;
mod peer;
pub mod photos;
pub mod synapse;

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;
use serde::Deserialize;
use serde_json::{json, Value};

/// How long a host may take to answer `/healthz` after being spawned.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long [`Conversation::wait_for_reply`] waits for a bot's answer.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// The conversation secret the harness gives a host whose config sets none.
pub const CONVERSATION_SECRET: &str = "e2e-conversation-secret-0123456789";
/// The user whose token the harness reads conversations with.
pub const READER: &str = "e2e-reader";

/// Tokens minted so far, by (bot, conversation, user).
type Tokens = Arc<Mutex<HashMap<(String, String, String), String>>>;

/// The repository root: the parent of this crate's directory.
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The `aviary` binary under test.
pub fn aviary_bin() -> PathBuf {
    std::env::var_os("AVIARY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/debug/aviary"))
}

/// The directory of built bots (`<id>.wasm` + `<id>.toml`).
pub fn bots_dir() -> PathBuf {
    std::env::var_os("AVIARY_BOTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/bots"))
}

/// The directory of built hostile test bots (`AVIARY_HOSTILE_DIR`, default
/// `<workspace>/target/hostile`).
pub fn hostile_dir() -> PathBuf {
    std::env::var_os("AVIARY_HOSTILE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_dir().join("target/hostile"))
}

/// The policy that grants the hostile `file-snoop` bot what its manifest
/// asks (1 KiB of attachments, vision, sends), so that it loads rather
/// than being held for approval.
pub const FILE_SNOOP_POLICY: &str = "memory_mb = 64\ntimeout_ms = 500\nwall_ms = 30000\nattachment_bytes = 1024\nvision = true\n[send]\nper_conversation_per_minute = 600\nper_bot_per_minute = 6000\n";

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// One message as the web API returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Message {
    pub id: String,
    pub sender: String,
    pub text: String,
    /// `"in"` (to the bot) or `"out"` (from the bot).
    pub direction: String,
    /// Unix milliseconds.
    pub at: u64,
    pub reply_to: Option<String>,
    /// Files it carries: `id`, `name`, `media_type`, `size`, `url`.
    #[serde(default)]
    pub attachments: Vec<Value>,
}

impl Message {
    pub fn is_in(&self) -> bool {
        self.direction == "in"
    }

    pub fn is_out(&self) -> bool {
        self.direction == "out"
    }
}

/// An HTTP answer whose body is JSON (or `Value::Null` when it is not).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Value,
    pub raw: String,
}

impl Answer {
    /// Reads a response into an answer.
    pub fn read(response: Response) -> Answer {
        let status = response.status();
        let raw = response.text().unwrap_or_default();
        let body = serde_json::from_str(&raw).unwrap_or(Value::Null);
        Answer { status, body, raw }
    }

    /// The `error` string of an error answer; panics when there is none.
    pub fn error(&self) -> &str {
        match self.body.get("error").and_then(Value::as_str) {
            Some(message) if !message.is_empty() => message,
            _ => panic!(
                "expected a JSON body {{\"error\": \"...\"}} with status {}, got {:?}",
                self.status, self.raw
            ),
        }
    }
}

/// A running `aviary up`, with its own temp dir (config, data, log) and port.
pub struct Host {
    dir: tempfile::TempDir,
    port: u16,
    plugins_dir: PathBuf,
    child: Option<Child>,
    client: Client,
    secret: Option<String>,
    tokens: Tokens,
    /// Where the current run's output starts in `host.log`.
    run_start: u64,
    /// The filesystem mounted at the data dir, if the host has its own.
    tmpfs: Option<Tmpfs>,
}

impl Host {
    /// Starts a host with `config_toml` as its `aviary.toml` (may be empty).
    /// The listen address, data dir and plugins dir are given on the command
    /// line, so the config need not (and should not) set them.
    pub fn start(config_toml: &str) -> Host {
        let bots = bots_dir();
        assert!(
            bots.join("echo.wasm").exists(),
            "no echo bot in {}: build the bots (`cargo xtask test` does) or set AVIARY_BOTS_DIR",
            bots.display()
        );
        Host::start_with_plugins(config_toml, &bots)
    }

    /// Like [`start`](Self::start) with another plugins directory.
    pub fn start_with_plugins(config_toml: &str, plugins_dir: &Path) -> Host {
        let (config, secret) = with_conversation_secret(config_toml);
        Host::launch_with(&config, plugins_dir, Some(secret))
    }

    /// Like [`start`](Self::start), with the data dir on a tmpfs of `bytes`
    /// bytes of its own, mounted before the launch and unmounted when the
    /// host is dropped (after the kill), so that a test can fill it (see
    /// [`fill_disk`]). Mounting needs root; the test panics saying so
    /// otherwise.
    pub fn start_on_tmpfs(config_toml: &str, bytes: u64) -> Host {
        let (config, secret) = with_conversation_secret(config_toml);
        let mut host = Host::unlaunched(&config, &bots_dir(), Some(secret));
        host.tmpfs = Some(Tmpfs::mount(&host.data_dir(), bytes));
        host.launch(None);
        host
    }

    /// Starts a host with no conversation secret: anyone may create a
    /// conversation, and [`Host::conversation`] cannot mint tokens.
    pub fn start_open(config_toml: &str) -> Host {
        Host::launch_with(config_toml, &bots_dir(), None)
    }

    fn launch_with(config_toml: &str, plugins_dir: &Path, secret: Option<String>) -> Host {
        let mut host = Host::unlaunched(config_toml, plugins_dir, secret);
        host.launch(None);
        host
    }

    /// A host with its temp dir, config and data dir, not started yet.
    fn unlaunched(config_toml: &str, plugins_dir: &Path, secret: Option<String>) -> Host {
        let dir = tempfile::Builder::new()
            .prefix("aviary-e2e-")
            .tempdir()
            .expect("create a temp dir");
        std::fs::write(dir.path().join("aviary.toml"), config_toml).expect("write aviary.toml");
        std::fs::create_dir_all(dir.path().join("data")).expect("create the data dir");
        let client = Client::builder()
            .timeout(Duration::from_secs(90))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("build the HTTP client");
        Host {
            dir,
            port: 0,
            plugins_dir: plugins_dir.to_path_buf(),
            child: None,
            client,
            secret,
            tokens: Tokens::default(),
            run_start: 0,
            tmpfs: None,
        }
    }

    /// The conversation secret the host runs with, if any.
    pub fn secret(&self) -> Option<&str> {
        self.secret.as_deref()
    }

    /// `POST /api/v1/bots/{bot}/conversations` with `body` (none when
    /// `None`) and `Authorization: Bearer <bearer>` when given.
    pub fn create_conversation(
        &self,
        bot: &str,
        body: Option<Value>,
        bearer: Option<&str>,
    ) -> Answer {
        let mut request = self
            .client
            .post(self.url(&format!("/api/v1/bots/{bot}/conversations")));
        if let Some(body) = body {
            request = request.json(&body);
        }
        if let Some(bearer) = bearer {
            request = request.bearer_auth(bearer);
        }
        Answer::read(
            request
                .send()
                .unwrap_or_else(|e| panic!("POST /api/v1/bots/{bot}/conversations: {e}")),
        )
    }

    /// The temp dir that holds `aviary.toml`, `data/` and `host.log`.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The plugins directory the host loads bots from.
    pub fn plugins_dir(&self) -> &Path {
        &self.plugins_dir
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("host.log")
    }

    /// Everything the host printed so far (all runs).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// What the latest run of the host printed (from its `===== aviary up`
    /// line on).
    pub fn run_log(&self) -> String {
        let log = std::fs::read(self.log_path()).unwrap_or_default();
        let start = (self.run_start as usize).min(log.len());
        String::from_utf8_lossy(&log[start..]).into_owned()
    }

    /// `<data_dir>/journal`, the store's write-ahead journal.
    pub fn journal_dir(&self) -> PathBuf {
        self.data_dir().join("journal")
    }

    /// The journal's files (`<first seq as 20 digits>.log`), oldest first.
    pub fn journal_files(&self) -> Vec<PathBuf> {
        let dir = self.journal_dir();
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| {
            panic!(
                "cannot read the journal dir {}: {e} (does this host write a journal?)",
                dir.display()
            )
        });
        let mut files: Vec<PathBuf> = entries
            .map(|entry| entry.expect("a journal dir entry").path())
            .filter(|path| {
                path.file_name()
                    .and_then(|name| name.to_str())
                    .and_then(|name| name.strip_suffix(".log"))
                    .is_some_and(|seq| seq.len() == 20 && seq.bytes().all(|b| b.is_ascii_digit()))
            })
            .collect();
        files.sort();
        files
    }

    /// The journal file being appended (the largest name); panics when the
    /// journal has none.
    pub fn newest_journal_file(&self) -> PathBuf {
        self.journal_files().pop().unwrap_or_else(|| {
            panic!(
                "no `<20 digits>.log` file in {}",
                self.journal_dir().display()
            )
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `http://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.base_url(), path)
    }

    /// A client for this host's API; cheap to clone into other threads.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The process id of the running host.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// SIGKILL, and reap the process.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills the host if it runs, then starts it again on the same data dir
    /// and config, on the same port when that port can be bound again.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port;
        self.launch(Some(port));
    }

    /// Kills the host if it runs, then starts it again on the same data dir
    /// where it is expected to refuse: waits (at most [`START_TIMEOUT`])
    /// for the process to exit, asserts that it exited with a non-zero
    /// code, and returns what this run printed. Panics, with the log, when
    /// the host answers `/healthz` instead. Afterwards no host runs;
    /// [`restart`](Self::restart) starts one again.
    pub fn restart_expecting_failure(&mut self) -> String {
        self.kill();
        let mut port = self.port;
        for attempt in 1.. {
            self.spawn(port);
            let startup = self.wait_started();
            self.kill();
            let run = self.run_log();
            let status = match startup {
                Startup::Exited(status) => status,
                Startup::Healthy => panic!(
                    "the host came up although it should have refused to start; log {}:\n{run}",
                    self.log_path().display()
                ),
                Startup::TimedOut => panic!(
                    "the host neither exited nor answered /healthz within {START_TIMEOUT:?}; log {}:\n{run}",
                    self.log_path().display()
                ),
            };
            if port_taken(&run) && attempt < 8 {
                // Not the refusal under test: the old socket lingers.
                std::thread::sleep(Duration::from_millis(300));
                if attempt >= 4 {
                    port = free_port();
                }
                continue;
            }
            assert!(
                status.code().is_some_and(|code| code != 0),
                "the host should have exited with a non-zero code, it exited with {status}; log {}:\n{run}",
                self.log_path().display()
            );
            return run;
        }
        unreachable!("the loop returns or panics")
    }

    /// `GET path` → status and JSON body.
    pub fn get(&self, path: &str) -> Answer {
        Answer::read(
            self.client
                .get(self.url(path))
                .send()
                .unwrap_or_else(|e| panic!("GET {path}: {e}")),
        )
    }

    /// `POST path` with a raw body and `Content-Type: application/json`.
    pub fn post_raw(&self, path: &str, body: impl Into<Vec<u8>>) -> Answer {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body.into())
            .send()
            .unwrap_or_else(|e| panic!("POST {path}: {e}"));
        Answer::read(response)
    }

    /// Runs `aviary <args> --url <host> --data-dir <data>`, the admin CLI
    /// against this host; returns (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(aviary_bin())
            .args(args)
            .arg("--url")
            .arg(self.base_url())
            .arg("--data-dir")
            .arg(self.data_dir())
            .output()
            .expect("run aviary");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Imports `csv` as table `table` of `bot` with `aviary plugin data
    /// import`; asserts it worked and returns what the CLI printed.
    pub fn import_data(&self, bot: &str, table: &str, csv: &str) -> String {
        let file = self.dir().join(format!("{table}.csv"));
        std::fs::write(&file, csv).expect("write the CSV");
        let (ok, out, err) = self.cli(&["plugin", "data", "import", bot, file.to_str().unwrap()]);
        assert!(ok, "import into {bot}: {out}{err}");
        out
    }

    /// `GET path` on the admin API with the host's admin token; asserts
    /// success and returns the JSON body.
    pub fn admin_get(&self, path: &str) -> Value {
        let token = std::fs::read_to_string(self.data_dir().join("admin.token"))
            .expect("the host writes its admin token");
        let response = self
            .client
            .get(self.url(path))
            .bearer_auth(token.trim())
            .send()
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        assert!(
            response.status().is_success(),
            "GET {path}: {}",
            response.status()
        );
        response.json().expect("the admin API answers JSON")
    }

    /// The `bots` array of `GET /api/v1/bots`.
    pub fn bots(&self) -> Vec<Value> {
        let answer = self.get("/api/v1/bots");
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "GET /api/v1/bots: {}",
            answer.raw
        );
        answer.body["bots"]
            .as_array()
            .unwrap_or_else(|| panic!("no `bots` array in {}", answer.raw))
            .clone()
    }

    /// The message endpoints of one conversation with one bot. The
    /// harness names the conversation (as a backend with the secret may)
    /// and mints a token per sender the first time it posts.
    pub fn conversation(&self, bot: &str, conversation: &str) -> Conversation {
        Conversation {
            client: self.client.clone(),
            base: self.base_url(),
            bot: bot.to_owned(),
            conversation: conversation.to_owned(),
            secret: self.secret.clone(),
            tokens: self.tokens.clone(),
        }
    }

    /// A conversation that a client started itself (say, the chat page on
    /// an open host), read and written with `user`'s `token`.
    pub fn joined(&self, bot: &str, conversation: &str, user: &str, token: &str) -> Conversation {
        let chat = Conversation {
            client: self.client.clone(),
            base: self.base_url(),
            bot: bot.to_owned(),
            conversation: conversation.to_owned(),
            secret: None,
            tokens: Tokens::default(),
        };
        let mut tokens = chat.tokens.lock().unwrap();
        for who in [user, READER] {
            tokens.insert(
                (bot.to_owned(), conversation.to_owned(), who.to_owned()),
                token.to_owned(),
            );
        }
        drop(tokens);
        chat
    }

    /// Spawns the host and waits for `/healthz`. When `port` is given it is
    /// tried first (a restart); a port that cannot be bound is replaced.
    fn launch(&mut self, preferred: Option<u16>) {
        let mut port = preferred.unwrap_or_else(free_port);
        for attempt in 1.. {
            self.spawn(port);
            let failure = match self.wait_started() {
                Startup::Healthy => return,
                Startup::Exited(status) => {
                    format!("the process exited with {status} before answering /healthz")
                }
                Startup::TimedOut => {
                    format!("/healthz did not answer 200 within {START_TIMEOUT:?}")
                }
            };
            self.kill();
            let this_run = self.run_log();
            if port_taken(&this_run) && attempt < 8 {
                // Right after a kill the old socket may linger for a moment:
                // retry the same port a few times, then take another one.
                std::thread::sleep(Duration::from_millis(300));
                if preferred.is_none() || attempt >= 4 {
                    port = free_port();
                }
                continue;
            }
            panic!(
                "the aviary host did not come up: {failure}\n  binary: {}\n  bots: {}\n  log {}:\n{}",
                aviary_bin().display(),
                self.plugins_dir.display(),
                self.log_path().display(),
                this_run
            );
        }
    }

    fn spawn(&mut self, port: u16) {
        let bin = aviary_bin();
        assert!(
            bin.exists(),
            "the aviary binary {} does not exist: build it (`cargo build -p aviary-host`) or run `cargo xtask test`",
            bin.display()
        );
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open host.log");
        self.run_start = log.metadata().expect("stat host.log").len();
        writeln!(log, "===== aviary up on 127.0.0.1:{port} =====").expect("write host.log");
        let stderr = log.try_clone().expect("clone the log handle");
        let child = Command::new(&bin)
            .arg("up")
            .arg("--config")
            .arg(self.dir.path().join("aviary.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("--plugins-dir")
            .arg(&self.plugins_dir)
            // Relative defaults (such as the grants in `policies/`) resolve
            // against the repository, as they do for `cargo xtask up`.
            .current_dir(workspace_dir())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {}: {e}", bin.display()));
        self.child = Some(child);
        self.port = port;
    }

    /// Waits until the spawned host answers `/healthz`, exits, or
    /// [`START_TIMEOUT`] passes.
    fn wait_started(&mut self) -> Startup {
        let deadline = Instant::now() + START_TIMEOUT;
        let probe = Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .expect("build the probe client");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Startup::Exited(status);
                }
            }
            if let Ok(response) = probe.get(self.url("/healthz")).send() {
                if response.status() == StatusCode::OK {
                    return Startup::Healthy;
                }
            }
            if Instant::now() >= deadline {
                return Startup::TimedOut;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// How the start of a spawned host ended.
enum Startup {
    Healthy,
    Exited(ExitStatus),
    TimedOut,
}

/// Whether a run's log says its listen address was taken.
fn port_taken(run_log: &str) -> bool {
    run_log.contains("in use") || run_log.contains("AddrInUse")
}

/// `config_toml` with a `web.conversation_secret` (the harness's when it
/// sets none), and that secret.
fn with_conversation_secret(config_toml: &str) -> (String, String) {
    let mut config: toml::Table = config_toml
        .parse()
        .unwrap_or_else(|e| panic!("the test's aviary.toml does not parse: {e}"));
    let web = config
        .entry("web")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .expect("`web` is a table");
    let secret = web
        .entry("conversation_secret")
        .or_insert_with(|| CONVERSATION_SECRET.into())
        .as_str()
        .expect("`web.conversation_secret` is a string")
        .to_owned();
    (config.to_string(), secret)
}

impl Drop for Host {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            // Show the end of the host's log beside the failure; keep the dir.
            eprintln!(
                "----- tail of {} -----\n{}",
                self.log_path().display(),
                tail(&self.log_path(), 8192)
            );
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir"));
            eprintln!("(kept {})", dir.keep().display());
            if self.tmpfs.is_some() {
                eprintln!("(its data dir was a tmpfs, unmounted now: the data is gone)");
            }
        }
        // Unmount before the temp dir (the mount point) is removed.
        self.tmpfs = None;
    }
}

fn tail(path: &Path, bytes: u64) -> String {
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let length = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(length.saturating_sub(bytes)));
    let mut buffer = Vec::new();
    let _ = file.read_to_end(&mut buffer);
    String::from_utf8_lossy(&buffer).into_owned()
}

/// The message endpoints of one conversation; clone it into threads freely.
#[derive(Clone)]
pub struct Conversation {
    client: Client,
    base: String,
    pub bot: String,
    pub conversation: String,
    secret: Option<String>,
    tokens: Tokens,
}

impl Conversation {
    /// `/api/v1/bots/{bot}/conversations/{conversation}/messages`
    pub fn path(&self) -> String {
        format!(
            "/api/v1/bots/{}/conversations/{}/messages",
            self.bot, self.conversation
        )
    }

    /// `ws://.../ws?token=&after=` URL of this conversation, with the
    /// reader's token (none when the host refuses to mint one, say for an
    /// unknown bot, so that the handshake shows the refusal).
    pub fn ws_url(&self, after: Option<&str>) -> String {
        let token = self
            .token(READER)
            .unwrap_or_else(|e| panic!("a token for {}: {e}", self.path()))
            .ok();
        self.ws_url_for(token.as_deref(), after)
    }

    /// `ws://.../ws?token=<token>&after=` URL of this conversation.
    pub fn ws_url_with(&self, token: &str, after: Option<&str>) -> String {
        self.ws_url_for(Some(token), after)
    }

    fn ws_url_for(&self, token: Option<&str>, after: Option<&str>) -> String {
        let base = self.base.replacen("http://", "ws://", 1);
        let mut query = Vec::new();
        if let Some(token) = token {
            query.push(format!("token={token}"));
        }
        if let Some(after) = after {
            query.push(format!("after={after}"));
        }
        let mut url = format!(
            "{base}/api/v1/bots/{}/conversations/{}/ws",
            self.bot, self.conversation
        );
        if !query.is_empty() {
            url.push('?');
            url.push_str(&query.join("&"));
        }
        url
    }

    /// The token of `user` in this conversation, minted with the host's
    /// conversation secret on first use; the refusal when the host says no
    /// (an unknown bot, a malformed conversation id).
    pub fn token(&self, user: &str) -> reqwest::Result<Result<String, Answer>> {
        let key = (self.bot.clone(), self.conversation.clone(), user.to_owned());
        if let Some(token) = self.tokens.lock().unwrap().get(&key) {
            return Ok(Ok(token.clone()));
        }
        let secret = self.secret.as_deref().unwrap_or_else(|| {
            panic!(
                "Host::conversation needs a host with a conversation secret; this one started open"
            )
        });
        let response = self
            .client
            .post(format!(
                "{}/api/v1/bots/{}/conversations",
                self.base, self.bot
            ))
            .bearer_auth(secret)
            .json(&json!({ "conversation": self.conversation, "user": { "id": user } }))
            .send()?;
        let answer = Answer::read(response);
        if answer.status != StatusCode::CREATED {
            return Ok(Err(answer));
        }
        let token = answer.body["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no `token` in {}", answer.raw))
            .to_owned();
        self.tokens.lock().unwrap().insert(key, token.clone());
        Ok(Ok(token))
    }

    /// Forgets the harness's tokens of this conversation (say, after the
    /// host's data was wiped); the next call mints new ones.
    pub fn forget_tokens(&self) {
        self.tokens
            .lock()
            .unwrap()
            .retain(|(bot, conversation, _), _| {
                (bot, conversation) != (&self.bot, &self.conversation)
            });
    }

    /// Posts a message as `sender` (with `sender`'s token); returns the
    /// status and body whatever they are.
    pub fn try_post(&self, sender: &str, text: &str) -> reqwest::Result<Answer> {
        let token = match self.token(sender)? {
            Ok(token) => token,
            Err(refused) => return Ok(refused),
        };
        self.post_with(&token, &json!({ "text": text }))
    }

    /// Posts raw `body` as `sender`, with `content_type` when given.
    pub fn post_raw(
        &self,
        sender: &str,
        body: impl Into<Vec<u8>>,
        content_type: Option<&str>,
    ) -> Answer {
        let token = match self.token(sender).expect("a token") {
            Ok(token) => token,
            Err(refused) => return refused,
        };
        let mut request = self
            .client
            .post(format!("{}{}", self.base, self.path()))
            .bearer_auth(token)
            .body(body.into());
        if let Some(content_type) = content_type {
            request = request.header("content-type", content_type);
        }
        Answer::read(
            request
                .send()
                .unwrap_or_else(|e| panic!("POST {}: {e}", self.path())),
        )
    }

    /// Posts a message with files as `sender`: a `multipart/form-data`
    /// form of a `text` field and one `file` field per `(name, bytes)`.
    pub fn post_files(&self, sender: &str, text: &str, files: &[(&str, &[u8])]) -> Answer {
        let boundary = "aviary-test-boundary-7d1f2c";
        let mut body = Vec::new();
        let mut part = |headers: String, bytes: &[u8]| {
            body.extend_from_slice(format!("--{boundary}\r\n{headers}\r\n\r\n").as_bytes());
            body.extend_from_slice(bytes);
            body.extend_from_slice(b"\r\n");
        };
        part(
            "Content-Disposition: form-data; name=\"text\"".into(),
            text.as_bytes(),
        );
        for (name, bytes) in files {
            part(
                format!(
                    "Content-Disposition: form-data; name=\"file\"; filename=\"{name}\"\r\nContent-Type: image/jpeg"
                ),
                bytes,
            );
        }
        body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        self.post_raw(
            sender,
            body,
            Some(&format!("multipart/form-data; boundary={boundary}")),
        )
    }

    /// GETs `url` (a path the API gave, e.g. an attachment's) with
    /// `user`'s token; the status, content type and bytes.
    pub fn download(&self, user: &str, url: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let token = self.token(user).expect("a token").expect("a token");
        let response = self
            .client
            .get(format!("{}{url}", self.base))
            .bearer_auth(token)
            .send()
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = response.status();
        let media = response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        (
            status,
            media,
            response.bytes().map(|b| b.to_vec()).unwrap_or_default(),
        )
    }

    /// Posts `body` as JSON with `token`; returns the answer.
    pub fn post_with(&self, token: &str, body: &Value) -> reqwest::Result<Answer> {
        let response = self
            .client
            .post(format!("{}{}", self.base, self.path()))
            .bearer_auth(token)
            .json(body)
            .send()?;
        Ok(Answer::read(response))
    }

    /// Posts a message, asserts 202 and returns it as [`Acked`].
    pub fn post_acked(&self, sender: &str, text: &str) -> Acked {
        Acked {
            bot: self.bot.clone(),
            conversation: self.conversation.clone(),
            id: self.post_message(sender, text),
            text: text.to_owned(),
        }
    }

    /// Posts a message, asserts 202 and returns its id.
    pub fn post_message(&self, sender: &str, text: &str) -> String {
        let answer = self
            .try_post(sender, text)
            .unwrap_or_else(|e| panic!("POST {}: {e}", self.path()));
        assert_eq!(
            answer.status,
            StatusCode::ACCEPTED,
            "POST {} {text:?}: {}",
            self.path(),
            answer.raw
        );
        let id = answer.body["id"]
            .as_str()
            .unwrap_or_else(|| panic!("no string `id` in {}", answer.raw));
        assert!(!id.is_empty(), "empty id in {}", answer.raw);
        id.to_owned()
    }

    /// `GET ...messages?after=&wait=&limit=` as raw answer.
    pub fn get_page(&self, after: Option<&str>, wait: Option<f64>, limit: Option<usize>) -> Answer {
        let mut query: Vec<(&str, String)> = Vec::new();
        if let Some(after) = after {
            query.push(("after", after.to_owned()));
        }
        if let Some(wait) = wait {
            query.push(("wait", wait.to_string()));
        }
        if let Some(limit) = limit {
            query.push(("limit", limit.to_string()));
        }
        let token = match self
            .token(READER)
            .unwrap_or_else(|e| panic!("a token for {}: {e}", self.path()))
        {
            Ok(token) => token,
            Err(refused) => return refused,
        };
        let response = self
            .client
            .get(format!("{}{}", self.base, self.path()))
            .bearer_auth(token)
            .query(&query)
            .send()
            .unwrap_or_else(|e| panic!("GET {}: {e}", self.path()));
        Answer::read(response)
    }

    /// One page of messages after `after`, long-polling up to `wait` seconds.
    pub fn messages(&self, after: Option<&str>, wait: Option<f64>) -> Vec<Message> {
        self.page(after, wait, None)
    }

    /// Like [`messages`](Self::messages) with a `limit`.
    pub fn page(
        &self,
        after: Option<&str>,
        wait: Option<f64>,
        limit: Option<usize>,
    ) -> Vec<Message> {
        let answer = self.get_page(after, wait, limit);
        assert_eq!(
            answer.status,
            StatusCode::OK,
            "GET {} after={after:?}: {}",
            self.path(),
            answer.raw
        );
        serde_json::from_value(answer.body["messages"].clone())
            .unwrap_or_else(|e| panic!("bad `messages` in {}: {e}", answer.raw))
    }

    /// Every message of the conversation, following pages of 1000.
    pub fn all_messages(&self) -> Vec<Message> {
        let mut all: Vec<Message> = Vec::new();
        loop {
            let page = self.page(all.last().map(|m| m.id.as_str()), None, Some(1000));
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// Waits (long-polling) until the bot's reply to `inbound_id` is stored
    /// and returns it; panics after [`REPLY_TIMEOUT`].
    pub fn wait_for_reply(&self, inbound_id: &str) -> Message {
        self.wait_for_reply_within(inbound_id, REPLY_TIMEOUT)
            .unwrap_or_else(|| {
                panic!(
                    "no reply to {inbound_id} in {} within {REPLY_TIMEOUT:?}",
                    self.path()
                )
            })
    }

    /// The reply to `inbound_id` if it arrives within `timeout`.
    pub fn wait_for_reply_within(&self, inbound_id: &str, timeout: Duration) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        // Replies are stored after the message they answer.
        let mut after = inbound_id.to_owned();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            let wait = left.as_secs_f64().min(10.0);
            let page = self.messages(Some(&after), Some(wait));
            if let Some(reply) = page
                .iter()
                .find(|m| m.reply_to.as_deref() == Some(inbound_id))
            {
                return Some(reply.clone());
            }
            if let Some(last) = page.last() {
                after = last.id.clone();
            }
        }
    }
}

/// Asserts that `ids` increase strictly (fixed-width ids compare as strings).
pub fn assert_increasing(messages: &[Message]) {
    for pair in messages.windows(2) {
        assert_eq!(
            pair[0].id.len(),
            pair[1].id.len(),
            "ids differ in width: {:?} {:?}",
            pair[0].id,
            pair[1].id
        );
        assert!(
            pair[0].id < pair[1].id,
            "ids out of order: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis() as u64
}

/// An answer read off a raw TCP connection by [`raw_http`].
#[derive(Debug)]
pub struct RawAnswer {
    /// The status code of the first answer, 0 when none came.
    pub status: u16,
    /// Everything the host sent, as text.
    pub text: String,
}

impl RawAnswer {
    /// The JSON body of the answer; panics when it is not JSON.
    pub fn json(&self) -> Value {
        let body = self
            .text
            .split_once("\r\n\r\n")
            .map_or("", |(_, body)| body);
        serde_json::from_str(body)
            .unwrap_or_else(|e| panic!("the answer's body is not JSON ({e}): {:?}", self.text))
    }

    /// The value of header `name` (case-insensitive), if any.
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.text.split("\r\n\r\n").next().unwrap_or("");
        head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_owned())
        })
    }
}

/// Sends `request` verbatim to 127.0.0.1:`port` and reads until the host
/// closes the connection or `timeout` passes; for what an HTTP client
/// library would not send (dot segments, bad encodings, broken framing).
pub fn raw_http(port: u16, request: &[u8], timeout: Duration) -> RawAnswer {
    let mut stream =
        std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to the host");
    stream.set_read_timeout(Some(timeout)).unwrap();
    // A host that refuses early may close before reading everything.
    let _ = stream.write_all(request);
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    let text = String::from_utf8_lossy(&received).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    RawAnswer { status, text }
}

/// A tmpfs mounted (by root) over a directory for as long as it lives.
struct Tmpfs {
    mount_point: PathBuf,
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` bytes at `mount_point`; panics saying that
    /// the test needs root when `mount` fails.
    fn mount(mount_point: &Path, bytes: u64) -> Tmpfs {
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={bytes},mode=0700"))
            .arg("aviary-e2e")
            .arg(mount_point)
            .output()
            .unwrap_or_else(|e| panic!("this test needs root to mount a tmpfs (CI runs as root): cannot run `mount`: {e}"));
        assert!(
            out.status.success(),
            "this test needs root to mount a tmpfs (CI runs as root): `mount -t tmpfs` at {} failed ({}): {}",
            mount_point.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        Tmpfs {
            mount_point: mount_point.to_path_buf(),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let unmounted = Command::new("umount")
            .arg(&self.mount_point)
            .status()
            .is_ok_and(|status| status.success());
        if !unmounted {
            // Still busy: detach it now, the kernel frees it when unused.
            let _ = Command::new("umount")
                .arg("-l")
                .arg(&self.mount_point)
                .status();
        }
    }
}

/// Fills the filesystem that holds `dir` with a file `dir/filler` until a
/// write fails with "no space left on device"; returns the file's path
/// (remove it to free the space). Panics on any other error.
pub fn fill_disk(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
    let chunk = vec![0xa5u8; 1 << 20];
    loop {
        match file.write_all(&chunk) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::StorageFull => return path,
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
}

/// The first bytes of every frame of the store's write-ahead journal.
pub const JOURNAL_MAGIC: &[u8; 4] = b"AVJ1";
/// Length of a journal frame's header: magic, payload length (u32), crc32
/// (u32) and seq (u64), little-endian; the payload follows.
pub const JOURNAL_HEADER_LEN: u64 = 20;

/// The valid frames at the start of journal file `path`, as (offset,
/// length with the header) each, in file order. The walk stops at the
/// first frame that is cut short, lacks [`JOURNAL_MAGIC`] or fails its
/// crc32 (over the seq bytes and the payload), so a file whose frames are
/// all whole has `offset + length` of the last one equal to its length.
pub fn journal_frames(path: &Path) -> Vec<(u64, u64)> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let header = JOURNAL_HEADER_LEN as usize;
    let mut frames = Vec::new();
    let mut offset = 0usize;
    while let Some(head) = bytes.get(offset..offset + header) {
        let word = |at: usize| u32::from_le_bytes(head[at..at + 4].try_into().unwrap());
        let (payload_len, crc) = (word(4) as usize, word(8));
        let Some(checked) = bytes.get(offset + 12..offset + header + payload_len) else {
            break;
        };
        if &head[..4] != JOURNAL_MAGIC || crc32fast::hash(checked) != crc {
            break;
        }
        frames.push((offset as u64, (header + payload_len) as u64));
        offset += header + payload_len;
    }
    frames
}

/// A small random number generator (splitmix64) for tests whose random
/// choices must be replayable from a printed seed.
pub struct SeededRng {
    state: u64,
}

impl SeededRng {
    /// Seeded from the environment variable `var` when it is set (to a
    /// number), else from the clock; prints the seed and how to replay it.
    pub fn from_env_or_clock(var: &str) -> SeededRng {
        let seed = match std::env::var(var) {
            Ok(value) => value
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("{var}={value:?} is not a u64 seed: {e}")),
            Err(_) => std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .expect("clock after 1970")
                .as_nanos() as u64,
        };
        eprintln!("random seed {seed} (replay with {var}={seed})");
        SeededRng::new(seed)
    }

    /// A generator that yields the same numbers for the same seed.
    pub fn new(seed: u64) -> SeededRng {
        SeededRng { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `low..=high` (near-uniform for small ranges).
    pub fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low <= high, "empty range {low}..={high}");
        match (high - low).checked_add(1) {
            Some(span) => low + self.next_u64() % span,
            None => self.next_u64(),
        }
    }

    /// `count` random bytes.
    pub fn bytes(&mut self, count: usize) -> Vec<u8> {
        (0..count).map(|_| self.next_u64() as u8).collect()
    }
}

/// A message the host acknowledged with 202.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acked {
    /// The bot it was posted to.
    pub bot: String,
    /// The conversation it was posted in.
    pub conversation: String,
    /// The id the 202 gave.
    pub id: String,
    /// The text posted.
    pub text: String,
}

impl Acked {
    fn key(&self) -> Key {
        (self.bot.clone(), self.conversation.clone(), self.id.clone())
    }
}

/// Threads that post to conversations as fast as the host takes the
/// messages, recording every one acknowledged, until stopped or until the
/// host stops answering (say, because it was killed).
pub struct Flood {
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
    threads: Vec<JoinHandle<()>>,
}

impl Flood {
    /// Starts one thread per (conversation, sender); each posts
    /// `"<label> <sender> message <n>"` for n = 0, 1, … (at most 10 000).
    /// An answer other than 202 panics the thread, which [`stop`](Self::stop)
    /// passes on; a failed request (the host is gone) ends it quietly.
    pub fn start(senders: &[(Conversation, String)], label: &str) -> Flood {
        let stop = Arc::new(AtomicBool::new(false));
        let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
        let threads = senders
            .iter()
            .cloned()
            .map(|(chat, sender)| {
                let (stop, acked) = (stop.clone(), acked.clone());
                let label = label.to_owned();
                std::thread::spawn(move || {
                    for n in 0..10_000 {
                        if stop.load(Ordering::Relaxed) {
                            return;
                        }
                        let text = format!("{label} {sender} message {n}");
                        let Ok(answer) = chat.try_post(&sender, &text) else {
                            return;
                        };
                        assert_eq!(
                            answer.status,
                            StatusCode::ACCEPTED,
                            "POST {} {text:?}: {}",
                            chat.path(),
                            answer.raw
                        );
                        let id = answer.body["id"]
                            .as_str()
                            .unwrap_or_else(|| panic!("no string `id` in {}", answer.raw));
                        acked.lock().unwrap().push(Acked {
                            bot: chat.bot.clone(),
                            conversation: chat.conversation.clone(),
                            id: id.to_owned(),
                            text,
                        });
                    }
                })
            })
            .collect();
        Flood {
            stop,
            acked,
            threads,
        }
    }

    /// How many posts were acknowledged so far.
    pub fn acked_count(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until at least `count` posts were acknowledged; panics after
    /// `timeout`.
    pub fn wait_for_acks(&self, count: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.acked_count() < count {
            assert!(
                Instant::now() < deadline,
                "only {} of {count} posts acknowledged within {timeout:?}",
                self.acked_count()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Tells the threads to stop, waits for them and returns every
    /// acknowledged message in the order the acknowledgements came.
    pub fn stop(self) -> Vec<Acked> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            if let Err(panic) = thread.join() {
                std::panic::resume_unwind(panic);
            }
        }
        std::mem::take(&mut *self.acked.lock().unwrap())
    }
}

/// (bot, conversation, message id).
type Key = (String, String, String);

/// What a set of conversations holds, read at one moment.
pub struct Stored {
    /// Every message, by (bot, conversation, id).
    pub messages: BTreeMap<Key, Message>,
    /// The replies, by (bot, conversation, id of the message they answer).
    pub replies: BTreeMap<Key, Vec<Message>>,
}

impl Stored {
    /// Reads every message of `chats`, asserting that ids increase.
    pub fn read(chats: &[Conversation]) -> Stored {
        let mut stored = Stored {
            messages: BTreeMap::new(),
            replies: BTreeMap::new(),
        };
        for chat in chats {
            let all = chat.all_messages();
            assert_increasing(&all);
            for message in all {
                let key = |id: &str| (chat.bot.clone(), chat.conversation.clone(), id.to_owned());
                if let Some(to) = &message.reply_to {
                    stored
                        .replies
                        .entry(key(to))
                        .or_default()
                        .push(message.clone());
                }
                stored.messages.insert(key(&message.id), message);
            }
        }
        stored
    }

    /// Asserts that every message of `acked` is stored, inbound, with its
    /// text.
    pub fn assert_holds(&self, acked: &[Acked]) {
        for message in acked {
            let stored = self.messages.get(&message.key()).unwrap_or_else(|| {
                panic!(
                    "acknowledged {} ({:?}) in {}/{} is lost",
                    message.id, message.text, message.bot, message.conversation
                )
            });
            assert_eq!(
                (stored.text.as_str(), stored.direction.as_str()),
                (message.text.as_str(), "in"),
                "acknowledged {} in {}/{} is stored otherwise",
                message.id,
                message.bot,
                message.conversation
            );
        }
    }

    /// Asserts that no message has more than one reply and that every
    /// reply answers a stored inbound message.
    pub fn assert_answered_at_most_once(&self) {
        for ((bot, conversation, to), answers) in &self.replies {
            assert_eq!(
                answers.len(),
                1,
                "{to} in {bot}/{conversation} was answered {} times: {answers:#?}",
                answers.len()
            );
            let answered = self
                .messages
                .get(&(bot.clone(), conversation.clone(), to.clone()));
            assert!(
                answered.is_some_and(Message::is_in),
                "a reply in {bot}/{conversation} answers {to}, which is no stored inbound message"
            );
        }
    }

    /// The stored inbound messages that have no reply yet.
    pub fn unanswered(&self) -> Vec<(&Key, &Message)> {
        self.messages
            .iter()
            .filter(|(key, message)| message.is_in() && !self.replies.contains_key(*key))
            .collect()
    }

    /// Asserts that each message of `acked` has exactly one reply, and that
    /// it is the echo bot's `echo: <text>`.
    pub fn assert_echoed_once(&self, acked: &[Acked]) {
        for message in acked {
            let answers = self
                .replies
                .get(&message.key())
                .map(Vec::as_slice)
                .unwrap_or_default();
            assert_eq!(
                answers.len(),
                1,
                "acknowledged {} ({:?}) in {}/{} was answered {} times: {answers:#?}",
                message.id,
                message.text,
                message.bot,
                message.conversation,
                answers.len()
            );
            assert_eq!(answers[0].text, format!("echo: {}", message.text));
        }
    }
}

/// Re-reads `chats` until every stored inbound message has a reply (a
/// message is stored in one batch with the event that makes the bot
/// answer it, so this is the queue having drained), asserting on every
/// read that no message is answered twice; panics after `timeout`.
pub fn wait_until_drained(chats: &[Conversation], timeout: Duration) -> Stored {
    let deadline = Instant::now() + timeout;
    loop {
        let stored = Stored::read(chats);
        stored.assert_answered_at_most_once();
        let unanswered = stored.unanswered();
        if unanswered.is_empty() {
            return stored;
        }
        assert!(
            Instant::now() < deadline,
            "{} stored messages have no reply after {timeout:?}, e.g. {:?}",
            unanswered.len(),
            &unanswered[..unanswered.len().min(5)]
        );
        drop(unanswered);
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame as the store's contract describes it.
    fn frame(seq: u64, payload: &[u8]) -> Vec<u8> {
        let mut checked = seq.to_le_bytes().to_vec();
        checked.extend_from_slice(payload);
        let mut frame = JOURNAL_MAGIC.to_vec();
        frame.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        frame.extend_from_slice(&crc32fast::hash(&checked).to_le_bytes());
        frame.extend_from_slice(&checked);
        frame
    }

    #[test]
    fn journal_frames_walks_whole_frames_and_stops_at_a_bad_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("00000000000000000007.log");
        let frames = [frame(7, b"first"), frame(8, b""), frame(9, b"third one")];
        let whole = frames.concat();
        let expected = vec![(0, 25), (25, 20), (45, 29)];

        std::fs::write(&path, &whole).unwrap();
        assert_eq!(journal_frames(&path), expected);

        // Cut inside the last frame, or garbage after it: the whole ones.
        std::fs::write(&path, &whole[..60]).unwrap();
        assert_eq!(journal_frames(&path), expected[..2]);
        std::fs::write(&path, [&whole[..], &[0x17; 37]].concat()).unwrap();
        assert_eq!(journal_frames(&path), expected);

        // A flipped payload or seq byte fails the crc; the walk stops there.
        for (at, kept) in [(25 + 12, 1), (45 + 20 + 4, 2)] {
            let mut corrupted = whole.clone();
            corrupted[at] ^= 0xff;
            std::fs::write(&path, &corrupted).unwrap();
            assert_eq!(journal_frames(&path), expected[..kept], "byte {at} flipped");
        }
    }
}

impl Conversation {
    /// Waits until the conversation holds a message from the bot that
    /// satisfies `found` (proactive ones included) and returns it; `None`
    /// after `timeout`.
    pub fn wait_for_out(
        &self,
        timeout: Duration,
        found: impl Fn(&Message) -> bool,
    ) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self
                .all_messages()
                .into_iter()
                .find(|m| m.is_out() && found(m))
            {
                return Some(message);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The texts of the bot's messages, oldest first.
    pub fn out_texts(&self) -> Vec<String> {
        self.all_messages()
            .into_iter()
            .filter(|m| m.is_out())
            .map(|m| m.text)
            .collect()
    }
}
