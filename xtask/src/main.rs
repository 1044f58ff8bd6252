//! `cargo xtask up | test | bench | build-plugin <dir>`: the project's set-up,
//! run, test and benchmark entry points. Each installs what it needs first.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

const USAGE: &str = "usage: cargo xtask <command>

commands:
  up                  install what is missing, build host and bots, start the host (127.0.0.1:8080 unless --listen says)
  test                install what is missing and run the whole test suite (unit and end-to-end)
  bench               build in release and run the benchmarks; the last line is a JSON object
  build-plugin <dir>  build one bot crate into target/bots
  build-plugins       build every shipped bot into target/bots";

/// Shipped bots, built into `target/bots` (the host's plugins directory in
/// tests, `up` and benchmarks).
const SHIPPED_BOTS: &[&str] = &["plugins/echo"];

/// Hostile bots for the sandbox tests, built into `target/hostile`.
const HOSTILE_BOTS: &[&str] = &[
    "plugins/hostile/mischief",
    "plugins/hostile/fetcher",
    "plugins/hostile/fs-reader",
    "plugins/hostile/other-world",
    "plugins/hostile/future-wit",
    "plugins/hostile/versioned",
    "plugins/hostile/contract-0.1.0",
];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = workspace_root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("up") => up(&root, &args[1..]),
        Some("test") => test(&root, &args[1..]),
        Some("bench") => bench(&root),
        Some("build-plugin") => {
            let dir = args.get(1).context("build-plugin needs the bot crate's directory, e.g. `cargo xtask build-plugin plugins/echo`")?;
            ensure_wasm_target()?;
            build_host(&root, false)?;
            build_plugin(&root, false, Path::new(dir), "target/bots")
        }
        Some("build-plugins") => {
            ensure_wasm_target()?;
            build_host(&root, false)?;
            build_shipped_bots(&root, false)
        }
        _ => {
            eprintln!("{USAGE}");
            bail!("unknown or missing command")
        }
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

fn up(root: &Path, extra: &[String]) -> Result<()> {
    ensure_wasm_target()?;
    build_host(root, true)?;
    build_shipped_bots(root, true)?;
    let mut command = Command::new(host_binary(root, true));
    command
        .args(["up", "--plugins-dir"])
        .arg(root.join("target/bots"))
        .arg("--policies-dir")
        .arg(root.join("policies"))
        .args(extra);
    println!(
        "starting aviary: open {} (Ctrl-C stops it)",
        served_url(extra)
    );
    run(&mut command)
}

/// The address `aviary up` serves on, as given by `--listen` among `extra`
/// (its default otherwise); a `listen` set in a `--config` file shows in
/// the host's own "serving on" line.
fn served_url(extra: &[String]) -> String {
    let listen = extra
        .iter()
        .position(|arg| arg == "--listen")
        .and_then(|i| extra.get(i + 1).cloned())
        .or_else(|| {
            extra
                .iter()
                .find_map(|arg| arg.strip_prefix("--listen=").map(str::to_owned))
        })
        .unwrap_or_else(|| "127.0.0.1:8080".to_owned());
    format!("http://{listen}")
}

fn test(root: &Path, extra: &[String]) -> Result<()> {
    ensure_wasm_target()?;
    ensure_browser()?;
    build_for_tests()?;
    build_shipped_bots(root, false)?;
    build_hostile_bots(root, false)?;
    run(Command::new(cargo()).args([
        "test",
        "--manifest-path",
        "plugins/Cargo.toml",
        "-p",
        "echo",
    ]))?;
    run(Command::new(cargo())
        .args(["test", "--workspace"])
        .args(extra)
        .env("AVIARY_BIN", host_binary(root, false))
        .env("AVIARY_BOTS_DIR", root.join("target/bots"))
        .env("AVIARY_HOSTILE_DIR", root.join("target/hostile"))
        .env("AVIARY_POLICIES_DIR", root.join("policies")))
}

fn bench(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    build_host(root, true)?;
    build_shipped_bots(root, true)?;
    build_hostile_bots(root, true)?;
    run(Command::new(cargo())
        .args(["bench", "-p", "aviary-host", "--bench", "host"])
        .env("AVIARY_BOTS_DIR", root.join("target/bots"))
        .env("AVIARY_HOSTILE_DIR", root.join("target/hostile")))
}

fn build_hostile_bots(root: &Path, release: bool) -> Result<()> {
    for dir in HOSTILE_BOTS {
        build_plugin(root, release, Path::new(dir), "target/hostile")?;
    }
    Ok(())
}

/// Builds the `aviary` binary together with every test target, in one
/// cargo run: the binary then shares the tests' feature set, so `cargo test
/// --workspace` does not build wasmtime and its dependencies a second time.
fn build_for_tests() -> Result<()> {
    run(Command::new(cargo()).args(["build", "--workspace", "--all-targets"]))
}

fn build_host(_root: &Path, release: bool) -> Result<()> {
    let mut command = Command::new(cargo());
    command.args(["build", "-p", "aviary-host", "--bin", "aviary"]);
    if release {
        command.arg("--release");
    }
    run(&mut command)
}

fn host_binary(root: &Path, release: bool) -> PathBuf {
    root.join("target")
        .join(if release { "release" } else { "debug" })
        .join("aviary")
}

fn build_shipped_bots(root: &Path, release: bool) -> Result<()> {
    for dir in SHIPPED_BOTS {
        build_plugin(root, release, Path::new(dir), "target/bots")?;
    }
    Ok(())
}

/// Builds a bot with the host's own `aviary plugin build` into `out`,
/// sharing one target directory so the SDK is compiled once for all bots.
fn build_plugin(root: &Path, release: bool, dir: &Path, out: &str) -> Result<()> {
    run(Command::new(host_binary(root, release))
        .args(["plugin", "build"])
        .arg(dir)
        .arg("--out")
        .arg(root.join(out))
        .env("CARGO_TARGET_DIR", root.join("plugins/target")))
}

fn ensure_wasm_target() -> Result<()> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == "wasm32-wasip2") {
        run(Command::new("rustup").args(["target", "add", "wasm32-wasip2"]))?;
    }
    Ok(())
}

/// Debian's Chromium and ChromeDriver drive the chat page's browser test.
fn ensure_browser() -> Result<()> {
    if Path::new("/usr/bin/chromium").exists() && Path::new("/usr/bin/chromedriver").exists() {
        return Ok(());
    }
    let sudo: &[&str] = if is_root() { &[] } else { &["sudo"] };
    let apt = |args: &[&str]| {
        let mut all: Vec<&str> = sudo.to_vec();
        all.push("apt-get");
        all.extend_from_slice(args);
        let mut command = Command::new(all[0]);
        command
            .args(&all[1..])
            .env("DEBIAN_FRONTEND", "noninteractive");
        run(&mut command)
    };
    apt(&["update", "-q"])?;
    apt(&[
        "install",
        "-y",
        "-q",
        "--no-install-recommends",
        "chromium",
        "chromium-driver",
    ])
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_ok_and(|uid| uid.trim() == "0")
}

fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())
}

fn run(command: &mut Command) -> Result<()> {
    let status = command
        .status()
        .with_context(|| format!("cannot run {command:?}"))?;
    if !status.success() {
        bail!("{command:?} failed with {status}");
    }
    Ok(())
}

fn output(command: &mut Command) -> Result<String> {
    let out = command
        .output()
        .with_context(|| format!("cannot run {command:?}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
