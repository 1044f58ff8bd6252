//! The admin's bot lifecycle against the real binary: the plugins directory
//! watched and swapped under load, failed builds that keep the old version
//! serving, rollback, disable/enable, remove and purge, logs and stats.
//!
//! The builds come from one compile of `plugins/hostile/versioned`: the
//! test overwrites the label in its marker, so each build has its own
//! sha256 and answers `<label>: <text>`.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use aviary_e2e::{
    aviary_bin, bots_dir, hostile_dir, wait_until_drained, Conversation, Flood, Host,
};
use serde_json::Value;

/// What the versioned bot's marker starts with; the label follows.
const MARKER_PREFIX: &[u8] = b"AVIARY-BUILD-LABEL:";
/// Bytes of label after the prefix (padded with `_`).
const LABEL_BYTES: usize = 48;
/// How long a change may take to show in `aviary plugin list`.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(30);

const CONFIG: &str = r#"
workers = 4

[bots.versioned.grant]
memory_mb = 32
timeout_ms = 2000

[bots.versioned.grant.kv]
max_bytes = 65536
max_keys = 1000

[bots.versioned.grant.send]
per_conversation_per_minute = 60000
per_bot_per_minute = 600000
"#;

/// The versioned bot's component with `label` in its marker.
fn build(label: &str) -> Vec<u8> {
    assert!(label.len() <= LABEL_BYTES && !label.contains('_'));
    let mut bytes = std::fs::read(hostile_dir().join("versioned.wasm"))
        .expect("the versioned test bot is built (cargo xtask test builds it)");
    let at = bytes
        .windows(MARKER_PREFIX.len())
        .position(|w| w == MARKER_PREFIX)
        .expect("the component holds the marker")
        + MARKER_PREFIX.len();
    let mut padded = label.as_bytes().to_vec();
    padded.resize(LABEL_BYTES, b'_');
    bytes[at..at + LABEL_BYTES].copy_from_slice(&padded);
    bytes
}

/// The manifest of build `n`, version `n.0.0`, with `extra` asks.
fn manifest(n: u32, extra: &str) -> String {
    format!(
        "id = \"versioned\"\nversion = \"{n}.0.0\"\n{extra}\n[asks.kv]\nmax_bytes = 65536\nmax_keys = 1000\n\n[asks.send]\nper_conversation_per_minute = 6000\nper_bot_per_minute = 60000\n"
    )
}

/// Writes `bytes` to `path` by a rename, as `aviary plugin build` does.
fn write_atomically(path: &Path, bytes: &[u8]) {
    let tmp = path.with_file_name(format!(
        ".{}.tmp",
        path.file_name().unwrap().to_string_lossy()
    ));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Installs build `label` as version `n` into `plugins` (component first).
fn install(plugins: &Path, n: u32, label: &str, extra_asks: &str) -> String {
    let bytes = build(label);
    write_atomically(&plugins.join("versioned.wasm"), &bytes);
    write_atomically(
        &plugins.join("versioned.toml"),
        manifest(n, extra_asks).as_bytes(),
    );
    sha256(&bytes)
}

fn sha256(bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)[..64].to_owned()
}

/// A host on a plugins directory of its own holding build `b00`.
fn host_with_versioned(config: &str) -> (Host, PathBuf, tempfile::TempDir) {
    let plugins = tempfile::tempdir().unwrap();
    install(plugins.path(), 0, "b00", "");
    let host = Host::start_with_plugins(config, plugins.path());
    let path = plugins.path().to_owned();
    (host, path, plugins)
}

/// Runs the admin CLI; returns (exit ok, stdout + stderr).
fn cli(host: &Host, args: &[&str]) -> (bool, String) {
    let (ok, stdout, stderr) = host.cli(args);
    (ok, stdout + &stderr)
}

