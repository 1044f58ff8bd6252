//! `aviary:bot/llm`: chat completions and embeddings on the models the host
//! offers (`[llm.models]`, see [`config`]) and the bot's `llm_models` grant
//! allows.
//!
//! A call waits in its model's [`fair`] queue, then runs on the model's
//! [`backend`] (embedded llama.cpp or an OpenAI-compatible server) off the
//! event's thread, so the wait costs the bot no CPU time; the event's wall
//! clock bounds it. Shortly before the wall deadline the generation is
//! cancelled and the bot gets what was generated with finish reason
//! `time-limit`, so it can tell the user. With `stream-to`, the growing text
//! is shown in that conversation as drafts ([`crate::live`]), never stored.
//! A request to a model whose endpoint leaves this machine is redacted
//! first ([`redact`]) and recorded in the audit log, without its content.

pub mod backend;
pub mod config;
pub mod embedded;
mod fair;
pub mod models;
mod openai;
pub mod redact;
mod stream;

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::log::LogRing;
use super::Ctx;
use crate::live::LiveHub;
use crate::policy::BotPolicy;
use crate::runtime::bindings::aviary::bot::llm as wit;
use crate::runtime::bindings::BotError;
use crate::store::AuditEntry;
use backend::{ChatMessage, Finish, Generated, Job, LlmError, Role, Update};
use models::{Model, Models};
use stream::Drafts;

/// Calls to `chat` and `embed` one event may make.
pub const MAX_CALLS_PER_EVENT: u32 = 16;
/// Messages in one chat request.
pub const MAX_MESSAGES: usize = 1024;
/// Bytes of all messages (or texts to embed) of one request.
pub const MAX_REQUEST_BYTES: usize = 1 << 20;
/// Texts in one embedding request.
pub const MAX_EMBED_TEXTS: usize = 256;
/// Stop sequences of one request, and the bytes of each.
pub const MAX_STOPS: usize = 8;
pub const MAX_STOP_BYTES: usize = 64;
/// How long before the wall deadline a generation is cut, at most.
const MAX_MARGIN: Duration = Duration::from_secs(2);

/// Per-event llm state.
pub struct Llm {
    parts: LlmParts,
    /// When a generation must have returned to the bot.
    cut_at: Instant,
    calls: u32,
    /// External calls made, for the audit log whatever the event's fate.
    pub audit: Vec<AuditEntry>,
}

/// What an event of one bot needs to reach the models.
pub struct LlmParts {
    pub models: Arc<Models>,
    pub live: Arc<LiveHub>,
    pub policy: Arc<BotPolicy>,
    pub bot: Arc<str>,
    pub version: Arc<str>,
    pub logs: Arc<LogRing>,
}

impl Llm {
    /// The state of one event that must end by `wall_deadline`, `wall`
    /// after its start.
    pub fn new(parts: LlmParts, wall_deadline: Instant, wall: Duration) -> Llm {
        let margin = (wall / 10).clamp(Duration::from_millis(100), MAX_MARGIN);
        Llm {
            parts,
            cut_at: wall_deadline.checked_sub(margin).unwrap_or(wall_deadline),
            calls: 0,
            audit: Vec::new(),
        }
    }

    /// The granted models the host offers, in grant order.
    fn usable(&self) -> Vec<String> {
        let granted = &self.parts.policy.grant.llm_models;
        granted
            .iter()
            .filter(|m| self.parts.models.offers(m))
            .cloned()
            .collect()
    }
}

