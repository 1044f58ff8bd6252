//! `aviary plugin new`: the crate it writes passes its own unit tests,
//! builds into a component that a real host loads and runs, and the command
//! refuses bad names, non-empty directories and a missing SDK with a message
//! that says what is wrong.
//!
//! The generated crate lives in, and builds into, `target/plugin-new-test`
//! (under this repository, so inside its cargo workspace), so that repeated
//! runs reuse its dependencies.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use aviary_e2e::{aviary_bin, workspace_dir, Host};

/// Runs `aviary <args>` with `envs` added; returns its output.
fn aviary(args: &[&str], envs: &[(&str, &Path)]) -> Output {
    let mut command = Command::new(aviary_bin());
    command.args(args);
    for (key, value) in envs {
        command.env(key, value);
    }
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", aviary_bin().display()))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts that `aviary <args>` fails and returns its stderr.
fn refused(args: &[&str], envs: &[(&str, &Path)]) -> String {
    let out = aviary(args, envs);
    assert!(
        !out.status.success(),
        "aviary {args:?} succeeded:\n{}",
        text(&out.stdout)
    );
    text(&out.stderr)
}

/// Where the generated crate's builds go: shared by runs, so they are warm.
fn target_dir() -> PathBuf {
    workspace_dir().join("target/plugin-new-test")
}

fn cargo() -> Command {
    let mut command = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.env("CARGO_TARGET_DIR", target_dir());
    command
}

/// The files in `dir`, by name, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

const GREETER_GRANT: &str = "[bots.greeter.grant]\n\
    kv = { max_bytes = 65536, max_keys = 1000 }\n\
    send = { per_conversation_per_minute = 60, per_bot_per_minute = 600 }\n";

#[test]
fn a_new_bot_passes_its_tests_builds_and_answers_in_a_real_host() {
    // Inside this repository's workspace (under target/), where the crate
    // builds only because it is a workspace of its own.
    std::fs::create_dir_all(target_dir()).unwrap();
    let work = tempfile::Builder::new()
        .prefix("work-")
        .tempdir_in(target_dir())
        .unwrap();
    let parent = work.path().join("bots-src");
    let out = aviary(
        &[
            "plugin",
            "new",
            "greeter",
            "--dir",
            parent.to_str().unwrap(),
        ],
        &[],
    );
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "aviary plugin new failed:\n{}",
        text(&out.stderr)
    );
    let crate_dir = std::fs::canonicalize(parent.join("greeter")).unwrap();
    assert!(
        stdout.contains(&format!("cd {} && cargo test", crate_dir.display())),
        "{stdout}"
    );
    assert!(stdout.contains("aviary plugin install ."), "{stdout}");
    assert_eq!(
        entries(&crate_dir),
        [".gitignore", "Cargo.toml", "README.md", "bot.toml", "src"]
    );
    let cargo_toml = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    let sdk = std::fs::canonicalize(workspace_dir().join("sdk")).unwrap();
    assert!(
        cargo_toml.contains(&format!("path = \"{}\"", sdk.display())),
        "the SDK of this checkout, by absolute path:\n{cargo_toml}"
    );

    // The crate's own unit tests pass as generated.
    let tested = cargo()
        .arg("test")
        .current_dir(&crate_dir)
        .output()
        .expect("run cargo test");
    let test_log = format!("{}{}", text(&tested.stdout), text(&tested.stderr));
    assert!(tested.status.success(), "cargo test failed:\n{test_log}");
    assert!(
        test_log.contains("test result: ok. 3 passed"),
        "the generated crate's three unit tests ran:\n{test_log}"
    );

    // It builds into a component and a manifest the host loads.
    let plugins = work.path().join("plugins");
    let built = aviary(
        &[
            "plugin",
            "build",
            crate_dir.to_str().unwrap(),
            "--out",
            plugins.to_str().unwrap(),
        ],
        &[("CARGO_TARGET_DIR", &target_dir())],
    );
    assert!(
        built.status.success(),
        "aviary plugin build failed:\n{}",
        text(&built.stderr)
    );
    assert_eq!(entries(&plugins), ["greeter.toml", "greeter.wasm"]);

    let host = Host::start_with_plugins(GREETER_GRANT, &plugins);
    let greeter = host
        .bots()
        .into_iter()
        .find(|bot| bot["id"] == "greeter")
        .unwrap_or_else(|| panic!("greeter is not listed:\n{}", host.log()));
    assert_eq!(greeter["version"], "0.1.0");
    assert_eq!(greeter["status"], "running", "{greeter}\n{}", host.log());

    // It answers, counting in kv per conversation.
    let chat = host.conversation("greeter", "room");
    for (n, message) in ["hello", "again"].into_iter().enumerate() {
        let id = chat.post_message("alice", message);
        let reply = chat.wait_for_reply(&id);
        assert_eq!(reply.text, format!("greeter heard #{}: {message}", n + 1));
    }
    let other = host.conversation("greeter", "other");
    let id = other.post_message("bob", "hi");
    assert_eq!(other.wait_for_reply(&id).text, "greeter heard #1: hi");
}

#[test]
fn refuses_bad_names_with_the_rule_they_break() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().to_str().unwrap();
    let stderr = refused(&["plugin", "new", "my bot", "--dir", dir], &[]);
    assert!(
        stderr.contains("`my bot` is not a valid bot id"),
        "{stderr}"
    );
    let stderr = refused(&["plugin", "new", "my.bot", "--dir", dir], &[]);
    assert!(
        stderr.contains("cannot name a cargo package: `.` is not allowed"),
        "{stderr}"
    );
    let stderr = refused(&["plugin", "new", "1bot", "--dir", dir], &[]);
    assert!(stderr.contains("must start with a letter"), "{stderr}");
    let stderr = refused(&["plugin", "new", "fn", "--dir", dir], &[]);
    assert!(stderr.contains("Rust keyword"), "{stderr}");
    assert!(entries(work.path()).is_empty(), "nothing was written");
}

#[test]
fn refuses_a_non_empty_directory_and_leaves_it_alone() {
    let work = tempfile::tempdir().unwrap();
    let target = work.path().join("greeter");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("notes.txt"), "mine").unwrap();
    let stderr = refused(
        &[
            "plugin",
            "new",
            "greeter",
            "--dir",
            work.path().to_str().unwrap(),
        ],
        &[],
    );
    let shown = std::fs::canonicalize(&target).unwrap();
    assert!(
        stderr.contains(&format!(
            "{} already exists and is not empty",
            shown.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("choose another name or --dir"), "{stderr}");
    assert_eq!(entries(&target), ["notes.txt"]);
    assert_eq!(entries(work.path()), ["greeter"], "no staging dir is left");
}

#[test]
fn refuses_a_missing_sdk_naming_the_sdk_option() {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("out");
    let missing = work.path().join("no-sdk");
    let args = ["plugin", "new", "greeter", "--dir", dir.to_str().unwrap()];
    let stderr = refused(
        &[&args[..], &["--sdk", missing.to_str().unwrap()]].concat(),
        &[],
    );
    assert!(stderr.contains("--sdk"), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    let stderr = refused(&args, &[("AVIARY_SDK", &missing)]);
    assert!(
        stderr.contains(&format!("no Aviary SDK in {}", missing.display())),
        "AVIARY_SDK is read: {stderr}"
    );
    assert!(!dir.join("greeter").exists(), "nothing was written");
}