/// The versioned bot's entry in `aviary plugin list --json`.
fn listed(host: &Host) -> Value {
    let (ok, text) = cli(host, &["plugin", "list", "--json"]);
    assert!(ok, "aviary plugin list: {text}");
    let all: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    all.as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "versioned")
        .cloned()
        .unwrap_or(Value::Null)
}

/// Waits until the versioned bot's listing satisfies `ready`.
fn wait_listed(host: &Host, what: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    loop {
        let bot = listed(host);
        if ready(&bot) {
            return bot;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {CHANGE_TIMEOUT:?}; listed {bot:#}\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_serving(host: &Host, sha: &str) -> Value {
    wait_listed(host, &format!("build {sha} serving"), |b| {
        b["sha256"] == sha && b["status"] == "running"
    })
}

/// The label a reply of the versioned bot names.
fn label_of(reply: &str) -> &str {
    reply.split(':').next().unwrap_or("")
}

#[test]
fn twenty_swaps_under_load_lose_nothing_and_only_clean_builds_answer() {
    let (host, plugins, _keep) = host_with_versioned(CONFIG);
    let mut clean: BTreeSet<String> = ["b00".to_owned()].into();
    let chats: Vec<Conversation> = (0..4)
        .map(|n| host.conversation("versioned", &format!("storm-{n}")))
        .collect();
    let senders: Vec<(Conversation, String)> = chats
        .iter()
        .map(|chat| (chat.clone(), "alice".to_owned()))
        .collect();
    let flood = Flood::start(&senders, "storm");
    flood.wait_for_acks(20, CHANGE_TIMEOUT);
    let swap = |clean: &mut BTreeSet<String>, n: u32| {
        let label = format!("b{n:02}");
        let sha = install(&plugins, n, &label, "");
        wait_serving(&host, &sha);
        clean.insert(label);
        sha
    };
    // 1-4: rebuilt files, picked up by the watcher.
    for n in 1..=4 {
        swap(&mut clean, n);
    }
    let b04 = listed(&host)["sha256"].as_str().unwrap().to_owned();

    // 5: a build that traps in init: refused, b04 keeps serving.
    install(&plugins, 5, "b05-trap-init", "");
    let failed = wait_listed(&host, "the trapping build refused", |b| {
        b["error"].as_str().is_some_and(|e| e.contains("init"))
    });
    assert_eq!(
        (failed["sha256"].as_str(), failed["status"].as_str()),
        (Some(b04.as_str()), Some("running"))
    );

    // 6: installed with the CLI, which loads it and says so.
    let bytes = build("b06");
    let staging = tempfile::tempdir().unwrap();
    std::fs::write(staging.path().join("v.wasm"), &bytes).unwrap();
    std::fs::write(staging.path().join("v.toml"), manifest(6, "")).unwrap();
    let wasm = staging.path().join("v.wasm");
    let (ok, text) = cli(&host, &["plugin", "install", wasm.to_str().unwrap()]);
    assert!(
        ok && text.contains("installed versioned 6.0.0") && text.contains("running"),
        "{text}"
    );
    clean.insert("b06".into());
    let b06 = sha256(&bytes);
    wait_serving(&host, &b06);

    // 7: a build that asks for a secret it is not granted: held.
    install(
        &plugins,
        7,
        "b07-unapproved",
        "[asks]\nsecrets = [\"API_TOKEN\"]\n",
    );
    let held = wait_listed(&host, "the unapproved build held", |b| {
        b["pending"]["version"] == "7.0.0"
    });
    assert_eq!(
        held["sha256"],
        b06.as_str(),
        "b06 keeps serving while 7 is held"
    );

    // 8: a component written in two halves with a pause: the half never
    // loads (it is refused as incomplete), the whole one does.
    // (The manifest comes after the half, so no rescan pairs it with b07.)
    let bytes = build("b08");
    let mut file = std::fs::File::create(plugins.join("versioned.wasm")).unwrap();
    file.write_all(&bytes[..bytes.len() / 2]).unwrap();
    file.flush().unwrap();
    write_atomically(&plugins.join("versioned.toml"), manifest(8, "").as_bytes());
    let half = wait_listed(&host, "the half-written build refused", |b| {
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("not a loadable component"))
    });
    assert_eq!(
        half["sha256"],
        b06.as_str(),
        "b06 serves while the file is half written"
    );
    std::thread::sleep(Duration::from_millis(300));
    file.write_all(&bytes[bytes.len() / 2..]).unwrap();
    drop(file);
    clean.insert("b08".into());
    wait_serving(&host, &sha256(&bytes));

    // 9, 10.
    let b09 = swap(&mut clean, 9);
    swap(&mut clean, 10);

    // 11: rollback, no file needed.
    let (ok, text) = cli(&host, &["plugin", "rollback", "versioned"]);
    assert!(
        ok && text.contains("from 10.0.0 to 9.0.0") && text.contains("still loaded in memory"),
        "{text}"
    );
    wait_serving(&host, &b09);

    // 12: a build whose migrate fails: no swap.
    install(&plugins, 12, "b12-fail-migrate", "");
    let refused = wait_listed(&host, "the failing migrate refused", |b| {
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot migrate"))
    });
    assert_eq!(refused["sha256"], b09.as_str());

    // 13: disabled for a while, then enabled: the waiting events run.
    let (ok, text) = cli(&host, &["plugin", "disable", "versioned"]);
    assert!(ok, "{text}");
    wait_listed(&host, "disabled", |b| b["status"] == "disabled");
    std::thread::sleep(Duration::from_millis(500));
    let (ok, text) = cli(&host, &["plugin", "enable", "versioned"]);
    assert!(ok, "{text}");

    // 14-18.
    for n in 14..=18 {
        swap(&mut clean, n);
    }
    // 19: rollback to a build named by its sha256 prefix.
    let (ok, text) = cli(
        &host,
        &["plugin", "rollback", "versioned", "--to", &b04[..10]],
    );
    assert!(ok && text.contains("to 4.0.0"), "{text}");
    wait_serving(&host, &b04);
    // 20.
    swap(&mut clean, 20);

    let acked = flood.stop();
    assert!(
        acked.len() >= 100,
        "only {} messages posted during the storm",
        acked.len()
    );
    let stored = wait_until_drained(&chats, Duration::from_secs(60));
    stored.assert_holds(&acked);
    let mut by_label: BTreeMap<String, usize> = BTreeMap::new();
    for message in &acked {
        let key = (
            message.bot.clone(),
            message.conversation.clone(),
            message.id.clone(),
        );
        let answers = &stored.replies[&key];
        assert_eq!(
            answers.len(),
            1,
            "{} answered {} times",
            message.id,
            answers.len()
        );
        let label = label_of(&answers[0].text).to_owned();
        assert!(
            clean.contains(&label),
            "{} answered by {label}, which never loaded cleanly: {}",
            message.id,
            answers[0].text
        );
        assert_eq!(answers[0].text, format!("{label}: {}", message.text));
        *by_label.entry(label).or_default() += 1;
    }
    // In order per conversation: replies come in the order of what they answer.
    for chat in &chats {
        let answered: Vec<String> = chat
            .all_messages()
            .into_iter()
            .filter_map(|m| m.reply_to)
            .collect();
        let mut sorted = answered.clone();
        sorted.sort();
        assert_eq!(
            answered, sorted,
            "replies out of order in {}",
            chat.conversation
        );
    }
    assert!(
        by_label.len() >= 5,
        "few builds answered during the storm: {by_label:?}"
    );
    let audit = host.admin_get("/api/v1/admin/audit?n=1000");
    let actions: Vec<&str> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["bot"] == "versioned")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for action in ["load", "refuse", "hold", "rollback", "disable", "enable"] {
        assert!(
            actions.contains(&action),
            "no `{action}` in the audit log: {actions:?}"
        );
    }
    let migrated = audit["records"].as_array().unwrap().iter().any(|r| {
        r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("migrated from 3.0.0"))
    });
    assert!(migrated, "b04's migrate from 3.0.0 is audited");
}

