//! Plate lookup through the real binary: photos from `plategen`'s accuracy
//! set (never tuned on) posted over HTTP to `plate-lookup`, each answer
//! read back; accuracy is the bot's final reading against the plate drawn,
//! separators ignored; latency is from the POST to the answer readable.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// Photos read (the accuracy set's first ones).
const PHOTOS: u32 = 120;

/// What the plate benchmark measured.
pub struct PlateFigures {
    pub accuracy: f64,
    pub accuracy_hard: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub photos: usize,
}

pub fn figures(scratch: &Path, bots: &Path, policies: &Path) -> Result<PlateFigures> {
    let host = Host::start(scratch, bots, policies)?;
    let photos: Vec<plategen::Photo> = (0..PHOTOS)
        .map(|i| plategen::photo(plategen::Set::Accuracy, i))
        .collect();
    let hard: Vec<String> = plategen::hardest_third(&photos)
        .iter()
        .map(|p| p.plate.clone())
        .collect();
    let (conversation, token) = host.conversation()?;
    let mut latencies = Vec::new();
    let (mut right, mut right_hard) = (0usize, 0usize);
    for photo in &photos {
        let started = Instant::now();
        let answer = host.ask(&conversation, &token, &photo.jpeg)?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let read = reading(&answer);
        let ok = read.as_deref() == Some(normalise(&photo.plate).as_str());
        if !ok {
            eprintln!(
                "plate {} (difficulty {:.2}): {answer}",
                photo.plate,
                photo.difficulty()
            );
        }
        right += usize::from(ok);
        right_hard += usize::from(ok && hard.contains(&photo.plate));
    }
    latencies.sort_by(f64::total_cmp);
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(PlateFigures {
        accuracy: right as f64 / photos.len() as f64,
        accuracy_hard: right_hard as f64 / hard.len() as f64,
        p50_ms: at(0.5),
        p95_ms: at(0.95),
        photos: photos.len(),
    })
}

fn normalise(plate: &str) -> String {
    plate
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// The plate the bot says it read, if it gave a reading it stands by.
fn reading(answer: &str) -> Option<String> {
    let rest = answer.strip_prefix("I read ")?;
    if answer.contains("too little to look it up") {
        return None;
    }
    Some(normalise(rest.split(" (").next()?))
}

/// The release binary serving `plate-lookup`.
struct Host {
    child: Child,
    base: String,
    client: reqwest::blocking::Client,
}

impl Host {
    fn start(scratch: &Path, bots: &Path, policies: &Path) -> Result<Host> {
        let dir = scratch.join("plates");
        std::fs::create_dir_all(&dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new(env!("CARGO_BIN_EXE_aviary"))
            .arg("up")
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .arg("--data-dir")
            .arg(dir.join("data"))
            .arg("--plugins-dir")
            .arg(bots)
            .arg("--policies-dir")
            .arg(policies)
            .env("AVIARY_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start the aviary binary")?;
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()?;
        let started = Instant::now();
        while !client
            .get(format!("{base}/healthz"))
            .send()
            .is_ok_and(|r| r.status().is_success())
        {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "the host did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Host {
            child,
            base,
            client,
        })
    }

    fn conversation(&self) -> Result<(String, String)> {
        let created: Value = self
            .client
            .post(format!(
                "{}/api/v1/bots/plate-lookup/conversations",
                self.base
            ))
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

    /// Posts `photo` and waits for the answer to it.
    fn ask(&self, conversation: &str, token: &str, photo: &[u8]) -> Result<String> {
        let boundary = "bench-boundary-51c3";
        let mut body = format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"car.jpg\"\r\n\r\n"
        )
        .into_bytes();
        body.extend_from_slice(photo);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let messages = format!(
            "{}/api/v1/bots/plate-lookup/conversations/{conversation}/messages",
            self.base
        );
        let posted: Value = self
            .client
            .post(&messages)
            .bearer_auth(token)
            .header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(body)
            .send()?
            .error_for_status()?
            .json()?;
        let id = posted["id"].as_str().context("no id")?.to_owned();
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut after = id.clone();
        loop {
            let page: Value = self
                .client
                .get(&messages)
                .bearer_auth(token)
                .query(&[("after", after.as_str()), ("wait", "5")])
                .send()?
                .error_for_status()?
                .json()?;
            for message in page["messages"].as_array().into_iter().flatten() {
                if message["reply_to"] == json!(id) {
                    return Ok(message["text"].as_str().unwrap_or_default().to_owned());
                }
                after = message["id"].as_str().unwrap_or(&after).to_owned();
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "no answer to a photo within 30 s"
            );
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
