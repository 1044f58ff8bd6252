//! The release `aviary` binary started for a benchmark: `aviary up` on a
//! free loopback port with a configuration, data, plugins and policies
//! directory of the benchmark's choosing, ready once `/healthz` answers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// How a benchmark wants its host.
pub struct Setup<'a> {
    /// Holds `aviary.toml` and `data/`.
    pub dir: PathBuf,
    /// The contents of `aviary.toml`.
    pub config: String,
    pub plugins: &'a Path,
    pub policies: &'a Path,
    /// The time limit of each HTTP request the benchmark makes.
    pub timeout: Duration,
}

/// A running host, killed when dropped.
pub struct Served {
    child: Child,
    pub base: String,
    pub client: reqwest::blocking::Client,
    /// From spawning the binary to `/healthz` answering.
    pub ready_in: Duration,
    dir: PathBuf,
}

impl Served {
    /// Starts the binary as `setup` says and waits (60 s at most) for it.
    pub fn start(setup: Setup) -> Result<Served> {
        std::fs::create_dir_all(&setup.dir)?;
        std::fs::write(setup.dir.join("aviary.toml"), &setup.config)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let started = Instant::now();
        let child = Command::new(env!("CARGO_BIN_EXE_aviary"))
            .args(["up", "--config"])
            .arg(setup.dir.join("aviary.toml"))
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(setup.dir.join("data"))
            .arg("--plugins-dir")
            .arg(setup.plugins)
            .arg("--policies-dir")
            .arg(setup.policies)
            .env("AVIARY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the aviary binary")?;
        let mut served = Served {
            child,
            base: format!("http://127.0.0.1:{port}"),
            client: reqwest::blocking::Client::builder()
                .timeout(setup.timeout)
                .build()?,
            ready_in: Duration::ZERO,
            dir: setup.dir,
        };
        let probe = reqwest::blocking::Client::builder()
            .timeout(Duration::from_millis(500))
            .build()?;
        while !probe
            .get(format!("{}/healthz", served.base))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the host did not answer /healthz within 60 s"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        served.ready_in = started.elapsed();
        Ok(served)
    }

    /// The admin token the host wrote into its data directory.
    pub fn admin_token(&self) -> Result<String> {
        Ok(std::fs::read_to_string(self.dir.join("data/admin.token"))?
            .trim()
            .to_owned())
    }

    /// A new conversation with `bot`: (id, token).
    pub fn conversation(&self, bot: &str) -> Result<(String, String)> {
        let created: Value = self
            .client
            .post(format!("{}/api/v1/bots/{bot}/conversations", self.base))
            .json(&json!({"user": {"id": "bench"}}))
            .send()?
            .error_for_status()?
            .json()?;
        Ok((
            created["conversation"]
                .as_str()
                .context("no conversation")?
                .to_owned(),
            created["token"].as_str().context("no token")?.to_owned(),
        ))
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
