//! Plate lookup through the real binary: photos from `plategen`'s accuracy
//! set (never tuned on) posted over HTTP to `plate-lookup`, each answer
//! read back; accuracy is the bot's final reading against the plate drawn,
//! separators ignored; latency is from the POST to the answer readable.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use aviary_rules::kv::alphanumeric_upper;
use serde_json::{json, Value};

use crate::served::{Served, Setup};

/// Photos read (the accuracy set's first ones).
const PHOTOS: u32 = 120;

/// What the plate benchmark measured with one text-recognition engine.
pub struct PlateFigures {
    pub accuracy: f64,
    pub accuracy_hard: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub photos: usize,
}

/// The figures with `engine` (`ppocr` or `tesseract`, the host's `[vision]
/// engine`) reading the photos behind the same bot.
pub fn figures(scratch: &Path, bots: &Path, policies: &Path, engine: &str) -> Result<PlateFigures> {
    let host = Photos(Served::start(Setup {
        dir: scratch.join(format!("plates-{engine}")),
        config: format!("[vision]\nengine = \"{engine}\"\n"),
        plugins: bots,
        policies,
        timeout: Duration::from_secs(60),
    })?);
    let photos: Vec<plategen::Photo> = (0..PHOTOS)
        .map(|i| plategen::photo(plategen::Set::Accuracy, i))
        .collect();
    let hard: Vec<String> = plategen::hardest_third(&photos)
        .iter()
        .map(|p| p.plate.clone())
        .collect();
    let (conversation, token) = host.0.conversation("plate-lookup")?;
    let mut latencies = Vec::new();
    let (mut right, mut right_hard) = (0usize, 0usize);
    for photo in &photos {
        let started = Instant::now();
        let answer = host.ask(&conversation, &token, &photo.jpeg)?;
        latencies.push(started.elapsed().as_secs_f64() * 1000.0);
        let read = reading(&answer);
        let ok = read.as_deref() == Some(alphanumeric_upper(&photo.plate).as_str());
        if !ok && engine == "ppocr" {
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

/// The plate the bot says it read, if it gave a reading it stands by.
fn reading(answer: &str) -> Option<String> {
    let rest = answer.strip_prefix("I read ")?;
    if answer.contains("too little to look it up") {
        return None;
    }
    Some(alphanumeric_upper(rest.split(" (").next()?))
}

/// The release binary serving `plate-lookup`.
struct Photos(Served);

impl Photos {
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
            self.0.base
        );
        let posted: Value = self
            .0
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
                .0
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