#[test]
fn a_bot_built_against_the_first_contract_loads_and_answers_unchanged() {
    let plugins = tempfile::tempdir().unwrap();
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            hostile_dir().join(format!("contract-0.1.0.{ext}")),
            plugins.path().join(format!("contract-0.1.0.{ext}")),
        )
        .unwrap();
    }
    let config = "[bots.\"contract-0.1.0\".grant.send]\nper_conversation_per_minute = 600\nper_bot_per_minute = 6000\n";
    let host = Host::start_with_plugins(config, plugins.path());
    let chat = host.conversation("contract-0.1.0", "old");
    let id = chat.post_message("alice", "still here?");
    assert_eq!(chat.wait_for_reply(&id).text, "0.1.0 contract: still here?");
    let audit = host.admin_get("/api/v1/admin/policy/audit?bot=contract-0.1.0");
    let imports = audit["bots"][0]["imports"].to_string();
    assert!(imports.contains("aviary:bot/messaging@0.1.0"), "{imports}");
}

#[test]
fn with_watch_off_a_change_loads_only_on_reload() {
    let (host, plugins, _keep) = host_with_versioned(&format!("watch = false\n{CONFIG}"));
    let b00 = listed(&host)["sha256"].as_str().unwrap().to_owned();
    let b01 = install(&plugins, 1, "b01", "");
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(
        listed(&host)["sha256"],
        b00.as_str(),
        "not watched: nothing loads by itself"
    );
    let (ok, text) = cli(&host, &["plugin", "list"]);
    assert!(ok && text.contains("not watched"), "{text}");
    let (ok, text) = cli(&host, &["reload"]);
    assert!(ok, "{text}");
    assert_eq!(listed(&host)["sha256"], b01.as_str());
}

