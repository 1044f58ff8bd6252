//! Hostile bots under the real host: each misbehaviour is contained (the bot
//! gets an error or is stopped), the audit log records it, the echo bot
//! beside it keeps answering in bounded time, and nothing accepted is lost.
//! Bots come from `plugins/hostile/`, built by `cargo xtask test` into
//! `target/hostile` (override with `AVIARY_HOSTILE_DIR`).

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use aviary_e2e::{bots_dir, hostile_dir, Host};
use serde_json::Value;

/// Generous bound on an echo reply while a hostile bot runs: it proves the
/// host is not stuck, it is not a speed target.
const ECHO_BOUND: Duration = Duration::from_secs(10);

/// A plugins directory with echo and the given hostile bots, each copied
/// under its own id from a built hostile component.
struct Bots {
    dir: tempfile::TempDir,
}

impl Bots {
    fn new() -> Bots {
        let dir = tempfile::Builder::new()
            .prefix("aviary-hostile-bots-")
            .tempdir()
            .unwrap();
        for ext in ["wasm", "toml"] {
            let from = bots_dir().join(format!("echo.{ext}"));
            std::fs::copy(&from, dir.path().join(format!("echo.{ext}")))
                .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask test`)", from.display()));
        }
        Bots { dir }
    }

    /// Deploys hostile component `source` as bot `id`.
    fn deploy(self, id: &str, source: &str) -> Bots {
        self.deploy_edited(id, source, |manifest| manifest)
    }

    /// Deploys `source` as `id` with its manifest passed through `edit`.
    fn deploy_edited(self, id: &str, source: &str, edit: impl FnOnce(String) -> String) -> Bots {
        let wasm = hostile_dir().join(format!("{source}.wasm"));
        std::fs::copy(&wasm, self.dir.path().join(format!("{id}.wasm")))
            .unwrap_or_else(|e| panic!("{}: {e} (run `cargo xtask test`)", wasm.display()));
        let manifest =
            std::fs::read_to_string(hostile_dir().join(format!("{source}.toml"))).unwrap();
        let manifest: String = manifest
            .lines()
            .map(|l| {
                if l.starts_with("id = ") {
                    format!("id = \"{id}\"\n")
                } else {
                    format!("{l}\n")
                }
            })
            .collect();
        let manifest = edit(manifest);
        std::fs::write(self.dir.path().join(format!("{id}.toml")), manifest).unwrap();
        self
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// The grant and settings of one mischief bot in `mode`.
fn mischief(id: &str, mode: &str) -> String {
    format!(
        "[bots.{id}]\nmax_retries = 1\nsettings = {{ mode = \"{mode}\" }}\n[bots.{id}.grant]\nmemory_mb = 16\ntimeout_ms = 300\n\
         send = {{ per_conversation_per_minute = 5, per_bot_per_minute = 50 }}\nkv = {{ max_bytes = 65536, max_keys = 100 }}\n"
    )
}

fn start(bots: &Bots, config: &str) -> Host {
    Host::start_with_plugins(config, bots.path())
}

fn audit_records(host: &Host) -> Vec<Value> {
    host.admin_get("/api/v1/admin/audit?n=1000")["records"]
        .as_array()
        .unwrap()
        .clone()
}

/// Waits for an audit record of `action` by `bot` (and `capability`).
fn wait_for_audit(host: &Host, action: &str, bot: &str, capability: Option<&str>) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found = audit_records(host).into_iter().find(|r| {
            r["action"] == action
                && r["bot"] == bot
                && capability.is_none_or(|c| r["capability"] == c)
        });
        if let Some(record) = found {
            return record;
        }
        assert!(
            Instant::now() < deadline,
            "no `{action}` audit record for {bot} {capability:?}: {:#?}",
            audit_records(host)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_for_dead_letter(host: &Host, bot: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let letters = host.admin_get("/api/v1/admin/dead-letters")["dead_letters"]
            .as_array()
            .unwrap()
            .clone();
        if let Some(letter) = letters.into_iter().find(|l| l["event"]["bot"] == bot) {
            return letter;
        }
        assert!(Instant::now() < deadline, "no dead letter for {bot}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Echo answers every message, each within the bound.
fn assert_echo_answers(host: &Host, count: usize) {
    let conversation = host.conversation("echo", "bystander");
    for n in 0..count {
        let started = Instant::now();
        let id = conversation.post_message("carol", &format!("still there {n}?"));
        let reply = conversation.wait_for_reply(&id);
        assert_eq!(reply.text, format!("echo: still there {n}?"));
        assert!(
            started.elapsed() < ECHO_BOUND,
            "echo took {:?} while a hostile bot ran",
            started.elapsed()
        );
    }
}

/// Sends `text` to the hostile bot, checks the event was contained (dead
/// letter + audit `contain` record with `capability`) while echo answered,
/// and that the accepted message is still stored.
fn assert_contained(id: &str, mode: &str, capability: &str, error_part: &str) {
    let bots = Bots::new().deploy(id, "mischief");
    let host = start(&bots, &mischief(id, mode));
    let hostile = host.conversation(id, "attack");
    let accepted: Vec<String> = (0..3)
        .map(|n| hostile.post_message("mallory", &format!("go {n}")))
        .collect();
    assert_echo_answers(&host, 5);
    let letter = wait_for_dead_letter(&host, id);
    assert!(
        letter["error"].as_str().unwrap().contains(error_part),
        "dead letter: {letter}"
    );
    assert_eq!(letter["attempts"], 2, "one try and one retry");
    let record = wait_for_audit(&host, "contain", id, Some(capability));
    assert!(
        record["detail"].as_str().unwrap().contains(error_part),
        "{record}"
    );
    let stored: Vec<String> = hostile
        .all_messages()
        .into_iter()
        .filter(|m| m.is_in())
        .map(|m| m.id)
        .collect();
    assert_eq!(stored, accepted, "accepted messages stay stored");
    // The bot is not poisoned: its next, harmless event gets an answer.
    let ping = hostile.post_message("mallory", "ping");
    assert_eq!(hostile.wait_for_reply(&ping).text, "pong");
}

#[test]
fn an_endless_loop_is_stopped_at_its_deadline() {
    assert_contained("looper", "loop", "cpu_time", "deadline");
}

#[test]
fn memory_growth_past_the_cap_traps() {
    assert_contained("hog", "memory-growth", "memory", "growing memory");
}

#[test]
fn one_huge_allocation_traps() {
    assert_contained("whale", "huge-alloc", "memory", "growing memory");
}

#[test]
fn deep_recursion_traps() {
    assert_contained("abyss", "recursion", "stack", "trap");
}

#[test]
fn a_panic_traps() {
    assert_contained("panicker", "panic", "trap", "unreachable");
}

#[test]
fn a_trap_in_init_refuses_the_load_and_others_still_run() {
    let bots = Bots::new().deploy("bad-init", "mischief");
    let host = start(&bots, &mischief("bad-init", "init-trap"));
    let status = host
        .bots()
        .into_iter()
        .find(|b| b["id"] == "bad-init")
        .expect("the bot is listed");
    assert_eq!(status["status"], "failed");
    assert!(
        status["error"].as_str().unwrap().contains("failed in init"),
        "{status}"
    );
    assert_eq!(
        host.conversation("bad-init", "c")
            .try_post("m", "hi")
            .unwrap()
            .status,
        404,
        "a refused bot takes no messages"
    );
    wait_for_audit(&host, "refuse", "bad-init", None);
    assert_echo_answers(&host, 2);
}

#[test]
fn kv_writes_past_the_quota_are_refused() {
    let bots = Bots::new().deploy("hoarder", "mischief");
    let host = start(&bots, &mischief("hoarder", "kv-flood"));
    let conversation = host.conversation("hoarder", "c");
    let id = conversation.post_message("m", "fill it");
    let reply = conversation.wait_for_reply(&id);
    // 64 KiB quota, 1 KiB values with ~8-byte keys: 63 writes fit.
    assert!(
        reply.text.starts_with("kv refused after 63 writes")
            && reply.text.contains("QuotaExceeded"),
        "{}",
        reply.text
    );
    let record = wait_for_audit(&host, "deny", "hoarder", Some("kv"));
    assert_eq!(record["target"], "flood/63");
    // The writes before the refusal committed and count against the quota.
    let again = conversation.post_message("m", "more");
    let second = conversation.wait_for_reply(&again).text;
    assert!(
        second.starts_with("kv refused after 63 writes"),
        "rewriting committed keys fits, a 64th key does not: {second}"
    );
    assert_echo_answers(&host, 2);
}

#[test]
fn sends_past_the_rate_are_refused() {
    let bots = Bots::new().deploy("spammer", "mischief");
    let host = start(&bots, &mischief("spammer", "send-flood"));
    let conversation = host.conversation("spammer", "c");
    conversation.post_message("m", "spam");
    let record = wait_for_audit(&host, "deny", "spammer", Some("send"));
    assert!(
        record["detail"].as_str().unwrap().contains("995 times"),
        "{record}"
    );
    let out: Vec<_> = conversation
        .all_messages()
        .into_iter()
        .filter(|m| m.is_out())
        .collect();
    assert_eq!(
        out.len(),
        5,
        "exactly the 5 sends per minute the grant allows: {out:?}"
    );
    assert_echo_answers(&host, 2);
}

#[test]
fn an_oversized_outgoing_message_is_refused() {
    let bots = Bots::new().deploy("shouter", "mischief");
    let host = start(&bots, &mischief("shouter", "oversized"));
    let conversation = host.conversation("shouter", "c");
    let id = conversation.post_message("m", "shout");
    let reply = conversation.wait_for_reply(&id);
    assert!(
        reply.text.starts_with("oversized refused") && reply.text.contains("16384-byte limit"),
        "{}",
        reply.text
    );
    assert!(conversation
        .all_messages()
        .iter()
        .all(|m| m.text.len() < 20_000));
    wait_for_audit(&host, "deny", "shouter", Some("send"));
}

#[test]
fn typing_shows_only_where_the_bot_may_send() {
    let bots = Bots::new().deploy("ghost", "mischief");
    let host = start(&bots, &mischief("ghost", "typing-elsewhere"));
    let conversation = host.conversation("ghost", "c");
    let id = conversation.post_message("m", "type");
    let reply = conversation.wait_for_reply(&id).text;
    assert!(reply.starts_with("own Ok(())"), "{reply}");
    assert!(
        reply.contains("elsewhere Err(Error::Denied(")
            && reply.contains("not one this bot has seen"),
        "{reply}"
    );
    assert!(reply.ends_with("1000 of 1000 refused"), "{reply}");
    let record = wait_for_audit(&host, "deny", "ghost", Some("send"));
    assert_eq!(record["target"], "never-seen", "{record}");
}

#[test]
fn a_flood_of_log_output_is_capped() {
    let bots = Bots::new().deploy("chatterbox", "mischief");
    let host = start(&bots, &mischief("chatterbox", "log-flood"));
    host.conversation("chatterbox", "c")
        .post_message("m", "talk");
    wait_for_dead_letter(&host, "chatterbox");
    assert_echo_answers(&host, 2);
    // 10,000 log lines and 20,000 stdio lines of 10 kB per attempt: the host
    // keeps at most 100 log lines and 16 KiB of stdio per event.
    let flood_lines = host
        .log()
        .lines()
        .filter(|l| l.contains("yyyyyyyyyy"))
        .count();
    assert!(flood_lines > 0, "the bot's first lines are logged");
    assert!(
        flood_lines <= 2 * (100 + 2),
        "{flood_lines} flood lines reached the host log"
    );
    assert!(
        host.log().len() < 8 * 1024 * 1024,
        "host log grew to {} bytes",
        host.log().len()
    );
}

#[test]
fn another_bots_kv_and_secrets_are_out_of_reach() {
    let bots = Bots::new().deploy("snoop", "mischief");
    let config = format!(
        "{}[bots.echo]\nsecrets = {{ ECHO_TOKEN = \"hunter2\" }}\n",
        mischief("snoop", "snoop")
    );
    let host = start(&bots, &config);
    let echo = host.conversation("echo", "shared");
    let id = echo.post_message("alice", "/remember the cake is in the oven");
    assert_eq!(echo.wait_for_reply(&id).text, "remembered");
    let snoop = host.conversation("snoop", "shared");
    let id = snoop.post_message("mallory", "look");
    let reply = snoop.wait_for_reply(&id).text;
    assert!(reply.starts_with("found []"), "the snoop saw: {reply}");
    assert!(
        !reply.contains("cake") && !reply.contains("hunter2"),
        "{reply}"
    );
    assert!(
        reply.contains("secret refused") && reply.contains("not granted"),
        "{reply}"
    );
    let record = wait_for_audit(&host, "deny", "snoop", Some("secrets"));
    assert_eq!(record["target"], "ECHO_TOKEN");
}

fn assert_refused(bots: &Bots, config: &str, id: &str, error_parts: &[&str]) {
    let host = start(bots, config);
    let status = host
        .bots()
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("{id} is not listed: {:?}", host.bots()));
    assert_eq!(status["status"], "failed", "{status}");
    let error = status["error"].as_str().unwrap();
    for part in error_parts {
        assert!(error.contains(part), "error {error:?} lacks {part:?}");
    }
    let record = wait_for_audit(&host, "refuse", id, None);
    assert!(record["detail"].as_str().unwrap().contains(error_parts[0]));
    assert_echo_answers(&host, 1);
}

#[test]
fn malformed_component_bytes_are_refused() {
    let bots = Bots::new();
    std::fs::write(
        bots.path().join("junk.wasm"),
        b"\0asm\x0d\0\x01\0 this is not a component",
    )
    .unwrap();
    std::fs::write(
        bots.path().join("junk.toml"),
        "id = \"junk\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    assert_refused(&bots, "", "junk", &["not a loadable component"]);
}

#[test]
fn a_component_of_another_world_is_refused() {
    let bots = Bots::new().deploy("other", "other-world");
    assert_refused(
        &bots,
        "",
        "other",
        &["does not export aviary:bot/handler@0.1"],
    );
}

#[test]
fn an_incompatible_wit_version_is_refused() {
    let bots = Bots::new().deploy("future", "future-wit");
    assert_refused(
        &bots,
        "",
        "future",
        &["does not export aviary:bot/handler@0.1"],
    );
}

#[test]
fn a_filesystem_import_is_refused_at_load() {
    let bots = Bots::new().deploy("reader", "fs-reader");
    let config =
        "[bots.reader.grant]\nsend = { per_conversation_per_minute = 5, per_bot_per_minute = 5 }\n";
    assert_refused(
        &bots,
        config,
        "reader",
        &["wasi:filesystem/", "no grant allows", "no filesystem"],
    );
}

#[test]
fn an_import_without_its_grant_names_the_import_and_the_grant() {
    // A manifest that hides its kv use: even approving its asks would not
    // cover the import, so the load is refused outright.
    let bots = Bots::new().deploy_edited("nokv", "mischief", |m| {
        m.replace("[asks.kv]\nmax_bytes = 65536\nmax_keys = 100\n", "")
    });
    let config =
        "[bots.nokv.grant]\nsend = { per_conversation_per_minute = 5, per_bot_per_minute = 5 }\n";
    assert_refused(&bots, config, "nokv", &["aviary:bot/kv", "`kv` grant"]);
}

/// A one-shot HTTP responder on loopback that counts the connections it got.
struct Listener {
    socket: TcpListener,
}

impl Listener {
    fn new() -> Listener {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        socket.set_nonblocking(true).unwrap();
        Listener { socket }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }

    /// Answers every waiting connection with 204; returns how many there were.
    fn serve_waiting(&self) -> usize {
        let mut served = 0;
        while let Ok((mut stream, _)) = self.socket.accept() {
            stream.set_nonblocking(false).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = stream.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
            served += 1;
        }
        served
    }
}

fn http_list(grants: &[String]) -> String {
    let list: Vec<String> = grants.iter().map(|g| format!("\"{g}\"")).collect();
    format!("http = [{}]", list.join(", "))
}

fn fetcher_config(grants: &[String]) -> String {
    format!("[bots.fetcher.grant]\n{}\nsend = {{ per_conversation_per_minute = 60, per_bot_per_minute = 600 }}\n", http_list(grants))
}

/// The fetcher asking for exactly `grants`.
fn fetcher_bots(grants: &[String]) -> Bots {
    let asks = http_list(grants);
    Bots::new().deploy_edited("fetcher", "fetcher", |m| {
        m.replace("http = [\"http://127.0.0.1:1\"]", &asks)
    })
}

/// Posts `url` to the fetcher, serving the listeners until it replies.
fn fetch(host: &Host, url: &str, listeners: &[&Listener]) -> (String, usize) {
    let conversation = host.conversation("fetcher", "c");
    let id = conversation.post_message("m", url);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut connections = 0;
    loop {
        connections += listeners.iter().map(|l| l.serve_waiting()).sum::<usize>();
        if let Some(reply) = conversation.wait_for_reply_within(&id, Duration::from_millis(100)) {
            connections += listeners.iter().map(|l| l.serve_waiting()).sum::<usize>();
            return (reply.text, connections);
        }
        assert!(
            Instant::now() < deadline,
            "the fetcher never replied about {url}"
        );
    }
}

#[test]
fn http_is_limited_to_granted_targets() {
    let granted = Listener::new();
    let other = Listener::new();
    let grants = [format!("http://127.0.0.1:{}", granted.port())];
    let bots = fetcher_bots(&grants);
    let host = start(&bots, &fetcher_config(&grants));
    // The granted loopback port, named by address: allowed, and it connects.
    let (reply, connections) = fetch(
        &host,
        &format!("http://127.0.0.1:{}/ok", granted.port()),
        &[&granted, &other],
    );
    assert_eq!((reply.as_str(), connections), ("status 204", 1));
    // Another loopback port: denied, and no connection arrives.
    let (reply, connections) = fetch(
        &host,
        &format!("http://127.0.0.1:{}/no", other.port()),
        &[&granted, &other],
    );
    assert_eq!(
        (reply.as_str(), connections),
        ("error: ErrorCode::HttpRequestDenied", 0)
    );
    // A host never granted: denied by name, before any DNS or socket.
    let (reply, _) = fetch(&host, "http://api.example.com/", &[]);
    assert_eq!(reply, "error: ErrorCode::HttpRequestDenied");
    let denials: Vec<Value> = audit_records(&host)
        .into_iter()
        .filter(|r| r["action"] == "deny" && r["capability"] == "http")
        .collect();
    let targets: Vec<&str> = denials
        .iter()
        .map(|r| r["target"].as_str().unwrap())
        .collect();
    assert_eq!(
        targets,
        [
            format!("http://127.0.0.1:{}", other.port()).as_str(),
            "http://api.example.com:80"
        ]
    );
}

#[test]
fn a_granted_name_that_resolves_to_loopback_is_denied() {
    let listener = Listener::new();
    let grants = [format!("http://localhost:{}", listener.port())];
    let bots = fetcher_bots(&grants);
    let host = start(&bots, &fetcher_config(&grants));
    let (reply, connections) = fetch(
        &host,
        &format!("http://localhost:{}/", listener.port()),
        &[&listener],
    );
    assert_eq!(
        (reply.as_str(), connections),
        ("error: ErrorCode::HttpRequestDenied", 0)
    );
    let record = wait_for_audit(&host, "deny", "fetcher", Some("http"));
    assert!(
        record["detail"].as_str().unwrap().contains("loopback"),
        "{record}"
    );
}

/// Like [`mischief`] with its own CPU (`timeout_ms`) and wall-clock limits.
fn mischief_timed(id: &str, mode: &str, timeout_ms: u64, wall_ms: u64) -> String {
    mischief(id, mode).replace(
        "timeout_ms = 300\n",
        &format!("timeout_ms = {timeout_ms}\nwall_ms = {wall_ms}\n"),
    )
}

/// Resident memory of the host process, in bytes.
fn host_rss(host: &Host) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", host.pid().unwrap())).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/<pid>/status");
    kib * 1024
}

#[test]
fn a_sleep_inside_a_host_call_ends_at_the_wall_deadline() {
    // Four events of a bot that sleeps for an hour inside WASI poll: each
    // is cut at `wall_ms`, the bot is quarantined from the first overrun,
    // and echo keeps answering.
    let bots = Bots::new().deploy("sleeper", "mischief");
    let host = start(&bots, &mischief_timed("sleeper", "sleep", 300, 1000));
    let started = Instant::now();
    for n in 0..4 {
        host.conversation("sleeper", &format!("c{n}"))
            .post_message("mallory", "sleep");
    }
    assert_echo_answers(&host, 3);
    let letter = wait_for_dead_letter(&host, "sleeper");
    assert!(
        letter["error"]
            .as_str()
            .unwrap()
            .contains("wall-clock deadline of 1s"),
        "{letter}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "an hour-long sleep must end at the 1 s wall deadline, took {:?}",
        started.elapsed()
    );
    wait_for_audit(&host, "contain", "sleeper", Some("wall_time"));
}

#[test]
fn the_cpu_deadline_does_not_count_waits_but_the_wall_deadline_does() {
    // A bot granted 300 ms of CPU and 3 s of wall time that sleeps: it is
    // stopped by the wall clock (waits cost no CPU), not by the CPU clock.
    let bots = Bots::new().deploy("napper", "mischief");
    let host = start(&bots, &mischief_timed("napper", "sleep", 300, 3000));
    host.conversation("napper", "c").post_message("m", "sleep");
    let letter = wait_for_dead_letter(&host, "napper");
    let error = letter["error"].as_str().unwrap();
    assert!(error.contains("wall-clock deadline of 3s"), "{error}");
    assert!(!error.contains("CPU"), "{error}");
}

/// Accepts connections and never answers; keeps them open until dropped.
struct Silent {
    socket: TcpListener,
    held: std::sync::Arc<std::sync::Mutex<Vec<std::net::TcpStream>>>,
}

impl Silent {
    fn new() -> Silent {
        let socket = TcpListener::bind("127.0.0.1:0").unwrap();
        let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let acceptor = socket.try_clone().unwrap();
        let keep = held.clone();
        std::thread::spawn(move || {
            for stream in acceptor.incoming().take(16).flatten() {
                keep.lock().unwrap().push(stream);
            }
        });
        Silent { socket, held }
    }

    fn port(&self) -> u16 {
        self.socket.local_addr().unwrap().port()
    }
}

#[test]
fn a_granted_server_that_never_answers_cannot_hold_a_worker_past_the_host_caps() {
    // The bot sets no timeout of its own and its wall limit is long: the
    // host's first-byte cap ends the wait, and the bot hears why.
    let silent = Silent::new();
    let grants = [format!("http://127.0.0.1:{}", silent.port())];
    let bots = fetcher_bots(&grants);
    let config = fetcher_config(&grants).replace(
        "[bots.fetcher.grant]\n",
        "[bots.fetcher.grant]\nwall_ms = 40000\n",
    );
    let host = start(&bots, &config);
    let conversation = host.conversation("fetcher", "c");
    let started = Instant::now();
    let id = conversation.post_message("m", &format!("http://127.0.0.1:{}/", silent.port()));
    let reply = conversation
        .wait_for_reply_within(&id, Duration::from_secs(35))
        .expect("the fetcher hears back before its 40 s wall limit");
    assert!(reply.text.contains("Timeout"), "{}", reply.text);
    assert!(
        started.elapsed() < Duration::from_secs(35),
        "waited {:?}",
        started.elapsed()
    );
    assert_eq!(silent.held.lock().unwrap().len(), 1, "it did connect");
}

/// The audit records of `bot` with `action`.
fn records_of(host: &Host, action: &str, bot: &str) -> Vec<Value> {
    audit_records(host)
        .into_iter()
        .filter(|r| r["action"] == action && r["bot"] == bot)
        .collect()
}

/// Runs `mode` once with room for a million host calls, then checks that
/// what the host kept of its refusals is a handful of records.
fn assert_refusal_flood_is_bounded(id: &str, mode: &str) {
    let bots = Bots::new().deploy(id, "mischief");
    let host = start(&bots, &mischief_timed(id, mode, 5_000, 10_000));
    let conversation = host.conversation(id, "c");
    let sent = conversation.post_message("m", "go");
    assert_echo_answers(&host, 2);
    // The flood ends with a reply, or at its deadline with a dead letter.
    let deadline = Instant::now() + Duration::from_secs(90);
    while conversation
        .wait_for_reply_within(&sent, Duration::from_millis(500))
        .is_none()
    {
        let letters = host.admin_get("/api/v1/admin/dead-letters")["dead_letters"].clone();
        if letters
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["event"]["bot"] == id)
        {
            break;
        }
        assert!(Instant::now() < deadline, "{mode} never ended");
    }
    let denials = records_of(&host, "deny", id);
    assert!(
        !denials.is_empty() && denials.len() <= 2 * 9,
        "at most 8 itemised records and one count per attempt, got {}",
        denials.len()
    );
    assert!(
        denials.iter().any(|r| r["detail"]
            .as_str()
            .unwrap()
            .contains("more refusals in one event")
            || r["detail"].as_str().unwrap().contains("times in one event")),
        "the records count what they do not itemise: {denials:#?}"
    );
    for record in audit_records(&host) {
        assert!(record.to_string().len() < 4096, "{record}");
    }
}

#[test]
fn a_million_refused_secrets_cost_a_handful_of_audit_records() {
    assert_refusal_flood_is_bounded("secrets", "secret-flood");
}

#[test]
fn forty_thousand_refused_kv_keys_cost_a_handful_of_audit_records() {
    assert_refusal_flood_is_bounded("kvflood", "kv-refusal-flood");
}

#[test]
fn a_million_refused_writes_to_one_key_cost_one_audit_record() {
    assert_refusal_flood_is_bounded("onekey", "one-key-refusals");
}

#[test]
fn an_event_that_makes_the_host_remember_too_much_fails_cleanly() {
    for (id, mode) in [("deleter", "absent-deletes"), ("reader", "absent-reads")] {
        let bots = Bots::new().deploy(id, "mischief");
        let host = start(&bots, &mischief_timed(id, mode, 10_000, 20_000));
        let before = host_rss(&host);
        host.conversation(id, "c").post_message("m", "go");
        let letter = wait_for_dead_letter(&host, id);
        assert!(
            letter["error"]
                .as_str()
                .unwrap()
                .contains("event budget exceeded"),
            "{mode}: {letter}"
        );
        wait_for_audit(&host, "contain", id, Some("event_budget"));
        let grown = host_rss(&host).saturating_sub(before);
        assert!(
            grown < 100 << 20,
            "{mode}: the host grew by {} MiB",
            grown >> 20
        );
        assert_echo_answers(&host, 1);
    }
}

#[test]
fn an_eight_mib_secret_name_is_refused_without_being_kept() {
    let bots = Bots::new().deploy("longname", "mischief");
    let host = start(
        &bots,
        &mischief_timed("longname", "long-secret-name", 20_000, 30_000),
    );
    let conversation = host.conversation("longname", "c");
    let id = conversation.post_message("m", "go");
    assert_eq!(
        conversation.wait_for_reply(&id).text,
        "100 long names refused"
    );
    let log = std::fs::metadata(host.log_path()).unwrap().len();
    assert!(log < 1 << 20, "the host log grew to {log} bytes");
    for record in audit_records(&host) {
        assert!(record.to_string().len() < 4096, "{record}");
    }
}

#[test]
fn megabyte_errors_are_cut_everywhere_the_host_keeps_them() {
    let bots = Bots::new()
        .deploy("loud", "mischief")
        .deploy("loudinit", "mischief");
    let config = format!(
        "{}{}",
        mischief("loud", "huge-error"),
        mischief("loudinit", "init-huge-error")
    );
    let host = start(&bots, &config);
    host.conversation("loud", "c").post_message("m", "go");
    let letter = wait_for_dead_letter(&host, "loud");
    let error = letter["error"].as_str().unwrap();
    assert!(error.len() < 8192, "dead letter of {} bytes", error.len());
    assert!(error.contains("[cut: 8388608 bytes in all]"), "{error}");
    let listed = host
        .bots()
        .into_iter()
        .find(|b| b["id"] == "loudinit")
        .unwrap();
    let init_error = listed["error"].as_str().unwrap();
    assert!(
        init_error.len() < 8192,
        "listed error of {} bytes",
        init_error.len()
    );
    assert!(init_error.contains("[cut:"), "{init_error}");
    for record in audit_records(&host) {
        assert!(record.to_string().len() < 8192, "{record}");
    }
    let log = std::fs::metadata(host.log_path()).unwrap().len();
    assert!(log < 1 << 20, "the host log grew to {log} bytes");
}

#[test]
fn a_megabyte_reply_to_is_refused_as_invalid() {
    let bots = Bots::new().deploy("replier", "mischief");
    let host = start(&bots, &mischief("replier", "huge-reply-to"));
    let conversation = host.conversation("replier", "c");
    let id = conversation.post_message("m", "go");
    let reply = conversation.wait_for_reply(&id);
    assert!(reply.text.contains("Invalid"), "{}", reply.text);
    assert!(conversation
        .all_messages()
        .iter()
        .all(|m| m.reply_to.as_ref().is_none_or(|r| r.len() == 16)));
}

#[test]
fn a_component_with_four_memories_is_refused() {
    let bots = Bots::new();
    let component =
        wat::parse_str("(component (core module (memory 1) (memory 1) (memory 1) (memory 1)))")
            .unwrap();
    std::fs::write(bots.path().join("quad.wasm"), component).unwrap();
    std::fs::write(
        bots.path().join("quad.toml"),
        "id = \"quad\"\nversion = \"0.1.0\"\n",
    )
    .unwrap();
    assert_refused(&bots, "", "quad", &["4 linear memories", "at most 2"]);
}