impl Ctx<'_, Llm> {
    fn refuse(&mut self, target: &str, error: BotError) -> BotError {
        if let BotError::Denied(reason) | BotError::QuotaExceeded(reason) = &error {
            self.budget.refusals.deny("llm", target, || reason.clone());
        }
        error
    }

    /// The model `name`, if granted and offered; counts the call.
    fn model(&mut self, name: &str) -> Result<Arc<Model>, BotError> {
        self.budget.check()?;
        let name = self.budget.name("model", name)?;
        if !self
            .cap
            .parts
            .policy
            .grant
            .llm_models
            .iter()
            .any(|m| m == name)
        {
            let granted = self.cap.parts.policy.grant.llm_models.join(", ");
            let reason = if granted.is_empty() {
                format!("model `{name}` is not granted: this bot's `llm_models` grant is empty")
            } else {
                format!("model `{name}` is not in this bot's `llm_models` grant ({granted})")
            };
            return Err(self.refuse(name, BotError::Denied(reason)));
        }
        let Some(model) = self.cap.parts.models.get(name).cloned() else {
            return Err(BotError::Unavailable(format!(
                "model `{name}` is granted but this host does not offer it: the admin configures it under [llm.models.{name}] in aviary.toml"
            )));
        };
        if self.cap.calls >= MAX_CALLS_PER_EVENT {
            let reason = format!("at most {MAX_CALLS_PER_EVENT} llm calls per event");
            return Err(self.refuse(name, BotError::QuotaExceeded(reason)));
        }
        self.cap.calls += 1;
        Ok(model)
    }

    /// Redacts `texts` for `model` when they leave the machine, and audits it.
    fn redact(&mut self, model: &Model, texts: Vec<String>) -> Vec<String> {
        let Some(redaction) = &model.redaction else {
            return texts;
        };
        let mut counts = redact::Counts::new();
        let texts = texts
            .iter()
            .map(|t| redaction.redactor.redact(t, &mut counts))
            .collect();
        self.cap.audit.push(AuditEntry {
            action: "external_call".into(),
            bot: self.cap.parts.bot.to_string(),
            capability: Some("llm".into()),
            target: Some(redaction.endpoint.clone()),
            detail: format!(
                "model `{}` ({}): {}",
                model.name,
                redaction.why,
                redact::describe(&counts)
            ),
        });
        texts
    }

    fn log(&self, line: String) {
        self.cap
            .parts
            .logs
            .push("llm", &self.cap.parts.version, &line);
        tracing::debug!(target: "bot", bot = &*self.cap.parts.bot, "{line}");
    }
}

/// Checks a chat request and resolves its settings against the model's.
fn job(model: &Model, request: &wit::ChatRequest) -> Result<Job, BotError> {
    let invalid = |m: String| Err(BotError::Invalid(m));
    if request.messages.is_empty() || request.messages.len() > MAX_MESSAGES {
        return invalid(format!("a chat request holds 1 to {MAX_MESSAGES} messages"));
    }
    let bytes: usize = request.messages.iter().map(|m| m.content.len()).sum();
    if bytes > MAX_REQUEST_BYTES {
        return invalid(format!(
            "the messages are {bytes} bytes; at most {MAX_REQUEST_BYTES} per request"
        ));
    }
    let max_tokens = request.max_tokens.unwrap_or(model.defaults.max_tokens);
    if !(1..=config::MAX_TOKENS_LIMIT).contains(&max_tokens) {
        return invalid(format!(
            "max-tokens must be 1 to {}",
            config::MAX_TOKENS_LIMIT
        ));
    }
    let temperature = request.temperature.unwrap_or(model.defaults.temperature);
    if !(0.0..=2.0).contains(&temperature) {
        return invalid("temperature must be 0 to 2".into());
    }
    if request.stop.len() > MAX_STOPS
        || request
            .stop
            .iter()
            .any(|s| s.is_empty() || s.len() > MAX_STOP_BYTES)
    {
        return invalid(format!(
            "at most {MAX_STOPS} stop sequences of 1 to {MAX_STOP_BYTES} bytes"
        ));
    }
    if let Some(conversation) = &request.stream_to {
        if !crate::ids::is_valid_id(conversation) {
            return invalid(
                "stream-to is not a valid conversation id (1 to 128 of A-Z a-z 0-9 . _ : -)".into(),
            );
        }
    }
    let messages = request
        .messages
        .iter()
        .map(|m| ChatMessage {
            role: match m.role {
                wit::Role::System => Role::System,
                wit::Role::User => Role::User,
                wit::Role::Assistant => Role::Assistant,
            },
            content: m.content.clone(),
        })
        .collect();
    Ok(Job {
        messages,
        max_tokens,
        temperature,
        stop: request.stop.clone(),
    })
}

/// The finish reason as the WIT spells it, for log lines.
fn finish_name(finish: wit::FinishReason) -> &'static str {
    match finish {
        wit::FinishReason::Stop => "stop",
        wit::FinishReason::Length => "length",
        wit::FinishReason::TimeLimit => "time-limit",
    }
}

fn bot_error(error: LlmError) -> BotError {
    match error {
        LlmError::Unavailable(m) => BotError::Unavailable(m),
        LlmError::Invalid(m) => BotError::Invalid(m),
    }
}

/// How a generation ended, as the capability sees it.
enum Ended {
    Done(Result<Generated, LlmError>),
    /// Cut shortly before the wall deadline.
    TimeLimit,
}