#[test]
fn remove_keeps_kv_unless_purged_and_purging_needs_yes() {
    let plugins = tempfile::tempdir().unwrap();
    let copy_echo = || {
        for ext in ["wasm", "toml"] {
            std::fs::copy(
                bots_dir().join(format!("echo.{ext}")),
                plugins.path().join(format!("echo.{ext}")),
            )
            .unwrap();
        }
    };
    copy_echo();
    let host = Host::start_with_plugins("", plugins.path());
    let chat = host.conversation("echo", "memo");
    let say = |text: &str| {
        let id = chat.post_message("alice", text);
        chat.wait_for_reply(&id).text
    };
    assert_eq!(say("/remember the milk"), "remembered");

    let (ok, text) = cli(&host, &["plugin", "remove", "echo"]);
    assert!(ok && text.contains("kv is kept"), "{text}");
    assert!(
        !plugins.path().join("echo.wasm").exists(),
        "its files left the plugins directory"
    );
    assert!(host.bots().iter().all(|b| b["id"] != "echo"), "unloaded");
    copy_echo();
    wait_for_bot(&host, "echo");
    assert_eq!(say("/recall"), "the milk", "the kv outlived the removal");

    let (ok, text) = cli(&host, &["plugin", "remove", "echo", "--purge"]);
    assert!(!ok && text.contains("--yes"), "{text}");
    assert!(
        plugins.path().join("echo.wasm").exists(),
        "nothing happened without --yes"
    );
    let (ok, text) = cli(&host, &["plugin", "remove", "echo", "--purge", "--yes"]);
    assert!(ok && text.contains("purged (1 keys)"), "{text}");
    copy_echo();
    wait_for_bot(&host, "echo");
    assert_eq!(say("/recall"), "nothing remembered");
    let (ok, text) = cli(&host, &["plugin", "remove", "nobody"]);
    assert!(
        !ok && text.contains("404") && text.contains("no bot `nobody`"),
        "{text}"
    );
}

