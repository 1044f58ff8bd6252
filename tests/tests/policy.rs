//! Policy review through the `aviary` CLI against a running host: audit of
//! what a bot can reach, diff of two builds, an upgrade that asks for more
//! held while the old version serves, approval and rejection, and the
//! audit log's hash chain.

use std::path::Path;
use std::process::Command;

use aviary_e2e::{aviary_bin, bots_dir, hostile_dir, Host};
use serde_json::Value;

fn hostile(name: &str) -> std::path::PathBuf {
    hostile_dir().join(name)
}

/// Runs the admin CLI against `host`; returns (exit ok, stdout, stderr).
fn cli(host: &Host, args: &[&str]) -> (bool, String, String) {
    host.cli(args)
}

fn cli_json(host: &Host, args: &[&str]) -> Value {
    let (ok, stdout, stderr) = cli(host, args);
    assert!(ok, "aviary {args:?} failed: {stderr}");
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("aviary {args:?} printed no JSON ({e}): {stdout}"))
}

/// Writes the mischief bot as `<dir>/pet.{wasm,toml}` with this version and asks.
fn deploy_pet(dir: &Path, version: &str, memory_mb: u32) {
    std::fs::copy(hostile("mischief.wasm"), dir.join("pet.wasm"))
        .expect("built hostile bots (run `cargo xtask test`)");
    let manifest = format!(
        "id = \"pet\"\nversion = \"{version}\"\ndescription = \"a pet\"\n[asks]\nmemory_mb = {memory_mb}\n\
         [asks.send]\nper_conversation_per_minute = 5\nper_bot_per_minute = 50\n[asks.kv]\nmax_bytes = 1024\nmax_keys = 10\n"
    );
    std::fs::write(dir.join("pet.toml"), manifest).unwrap();
}

const PET_GRANT: &str = "[bots.pet]\nsettings = { mode = \"panic\" }\n[bots.pet.grant]\nmemory_mb = 16\n\
    send = { per_conversation_per_minute = 5, per_bot_per_minute = 50 }\nkv = { max_bytes = 1024, max_keys = 10 }\n";

fn plugins_with_echo() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            bots_dir().join(format!("echo.{ext}")),
            dir.path().join(format!("echo.{ext}")),
        )
        .unwrap();
    }
    dir
}

fn pet_status(host: &Host) -> Value {
    host.bots()
        .into_iter()
        .find(|b| b["id"] == "pet")
        .expect("pet is listed")
}

fn assert_pet_answers(host: &Host) {
    let conversation = host.conversation("pet", "c");
    let id = conversation.post_message("owner", "ping");
    assert_eq!(conversation.wait_for_reply(&id).text, "pong");
}

#[test]
fn policy_audit_shows_hash_imports_asks_grant_and_gaps() {
    let plugins = plugins_with_echo();
    deploy_pet(plugins.path(), "1.0.0", 16);
    let host = Host::start_with_plugins(
        &format!("{PET_GRANT}http = [\"https://*.example.com:443\"]\n"),
        plugins.path(),
    );
    let audits = cli_json(&host, &["policy", "audit", "--json"]);
    let echo = audits
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["bot"] == "echo")
        .expect("echo is audited");
    let echo_sha = host.bots().into_iter().find(|b| b["id"] == "echo").unwrap()["sha256"].clone();
    assert_eq!(echo["sha256"], echo_sha);
    let imports: Vec<&str> = echo["imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        imports.contains(&"aviary:bot/messaging@0.1.5") && imports.contains(&"aviary:bot/kv@0.1.5"),
        "{imports:?}"
    );
    assert!(
        imports.iter().all(|i| !i.starts_with("wasi:filesystem")),
        "{imports:?}"
    );
    assert_eq!(
        echo["grant"]["kv"]["max_keys"], 10000,
        "echo's grant comes from policies/echo.toml"
    );
    assert_eq!(echo["missing"], serde_json::json!([]));
    let pet = audits
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["bot"] == "pet")
        .unwrap();
    let unused: Vec<&str> = pet["unused_grants"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    assert!(
        unused
            .iter()
            .any(|u| u.starts_with("http (the component does not import")),
        "{unused:?}"
    );
    assert_eq!(
        pet["risks"],
        serde_json::json!(["wildcard egress: https://*.example.com:443"])
    );
    let (ok, text, _) = cli(&host, &["policy", "audit", "pet"]);
    assert!(
        ok && text.contains("bot pet 1.0.0 (running)") && text.contains("wildcard egress"),
        "{text}"
    );
    let (ok, _, stderr) = cli(&host, &["policy", "audit", "nobody"]);
    assert!(!ok && stderr.contains("no bot named `nobody`"), "{stderr}");
}

