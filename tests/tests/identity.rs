//! A bot's identity is where it was installed: `<id>.toml` + `<id>.wasm` in
//! the plugins directory. A component that claims another bot's id from
//! another file is refused and audited with its file, never swapped in: the
//! real bot keeps its conversations, its kv and its secret.

use std::path::Path;

use aviary_e2e::{bots_dir, hostile_dir, Host};
use serde_json::Value;

/// Runs the admin CLI against `host`; returns (exit ok, stdout + stderr).
fn cli(host: &Host, args: &[&str]) -> (bool, String) {
    let (ok, stdout, stderr) = host.cli(args);
    (ok, stdout + &stderr)
}

fn audit_records(host: &Host) -> Vec<Value> {
    let (ok, text) = cli(host, &["audit", "tail", "-n", "1000", "--json"]);
    assert!(ok, "aviary audit tail: {text}");
    serde_json::from_str::<Value>(&text)
        .unwrap_or_else(|e| panic!("audit tail printed no JSON ({e}): {text}"))
        .as_array()
        .unwrap()
        .clone()
}

/// The one `refuse` record of the bot installed as `file_id`.
fn refusal_of(host: &Host, file_id: &str) -> Value {
    let found: Vec<Value> = audit_records(host)
        .into_iter()
        .filter(|r| r["action"] == "refuse" && r["bot"] == file_id)
        .collect();
    assert_eq!(found.len(), 1, "one refusal of {file_id}: {found:#?}");
    found[0].clone()
}

fn bot_status(host: &Host, id: &str) -> Value {
    host.bots()
        .into_iter()
        .find(|b| b["id"] == id)
        .unwrap_or_else(|| panic!("{id} is listed: {:#?}", host.bots()))
}

/// Plugins dir with echo, and a policies dir whose echo grant adds the
/// secret `ECHO_TOKEN`; returns them with the host's config.
fn setup() -> (tempfile::TempDir, tempfile::TempDir, String) {
    let plugins = tempfile::tempdir().unwrap();
    for ext in ["wasm", "toml"] {
        let from = bots_dir().join(format!("echo.{ext}"));
        std::fs::copy(&from, plugins.path().join(format!("echo.{ext}"))).unwrap_or_else(|e| {
            panic!("{}: {e} (run `cargo xtask build-plugins`)", from.display())
        });
    }
    let policies = tempfile::tempdir().unwrap();
    let grant = std::fs::read_to_string(aviary_e2e::workspace_dir().join("policies/echo.toml"))
        .unwrap()
        .replacen("[send]", "secrets = [\"ECHO_TOKEN\"]\n\n[send]", 1);
    std::fs::write(policies.path().join("echo.toml"), grant).unwrap();
    // `mode = "snoop"` is ignored by echo but makes the mischief component,
    // if it ever ran as echo, answer with echo's kv and secret.
    let config = format!(
        "policies_dir = {:?}\n[bots.echo]\nsecrets = {{ ECHO_TOKEN = \"hunter2\" }}\nsettings = {{ mode = \"snoop\" }}\n",
        policies.path().display().to_string()
    );
    (plugins, policies, config)
}

/// Installs the mischief component as `<file_id>.wasm` with a manifest
/// claiming `claimed_id`.
fn install_impostor(dir: &Path, file_id: &str, claimed_id: &str) {
    let wasm = hostile_dir().join("mischief.wasm");
    std::fs::copy(&wasm, dir.join(format!("{file_id}.wasm")))
        .unwrap_or_else(|e| panic!("{}: {e} (build the hostile bots)", wasm.display()));
    let manifest = std::fs::read_to_string(hostile_dir().join("mischief.toml"))
        .unwrap()
        .replacen("id = \"mischief\"", &format!("id = \"{claimed_id}\""), 1);
    std::fs::write(dir.join(format!("{file_id}.toml")), manifest).unwrap();
}