impl wit::Host for Ctx<'_, Llm> {
    async fn chat(&mut self, request: wit::ChatRequest) -> Result<wit::Completion, BotError> {
        let started = Instant::now();
        let model = self.model(&request.model)?;
        let mut job = job(&model, &request)?;
        let contents = job.messages.iter().map(|m| m.content.clone()).collect();
        for (message, content) in job.messages.iter_mut().zip(self.redact(&model, contents)) {
            message.content = content;
        }
        let messages = job.messages.len();
        let mut drafts = Drafts::new(
            self.cap.parts.live.clone(),
            &self.cap.parts.bot,
            request.stream_to.as_deref(),
        );
        let turn = request
            .stream_to
            .clone()
            .unwrap_or_else(|| self.cap.parts.bot.to_string());
        let mut text = String::new();
        let mut pieces = 0;
        let generation = generate(&model, &turn, job, &mut drafts, &mut text, &mut pieces);
        let ended = match tokio::time::timeout_at(self.cap.cut_at.into(), generation).await {
            Ok(ended) => ended,
            Err(_) => Ended::TimeLimit,
        };
        drafts.finish(&text);
        let (result, finish) = match ended {
            Ended::Done(Ok(generated)) => {
                let finish = match generated.finish {
                    Finish::Stop => wit::FinishReason::Stop,
                    Finish::Length => wit::FinishReason::Length,
                };
                let usage = wit::Usage {
                    prompt_tokens: generated.prompt_tokens,
                    completion_tokens: generated.completion_tokens,
                };
                (Ok((generated.text, usage)), finish)
            }
            Ended::Done(Err(error)) => (Err(bot_error(error)), wit::FinishReason::Stop),
            Ended::TimeLimit => {
                // The backend's count died with it; each piece is about a token.
                let usage = wit::Usage {
                    prompt_tokens: 0,
                    completion_tokens: pieces,
                };
                (Ok((text.clone(), usage)), wit::FinishReason::TimeLimit)
            }
        };
        match &result {
            Ok((_, usage)) => self.log(format!(
                "chat model={} messages={messages} prompt_tokens={} completion_tokens={} finish={} ms={}",
                model.name,
                usage.prompt_tokens,
                usage.completion_tokens,
                finish_name(finish),
                started.elapsed().as_millis()
            )),
            Err(error) => self.log(format!("chat model={} messages={messages} failed: {error}", model.name)),
        }
        let (text, usage) = result?;
        Ok(wit::Completion {
            text,
            finish_reason: finish,
            usage,
        })
    }

    async fn embed(
        &mut self,
        model: String,
        texts: Vec<String>,
    ) -> Result<Vec<Vec<f32>>, BotError> {
        let model = self.model(&model)?;
        let bytes: usize = texts.iter().map(String::len).sum();
        if texts.len() > MAX_EMBED_TEXTS || bytes > MAX_REQUEST_BYTES {
            return Err(BotError::Invalid(format!(
                "at most {MAX_EMBED_TEXTS} texts and {MAX_REQUEST_BYTES} bytes per embedding request"
            )));
        }
        let count = texts.len();
        let texts = self.redact(&model, texts);
        let work = async {
            let _slot = model.slots.take(&self.cap.parts.bot).await;
            model.backend.embed(texts).await
        };
        let vectors = match tokio::time::timeout_at(self.cap.cut_at.into(), work).await {
            Ok(result) => result.map_err(bot_error)?,
            Err(_) => {
                return Err(BotError::Unavailable(
                    "the embedding did not finish before the event's time limit".into(),
                ))
            }
        };
        self.log(format!("embed model={} texts={count}", model.name));
        Ok(vectors)
    }

    fn models(&mut self) -> Vec<String> {
        self.cap.usable()
    }
}

/// Waits for a slot of `model` in `turn`'s turn, runs `job` and shows its
/// progress; the text so far is in `text` (in `pieces` pieces) however it
/// ends.
async fn generate(
    model: &Model,
    turn: &str,
    job: Job,
    drafts: &mut Drafts,
    text: &mut String,
    pieces: &mut u32,
) -> Ended {
    let _slot = drafts.typing_while(model.slots.take(turn)).await;
    let mut updates = model.backend.generate(job);
    loop {
        let update = drafts.typing_while(updates.recv()).await;
        match update {
            Some(Update::Started) => {}
            Some(Update::Text(piece)) => {
                text.push_str(&piece);
                *pieces += 1;
                drafts.text(text);
            }
            Some(Update::Done(result)) => return Ended::Done(result),
            None => {
                return Ended::Done(Err(LlmError::Unavailable(format!(
                    "model `{}` stopped without an answer",
                    model.name
                ))))
            }
        }
    }
}