#[test]
fn an_upgrade_that_asks_for_more_is_held_until_approved() {
    let plugins = plugins_with_echo();
    deploy_pet(plugins.path(), "1.0.0", 16);
    let host = Host::start_with_plugins(PET_GRANT, plugins.path());
    assert_eq!(pet_status(&host)["version"], "1.0.0");

    // 2.0.0 asks for 64 MiB where 16 are granted: held, 1.0.0 keeps serving.
    deploy_pet(plugins.path(), "2.0.0", 64);
    let (ok, stdout, stderr) = cli(&host, &["reload"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.contains("pet 1.0.0 running (version 2.0.0 held for approval)"),
        "{stdout}"
    );
    let status = pet_status(&host);
    assert_eq!(
        (
            status["version"].as_str(),
            status["pending"]["version"].as_str()
        ),
        (Some("1.0.0"), Some("2.0.0"))
    );
    assert_eq!(
        status["pending"]["shortfalls"][0]["capability"],
        "memory_mb"
    );
    assert_pet_answers(&host);

    let (ok, _, stderr) = cli(&host, &["policy", "approve", "pet", "9.9.9"]);
    assert!(
        !ok && stderr.contains("has version 2.0.0 waiting, not 9.9.9"),
        "{stderr}"
    );
    let (ok, _, stderr) = cli(&host, &["policy", "approve", "pet", "2.0.0"]);
    assert!(ok, "{stderr}");
    let status = pet_status(&host);
    assert_eq!(
        (status["version"].as_str(), status["status"].as_str()),
        (Some("2.0.0"), Some("running"))
    );
    assert!(status.get("pending").is_none(), "{status}");
    assert_pet_answers(&host);

    // The approval is remembered: a restart loads 2.0.0 straight away.
    let mut host = host;
    host.restart();
    assert_eq!(pet_status(&host)["version"], "2.0.0");
    let actions: Vec<String> = cli_json(&host, &["audit", "tail", "-n", "100", "--json"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["bot"] == "pet")
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(actions, ["load", "hold", "approve", "load", "load"]);
}

#[test]
fn a_rejected_upgrade_leaves_the_old_version_serving() {
    let plugins = plugins_with_echo();
    deploy_pet(plugins.path(), "1.0.0", 16);
    let host = Host::start_with_plugins(PET_GRANT, plugins.path());
    deploy_pet(plugins.path(), "1.1.0", 32);
    assert!(cli(&host, &["reload"]).0);
    let (ok, _, stderr) = cli(&host, &["policy", "reject", "pet", "1.1.0"]);
    assert!(ok, "{stderr}");
    let status = pet_status(&host);
    assert_eq!(status["version"], "1.0.0");
    assert!(status.get("pending").is_none());
    assert_pet_answers(&host);
    let (ok, _, stderr) = cli(&host, &["policy", "approve", "pet", "1.1.0"]);
    assert!(!ok && stderr.contains("no version waiting"), "{stderr}");
}

#[test]
fn policy_diff_names_added_imports_and_asks() {
    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    let new = dir.path().join("new");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&new).unwrap();
    for ext in ["wasm", "toml"] {
        std::fs::copy(
            bots_dir().join(format!("echo.{ext}")),
            old.join(format!("bot.{ext}")),
        )
        .unwrap();
        std::fs::copy(
            hostile(&format!("fetcher.{ext}")),
            new.join(format!("bot.{ext}")),
        )
        .unwrap();
    }
    let out = Command::new(aviary_bin())
        .args(["policy", "diff", "--json"])
        .arg(old.join("bot.wasm"))
        .arg(new.join("bot.wasm"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let diff: Value = serde_json::from_slice(&out.stdout).unwrap();
    let added: Vec<&str> = diff["added_imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(
        added
            .iter()
            .any(|i| i.starts_with("wasi:http/outgoing-handler")),
        "{added:?}"
    );
    let removed: Vec<&str> = diff["removed_imports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_str().unwrap())
        .collect();
    assert!(removed.contains(&"aviary:bot/kv@0.1.5"), "{removed:?}");
    assert_eq!(diff["added_asks"][0]["capability"], "http");
    let text = Command::new(aviary_bin())
        .args(["policy", "diff"])
        .arg(old.join("bot.wasm"))
        .arg(new.join("bot.wasm"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&text.stdout).contains("will be held for approval"));
}

#[test]
fn audit_verify_accepts_the_chain_the_host_wrote() {
    let plugins = plugins_with_echo();
    let host = Host::start_with_plugins("", plugins.path());
    let (ok, stdout, stderr) = cli(&host, &["audit", "verify"]);
    assert!(ok, "{stderr}");
    assert!(
        stdout.starts_with("audit log intact: 1 records"),
        "{stdout}"
    );
    let (ok, _, stderr) = Command::new(aviary_bin())
        .args([
            "audit",
            "verify",
            "--url",
            &host.base_url(),
            "--data-dir",
            "/nonexistent",
        ])
        .output()
        .map(|o| {
            (
                o.status.success(),
                (),
                String::from_utf8_lossy(&o.stderr).into_owned(),
            )
        })
        .unwrap();
    assert!(
        !ok && stderr.contains("cannot read the admin token"),
        "{stderr}"
    );
}

#[test]
fn audit_tail_shows_local_dates_not_epoch_milliseconds() {
    let host = Host::start("");
    let (ok, out, err) = host.cli(&["audit", "tail", "-n", "5"]);
    assert!(ok, "audit tail failed: {err}");
    let line = out
        .lines()
        .find(|line| line.contains(" load bot=echo"))
        .unwrap_or_else(|| panic!("no load record of echo in:\n{out}"));
    // "#0 2026-12-02T03:04:05.123+00:00 load bot=echo ..."
    let at = line.split_whitespace().nth(1).unwrap();
    assert_eq!(at.len(), 29, "{line}");
    assert_eq!(
        (&at[4..5], &at[10..11], &at[19..20]),
        ("-", "T", "."),
        "{line}"
    );
    assert!(matches!(&at[23..24], "+" | "-"), "{line}");
}