fn wait_for_bot(host: &Host, id: &str) {
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    while !host
        .bots()
        .iter()
        .any(|b| b["id"] == id && b["status"] == "running")
    {
        assert!(
            Instant::now() < deadline,
            "{id} did not load:\n{}",
            host.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn logs_and_stats_show_what_the_bot_did() {
    let (host, _plugins, _keep) = host_with_versioned(CONFIG);
    let chat = host.conversation("versioned", "observed");
    let mut follow = Command::new(aviary_bin())
        .args(["plugin", "logs", "versioned", "--follow", "--url"])
        .arg(host.base_url())
        .arg("--data-dir")
        .arg(host.data_dir())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    for text in ["one", "two", "/secret"] {
        let id = chat.post_message("alice", text);
        chat.wait_for_reply(&id);
    }
    chat.post_message("alice", "/fail");
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    while !seen
        .iter()
        .any(|l: &String| l.contains("the secret was refused: true"))
    {
        let line = lines.next().expect("logs --follow keeps printing").unwrap();
        seen.push(line);
    }
    follow.kill().unwrap();
    follow.wait().unwrap();
    assert!(
        seen[0].contains(" info ") && seen[0].contains("b00 handles \"one\""),
        "{seen:#?}"
    );
    assert!(
        seen.iter().any(|l| l.contains("stdio")),
        "stdio lines are kept: {seen:#?}"
    );

    let (ok, text) = cli(&host, &["plugin", "logs", "versioned"]);
    assert!(ok && text.contains("b00 handles \"two\""), "{text}");

    // /fail runs three times (max_retries 2), then is dead-lettered.
    let deadline = Instant::now() + CHANGE_TIMEOUT;
    let stats = loop {
        let (ok, text) = cli(&host, &["plugin", "stats", "versioned", "--json"]);
        assert!(ok, "{text}");
        let stats: Value = serde_json::from_str(&text).unwrap();
        if stats["dead_letters"] == 1 {
            break stats;
        }
        assert!(Instant::now() < deadline, "no dead letter: {stats:#}");
        std::thread::sleep(Duration::from_millis(50));
    };
    // alice's contact-added event, one, two, /secret, /fail three times.
    assert_eq!(stats["events"], 7, "{stats:#}");
    assert_eq!(stats["errors"], 3, "{stats:#}");
    assert_eq!(stats["denials"]["secrets"], 1, "{stats:#}");
    assert_eq!(stats["kv_max_keys"], 1000);
    assert!(stats["handle_p99_us"].as_u64().unwrap() >= stats["handle_p50_us"].as_u64().unwrap());
    assert!(stats["memory_high_water_bytes"].as_u64().unwrap() > 0);
    let (ok, text) = cli(&host, &["plugin", "stats", "versioned"]);
    assert!(
        ok && text.contains("7 (3 failed, 1 dead-lettered)") && text.contains("secrets 1"),
        "{text}"
    );
}

#[test]
fn disabled_survives_a_restart_and_rollback_reloads_from_the_kept_copy() {
    let (mut host, plugins, _keep) = host_with_versioned(CONFIG);
    let b00 = listed(&host)["sha256"].as_str().unwrap().to_owned();
    let b01 = install(&plugins, 1, "b01", "");
    wait_serving(&host, &b01);
    let (ok, text) = cli(&host, &["plugin", "disable", "versioned"]);
    assert!(ok, "{text}");
    let chat = host.conversation("versioned", "waiting");
    let id = chat.post_message("alice", "after the restart");
    host.restart();
    assert_eq!(listed(&host)["status"], "disabled");
    assert!(
        chat.wait_for_reply_within(&id, Duration::from_millis(700))
            .is_none(),
        "a disabled bot answers nothing"
    );
    // After a restart b00 is no longer in memory: it comes from the data
    // directory's copy, and the plugins directory gets its files back.
    let (ok, text) = cli(&host, &["plugin", "rollback", "versioned"]);
    assert!(
        ok && text.contains("to 0.0.0") && text.contains("kept copy"),
        "{text}"
    );
    let on_disk = std::fs::read(plugins.join("versioned.wasm")).unwrap();
    assert_eq!(sha256(&on_disk), b00);
    let (ok, text) = cli(&host, &["plugin", "enable", "versioned"]);
    assert!(ok, "{text}");
    assert_eq!(chat.wait_for_reply(&id).text, "b00: after the restart");
    let (ok, text) = cli(&host, &["plugin", "versions", "versioned"]);
    assert!(
        ok && text.contains("rollback") && text.contains("current"),
        "{text}"
    );
    let (ok, text) = cli(&host, &["plugin", "rollback", "versioned", "--to", "9.9.9"]);
    assert!(
        !ok && text.contains("never served a build matching `9.9.9`"),
        "{text}"
    );
}

#[test]
fn hostile_migrations_and_admin_requests_are_contained() {
    let (host, plugins, _keep) = host_with_versioned(CONFIG);
    let b00 = listed(&host)["sha256"].as_str().unwrap().to_owned();
    let chat = host.conversation("versioned", "storm-0");

    // A migrate that never returns is stopped by the CPU limit.
    install(&plugins, 1, "b01-spin-migrate", "");
    let spun = wait_listed(&host, "the spinning migrate stopped", |b| {
        b["error"]
            .as_str()
            .is_some_and(|e| e.contains("failed in migrate"))
    });
    assert_eq!(spun["sha256"], b00.as_str(), "b00 keeps serving: {spun:#}");

    // A migrate that sends: the host refuses the send; the build loads.
    let b02 = install(&plugins, 2, "b02-send-migrate", "");
    wait_serving(&host, &b02);
    let id = chat.post_message("alice", "after");
    assert_eq!(chat.wait_for_reply(&id).text, "b02-send-migrate: after");
    let texts: Vec<String> = chat.all_messages().into_iter().map(|m| m.text).collect();
    assert!(!texts.iter().any(|t| t == "from migrate"), "{texts:?}");
    let (_, logs) = cli(&host, &["plugin", "logs", "versioned"]);
    assert!(logs.contains("send refused in migrate"), "{logs}");

    // Admin requests without the token, or naming paths, get nowhere.
    let client = host.client();
    for path in ["/api/v1/admin/bots", "/api/v1/admin/bots/versioned/stats"] {
        let status = client.get(host.url(path)).send().unwrap().status();
        assert_eq!(status, 401, "{path} without a token");
    }
    let status = client
        .post(host.url("/api/v1/admin/bots/versioned/remove"))
        .send()
        .unwrap()
        .status();
    assert_eq!(status, 401);
    assert!(plugins.join("versioned.wasm").exists());
    let token = std::fs::read_to_string(host.data_dir().join("admin.token")).unwrap();
    let outside = host.dir().join("aviary.toml");
    for bot in ["..%2F..%2Faviary", "..%2Faviary", "%2E%2E"] {
        let answer = client
            .post(host.url(&format!("/api/v1/admin/bots/{bot}/remove")))
            .bearer_auth(token.trim())
            .json(&serde_json::json!({"purge": true, "confirm": true}))
            .send()
            .unwrap();
        assert_eq!(answer.status(), 404, "{bot}");
        assert!(
            outside.exists(),
            "nothing outside the plugins directory is deleted"
        );
    }
    let answer = client
        .get(host.url("/api/v1/admin/bots/versioned/logs?wait=100000"))
        .bearer_auth(token.trim())
        .send()
        .unwrap();
    assert_eq!(answer.status(), 400, "a wait beyond 25 s is refused");
    let answer = client
        .post(host.url("/api/v1/admin/bots/versioned/remove"))
        .bearer_auth(token.trim())
        .json(&serde_json::json!({"purge": true}))
        .send()
        .unwrap();
    assert_eq!(answer.status(), 400, "purging needs `confirm`");
    let (ok, text) = cli(&host, &["plugin", "rollback", "versioned", "--to", "b0"]);
    assert!(
        !ok && text.contains("never served a build matching"),
        "{text}"
    );
}