#[test]
fn a_component_claiming_echos_id_from_another_file_is_refused_and_echo_keeps_its_data() {
    let (plugins, _policies, config) = setup();
    let host = Host::start_with_plugins(&config, plugins.path());
    let echo = host.conversation("echo", "shared");
    let id = echo.post_message("alice", "/remember the cake is in the oven");
    assert_eq!(echo.wait_for_reply(&id).text, "remembered");
    let echo_sha = bot_status(&host, "echo")["sha256"].clone();
    let load = audit_records(&host)
        .into_iter()
        .find(|r| r["action"] == "load" && r["bot"] == "echo")
        .expect("echo's load is audited");
    assert!(
        load["detail"]
            .as_str()
            .unwrap()
            .contains(&plugins.path().join("echo.toml").display().to_string()),
        "the load record names the file: {load}"
    );

    install_impostor(plugins.path(), "impostor", "echo");
    let (ok, text) = cli(&host, &["reload"]);
    assert!(ok, "aviary reload: {text}");

    // Echo is still the real echo: same build, same answers, same kv.
    let status = bot_status(&host, "echo");
    assert_eq!(
        (&status["sha256"], status["status"].as_str()),
        (&echo_sha, Some("running"))
    );
    let id = echo.post_message("alice", "look");
    let reply = echo.wait_for_reply(&id).text;
    assert_eq!(reply, "echo: look", "the impostor never answered");
    let id = echo.post_message("alice", "/recall");
    assert_eq!(echo.wait_for_reply(&id).text, "the cake is in the oven");
    assert!(
        echo.all_messages()
            .iter()
            .all(|m| !m.text.contains("hunter2") && m.text != "pong"),
        "nothing of the impostor reached echo's conversation"
    );

    // The impostor is refused under its file's name, and the audit says why.
    let impostor = bot_status(&host, "impostor");
    assert_eq!(impostor["status"], "failed");
    let record = refusal_of(&host, "impostor");
    let file = plugins.path().join("impostor.toml").display().to_string();
    assert_eq!(record["target"], file.as_str(), "{record}");
    let detail = record["detail"].as_str().unwrap();
    assert!(
        detail.contains("id = \"echo\"") && detail.contains("installed as `impostor`"),
        "{detail}"
    );

    // A second reload (or a restart) does not swap it in either.
    let (ok, text) = cli(&host, &["reload"]);
    assert!(ok, "{text}");
    let mut host = host;
    host.restart();
    assert_eq!(bot_status(&host, "echo")["sha256"], echo_sha);
    let echo = host.conversation("echo", "shared");
    let id = echo.post_message("alice", "/recall");
    assert_eq!(echo.wait_for_reply(&id).text, "the cake is in the oven");
}

#[test]
fn case_variants_links_outside_and_missing_components_are_refused() {
    let (plugins, _policies, config) = setup();
    let dir = plugins.path();
    // A case variant of echo's name claiming echo's id.
    install_impostor(dir, "Echo", "echo");
    // A manifest whose id is valid but whose component is missing.
    install_impostor(dir, "ghost", "ghost");
    std::fs::remove_file(dir.join("ghost.wasm")).unwrap();
    // A bot whose files are links to files outside the plugins directory.
    let outside = tempfile::tempdir().unwrap();
    install_impostor(outside.path(), "linked", "linked");
    for ext in ["toml", "wasm"] {
        std::os::unix::fs::symlink(
            outside.path().join(format!("linked.{ext}")),
            dir.join(format!("linked.{ext}")),
        )
        .unwrap();
    }
    let host = Host::start_with_plugins(&config, dir);

    let echo = host.conversation("echo", "c");
    let id = echo.post_message("alice", "hi");
    assert_eq!(echo.wait_for_reply(&id).text, "echo: hi");

    let case = refusal_of(&host, "Echo");
    assert!(
        case["detail"]
            .as_str()
            .unwrap()
            .contains("installed as `Echo`"),
        "{case}"
    );
    let ghost = refusal_of(&host, "ghost");
    assert!(
        ghost["detail"].as_str().unwrap().contains("ghost.wasm"),
        "names the missing component: {ghost}"
    );
    let linked = refusal_of(&host, "linked");
    assert!(
        linked["detail"]
            .as_str()
            .unwrap()
            .contains("outside the plugins directory"),
        "{linked}"
    );
    let running: Vec<String> = host
        .bots()
        .into_iter()
        .filter(|b| b["status"] == "running")
        .map(|b| b["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(running, ["echo"], "only the real echo runs");
}
