//! An in-process fake host for bot unit tests.
//!
//! [`TestHost`] implements [`Host`] with an in-memory kv store that follows
//! the real host's semantics, records everything the bot sends, and delivers
//! events the way the host does: a fresh `B::default()` per event, with the
//! event's sends and kv writes discarded when `handle` returns `Err`.
//!
//! With the `llm` feature it also runs fake models: `TestHost::with_model`
//! registers one by name with a function that answers its requests (often
//! built from `completion`), and `TestHost::llm_requests` shows what the
//! bot asked.

use std::collections::BTreeMap;

#[cfg(feature = "llm")]
use crate::llm::{ChatRequest, Completion, FinishReason, Usage};
use crate::{
    Attachment, Bot, ChannelInfo, Contact, ContactAdded, Error, Event, Host, Level, Message,
    Settings, Timer,
};

/// A message the bot sent through [`Host::send`] or [`Host::reply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Conversation the message went to.
    pub conversation: String,
    /// Text of the message.
    pub text: String,
    /// Id of the message answered, for replies.
    pub reply_to: Option<String>,
}

/// Timestamp of the first message built by [`TestHost::message`]
/// (2023-11-14T22:13:20Z); each further message is one second later.
const FIRST_AT_MS: u64 = 1_700_000_000_000;

/// How a fake model answers: called with each request the bot makes to it.
#[cfg(feature = "llm")]
pub type Answer = Box<dyn FnMut(&ChatRequest) -> Result<Completion, Error>>;

/// A model registered with [`TestHost::with_model`].
#[cfg(feature = "llm")]
struct FakeModel {
    name: String,
    answer: Answer,
}

#[cfg(feature = "llm")]
impl std::fmt::Debug for FakeModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeModel")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A fake [`Host`] for unit tests: settings, secrets, in-memory kv and a
/// record of sends, typing indicators and log lines (and, with the `llm`
/// feature, fake models and the requests made to them).
#[derive(Debug, Default)]
pub struct TestHost {
    settings: Settings,
    secrets: BTreeMap<String, String>,
    kv: BTreeMap<String, Vec<u8>>,
    sent: Vec<Sent>,
    typing: Vec<String>,
    /// The channel of each conversation set with [`TestHost::with_channel`];
    /// the others are on the web channel.
    channels: BTreeMap<String, ChannelInfo>,
    logs: Vec<(Level, String)>,
    next_id: u64,
    /// Inside [`TestHost::migrate`], where sends are refused.
    migrating: bool,
    /// Fake models, in registration order.
    #[cfg(feature = "llm")]
    models: Vec<FakeModel>,
    /// Every `llm_chat` request, oldest first.
    #[cfg(feature = "llm")]
    llm_requests: Vec<ChatRequest>,
    /// Attachment bytes by id (feature `attachments`).
    #[cfg(feature = "attachments")]
    files: BTreeMap<String, (Attachment, Vec<u8>)>,
    /// The attachment ids of the sends that carried files, by their index
    /// in `sent`.
    files_sent: BTreeMap<usize, Vec<String>>,
    /// What text recognition answers, by attachment id (feature `vision`).
    #[cfg(feature = "vision")]
    readings: BTreeMap<String, crate::vision::Reading>,
    /// Every region the bot asked to read again, oldest first.
    #[cfg(feature = "vision")]
    regions: Vec<(String, Vec<crate::vision::Point>)>,
    /// Timers set, by id (feature `schedule`).
    #[cfg(feature = "schedule")]
    timers: BTreeMap<String, crate::TimerInfo>,
    /// Requests put in the outbox, oldest first (feature `outbox`).
    #[cfg(feature = "outbox")]
    outbox: Vec<crate::OutboxRequest>,
}

impl TestHost {
    /// An empty host: no settings, no secrets, empty kv.
    pub fn new() -> Self {
        Self::default()
    }

    /// Builder: add setting `key` (seen by [`Bot::init`] and [`Host::config`]).
    pub fn with_setting(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.settings.insert(key, value);
        self
    }

    /// Builder: put `conversation` on `channel` (returned by
    /// [`Host::channel`]; other conversations are on the web channel).
    pub fn with_channel(mut self, conversation: impl Into<String>, channel: ChannelInfo) -> Self {
        self.channels.insert(conversation.into(), channel);
        self
    }

    /// The web channel as the host describes it.
    pub fn web_channel() -> ChannelInfo {
        channel_info(aviary_rules::channels::WEB)
    }

    /// A Matrix room as the host describes it.
    pub fn matrix_channel() -> ChannelInfo {
        channel_info(aviary_rules::channels::MATRIX)
    }

    /// Builder: add secret `name` (returned by [`Host::secret`]; others are denied).
    pub fn with_secret(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.secrets.insert(name.into(), value.into());
        self
    }

    /// The settings the bot sees.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Run `B::init` with this host's settings, as the host does at load.
    pub fn init<B: Bot>(&self) -> Result<(), String> {
        B::init(&self.settings)
    }

    /// Deliver `event` to a fresh `B::default()`, like the real host.
    ///
    /// If `handle` returns `Err`, the sends and kv writes it made are rolled
    /// back (typing indicators and log lines stay, as they are not part of
    /// the commit).
    pub fn deliver<B: Bot>(&mut self, event: Event) -> Result<(), String> {
        self.run(|host| B::default().handle(host, event))
    }

    /// Deliver a webhook request to a fresh `B::default()`, like
    /// [`TestHost::deliver`].
    pub fn deliver_webhook<B: Bot>(&mut self, request: crate::Webhook) -> Result<(), String> {
        self.run(|host| B::default().webhook(host, request))
    }

    /// Deliver an outbox job's outcome to a fresh `B::default()`, like
    /// [`TestHost::deliver`].
    pub fn deliver_delivery<B: Bot>(&mut self, delivery: crate::Delivery) -> Result<(), String> {
        self.run(|host| B::default().delivery(host, delivery))
    }

    /// Runs one event; on `Err` its sends, kv writes, timers and outbox
    /// requests are rolled back.
    fn run(&mut self, event: impl FnOnce(&mut Self) -> Result<(), String>) -> Result<(), String> {
        let kv = self.kv.clone();
        let sent = self.sent.len();
        #[cfg(feature = "schedule")]
        let timers = self.timers.clone();
        #[cfg(feature = "outbox")]
        let outbox = self.outbox.len();
        let result = event(self);
        if result.is_err() {
            self.kv = kv;
            self.truncate_sent(sent);
            #[cfg(feature = "schedule")]
            {
                self.timers = timers;
            }
            #[cfg(feature = "outbox")]
            self.outbox.truncate(outbox);
        }
        result
    }

    /// A webhook request to hook `hook` with a JSON or text `body`.
    pub fn webhook(hook: &str, body: &str) -> crate::Webhook {
        crate::Webhook {
            hook: hook.into(),
            method: "POST".into(),
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.as_bytes().to_vec(),
            at: FIRST_AT_MS,
        }
    }

    /// The timers set, by id (feature `schedule`).
    #[cfg(feature = "schedule")]
    pub fn timers(&self) -> &BTreeMap<String, crate::TimerInfo> {
        &self.timers
    }

    /// The requests put in the outbox, oldest first (feature `outbox`).
    #[cfg(feature = "outbox")]
    pub fn outbox(&self) -> &[crate::OutboxRequest] {
        &self.outbox
    }

    /// Run `B::migrate` from `from_version` against this host's kv, as the
    /// host does before a new version takes events. On `Err` its kv writes
    /// are rolled back; sends are refused, as they are in the real host.
    pub fn migrate<B: Bot>(&mut self, from_version: &str) -> Result<(), String> {
        let kv = self.kv.clone();
        let sent = self.sent.len();
        self.migrating = true;
        let result = B::migrate(self, from_version);
        self.migrating = false;
        if result.is_err() {
            self.kv = kv;
        }
        self.truncate_sent(sent);
        result
    }

    /// A message event from `sender` in `conversation`. Ids increase
    /// (`"m000001"`, `"m000002"`, ...), as does the timestamp.
    pub fn message(&mut self, conversation: &str, sender: &str, text: &str) -> Event {
        self.next_id += 1;
        Event::Message(Message {
            id: format!("m{:06}", self.next_id),
            conversation: conversation.into(),
            sender: sender.into(),
            text: text.into(),
            attachments: Vec::new(),
            reply_to: None,
            at: FIRST_AT_MS + (self.next_id - 1) * 1000,
        })
    }

    /// Like [`TestHost::message`], carrying `attachments`.
    pub fn message_with(
        &mut self,
        conversation: &str,
        sender: &str,
        text: &str,
        attachments: Vec<Attachment>,
    ) -> Event {
        let mut event = self.message(conversation, sender, text);
        if let Event::Message(message) = &mut event {
            message.attachments = attachments;
        }
        event
    }

    /// A contact-added event for `contact` in `conversation`.
    pub fn contact_added(conversation: &str, contact: &str) -> Event {
        Event::ContactAdded(ContactAdded {
            conversation: conversation.into(),
            contact: Contact {
                id: contact.into(),
                display_name: None,
            },
        })
    }

    /// A timer event.
    pub fn timer(id: &str, conversation: Option<&str>, payload: &str) -> Event {
        Event::Timer(Timer {
            id: id.into(),
            conversation: conversation.map(Into::into),
            payload: payload.into(),
        })
    }

    /// Messages sent so far (committed ones only), oldest first.
    pub fn sent(&self) -> &[Sent] {
        &self.sent
    }

    /// Conversations a typing indicator was shown in, oldest first.
    pub fn typing_in(&self) -> &[String] {
        &self.typing
    }

    /// Log lines written so far, oldest first.
    pub fn logs(&self) -> &[(Level, String)] {
        &self.logs
    }

    /// The whole kv store, for assertions.
    pub fn kv(&self) -> &BTreeMap<String, Vec<u8>> {
        &self.kv
    }

    /// Forget recorded sends, typing indicators, logs and (with the `llm`
    /// feature) chat requests; kv is kept.
    pub fn clear_records(&mut self) {
        self.sent.clear();
        self.typing.clear();
        self.logs.clear();
        #[cfg(feature = "llm")]
        self.llm_requests.clear();
    }
}

/// Fake models (feature `llm`).
#[cfg(feature = "llm")]
impl TestHost {
    /// Builder: offer (and grant) model `name`, which answers each
    /// [`Host::llm_chat`] request with `answer(&request)`. Models are listed
    /// by [`Host::llm_models`] in registration order; registering a name
    /// again replaces its answer and keeps its place. Requests to any other
    /// model are denied, as the host denies a model the grant does not name.
    pub fn with_model(
        mut self,
        name: impl Into<String>,
        answer: impl FnMut(&ChatRequest) -> Result<Completion, Error> + 'static,
    ) -> Self {
        let name = name.into();
        let answer: Answer = Box::new(answer);
        match self.models.iter_mut().find(|m| m.name == name) {
            Some(model) => model.answer = answer,
            None => self.models.push(FakeModel { name, answer }),
        }
        self
    }

    /// Every request the bot passed to [`Host::llm_chat`], oldest first,
    /// including refused ones. Not rolled back by a failed event (like
    /// typing indicators, a model call is not part of the commit).
    pub fn llm_requests(&self) -> &[ChatRequest] {
        &self.llm_requests
    }

    /// The registered model `name`, or the host's refusal.
    fn model(&mut self, name: &str) -> Result<&mut FakeModel, Error> {
        let granted: Vec<&str> = self.models.iter().map(|m| m.name.as_str()).collect();
        let reason = if granted.is_empty() {
            format!("model `{name}` is not granted: this bot's `llm_models` grant is empty")
        } else {
            format!(
                "model `{name}` is not in this bot's `llm_models` grant ({})",
                granted.join(", ")
            )
        };
        self.models
            .iter_mut()
            .find(|m| m.name == name)
            .ok_or(Error::Denied(reason))
    }
}

/// Fake files (feature `attachments`).
#[cfg(feature = "attachments")]
impl TestHost {
    /// Makes `bytes` readable as `attachment` (put it in a message with
    /// [`TestHost::message_with`]).
    pub fn with_file(mut self, attachment: Attachment, bytes: Vec<u8>) -> Self {
        self.files
            .insert(attachment.id.clone(), (attachment, bytes));
        self
    }
}

/// Fake text recognition (feature `vision`).
#[cfg(feature = "vision")]
impl TestHost {
    /// Answers [`Host::vision_read_text`] on `attachment` with `reading`;
    /// [`Host::vision_read_region`] answers with the reading's line whose
    /// corners are the region's, as a real engine reads a line again.
    pub fn with_reading(
        mut self,
        attachment: impl Into<String>,
        reading: crate::vision::Reading,
    ) -> Self {
        self.readings.insert(attachment.into(), reading);
        self
    }

    /// Every region the bot asked to read again, oldest first.
    pub fn regions_read(&self) -> &[(String, Vec<crate::vision::Point>)] {
        &self.regions
    }
}

/// Number of floats in a vector of a fake model's [`Host::llm_embed`].
#[cfg(feature = "llm")]
pub const FAKE_EMBEDDING_DIMS: usize = 8;

/// A completion that ended normally (`FinishReason::Stop`) with `text`,
/// for a fake model to answer. Its usage counts no prompt tokens and
/// [`estimate_tokens`](crate::llm::estimate_tokens) of `text` as completion
/// tokens.
#[cfg(feature = "llm")]
pub fn completion(text: impl Into<String>) -> Completion {
    let text = text.into();
    Completion {
        usage: Usage {
            prompt_tokens: 0,
            completion_tokens: crate::llm::estimate_tokens(&text),
        },
        text,
        finish_reason: FinishReason::Stop,
    }
}

/// A few of the host's checks of a chat request: at least one message,
/// `max_tokens` of at least 1, `temperature` from 0 to 2, no empty stop
/// sequence and a valid `stream_to` conversation id.
#[cfg(feature = "llm")]
fn check_chat_request(request: &ChatRequest) -> Result<(), Error> {
    let invalid = |m: &str| Err(Error::Invalid(m.into()));
    if request.messages.is_empty() {
        return invalid("a chat request holds at least 1 message");
    }
    if request.max_tokens == Some(0) {
        return invalid("max-tokens must be at least 1");
    }
    if request
        .temperature
        .is_some_and(|t| !(0.0..=2.0).contains(&t))
    {
        return invalid("temperature must be 0 to 2");
    }
    if request.stop.iter().any(String::is_empty) {
        return invalid("stop sequences must not be empty");
    }
    match &request.stream_to {
        Some(to) if !crate::ids::is_valid_id(to) => {
            invalid("stream-to is not a valid conversation id")
        }
        _ => Ok(()),
    }
}

/// A fake embedding of `text`: [`FAKE_EMBEDDING_DIMS`] floats in `[-1, 1)`
/// derived from an FNV-1a hash of its bytes, so equal texts get equal
/// vectors and different texts (almost surely) different ones.
#[cfg(feature = "llm")]
fn fake_embedding(text: &str) -> Vec<f32> {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
    }
    (0..FAKE_EMBEDDING_DIMS)
        .map(|_| {
            // One step of a xorshift per float; the top 24 bits fit an f32.
            hash ^= hash << 13;
            hash ^= hash >> 7;
            hash ^= hash << 17;
            (hash >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

fn check_key(key: &str) -> Result<(), Error> {
    crate::kv::check_key(key).map_err(Error::Invalid)
}

fn check_value(value: &[u8]) -> Result<(), Error> {
    crate::kv::check_value(value).map_err(Error::Invalid)
}

impl TestHost {
    /// Forgets the sends from index `len` on (a rolled-back event's).
    fn truncate_sent(&mut self, len: usize) {
        self.sent.truncate(len);
        self.files_sent.retain(|&index, _| index < len);
    }

    /// The attachment ids the send at `index` of [`TestHost::sent`] carried
    /// (empty for a send without files).
    pub fn files_of(&self, index: usize) -> &[String] {
        self.files_sent.get(&index).map_or(&[], Vec::as_slice)
    }

    /// Records a send that follows the host's rules: a valid conversation
    /// id and a text of at most [`MAX_TEXT_BYTES`](crate::text::MAX_TEXT_BYTES).
    fn push_sent(
        &mut self,
        conversation: &str,
        text: &str,
        reply_to: Option<&str>,
    ) -> Result<(), Error> {
        if self.migrating {
            return Err(Error::Denied(
                "a bot cannot send from `migrate`: it runs before any conversation".into(),
            ));
        }
        if !crate::ids::is_valid_id(conversation) {
            return Err(Error::Invalid(format!(
                "`{conversation}` is not a valid conversation id"
            )));
        }
        let max = crate::text::MAX_TEXT_BYTES;
        if text.len() > max {
            return Err(Error::Invalid(format!(
                "message of {} bytes is over the {max}-byte limit; split it with `aviary_sdk::text::split` (or `trim`)",
                text.len()
            )));
        }
        self.sent.push(Sent {
            conversation: conversation.into(),
            text: text.into(),
            reply_to: reply_to.map(Into::into),
        });
        Ok(())
    }
}

/// The host's rules (`aviary-rules`): valid conversation ids and texts of
/// at most [`MAX_TEXT_BYTES`](crate::text::MAX_TEXT_BYTES) for sends; kv
/// keys and values within [`crate::kv`]'s limits, counters as decimal text.
impl Host for TestHost {
    #[cfg(feature = "schedule")]
    fn timer_set(
        &mut self,
        id: &str,
        after_ms: u64,
        every_ms: Option<u64>,
        conversation: Option<&str>,
        payload: &str,
    ) -> Result<(), Error> {
        if !crate::ids::is_valid_id(id) {
            return Err(Error::Invalid(
                "timer ids are 1 to 128 of A-Z a-z 0-9 . _ : -".into(),
            ));
        }
        if every_ms.is_some_and(|every| every < 1000) {
            return Err(Error::Invalid(
                "a repeating timer fires at most every 1000 ms".into(),
            ));
        }
        let timer = crate::TimerInfo {
            id: id.into(),
            due_at: FIRST_AT_MS + after_ms,
            every_ms,
            conversation: conversation.map(Into::into),
            payload: payload.into(),
        };
        self.timers.insert(id.into(), timer);
        Ok(())
    }

    #[cfg(feature = "schedule")]
    fn timer_cancel(&mut self, id: &str) -> Result<bool, Error> {
        Ok(self.timers.remove(id).is_some())
    }

    #[cfg(feature = "schedule")]
    fn timer_list(&mut self) -> Result<Vec<crate::TimerInfo>, Error> {
        Ok(self.timers.values().cloned().collect())
    }

    #[cfg(feature = "outbox")]
    fn outbox_enqueue(&mut self, request: &crate::OutboxRequest) -> Result<String, Error> {
        let first = self
            .outbox
            .iter()
            .position(|r| r.idempotency_key == request.idempotency_key);
        let index = first.unwrap_or_else(|| {
            self.outbox.push(request.clone());
            self.outbox.len() - 1
        });
        Ok(format!("{:016x}", index + 1))
    }

    fn send(&mut self, conversation: &str, text: &str) -> Result<(), Error> {
        self.push_sent(conversation, text, None)
    }

    fn reply(&mut self, conversation: &str, reply_to: &str, text: &str) -> Result<(), Error> {
        self.push_sent(conversation, text, Some(reply_to))
    }

    fn typing(&mut self, conversation: &str) -> Result<(), Error> {
        self.typing.push(conversation.into());
        Ok(())
    }

    fn channel(&mut self, conversation: &str) -> Result<ChannelInfo, Error> {
        Ok(self
            .channels
            .get(conversation)
            .cloned()
            .unwrap_or_else(TestHost::web_channel))
    }

    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        check_key(key)?;
        Ok(self.kv.get(key).cloned())
    }

    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
        check_key(key)?;
        check_value(value)?;
        self.kv.insert(key.into(), value.to_vec());
        Ok(())
    }

    fn kv_delete(&mut self, key: &str) -> Result<bool, Error> {
        check_key(key)?;
        Ok(self.kv.remove(key).is_some())
    }

    fn kv_list_keys(&mut self, prefix: &str) -> Result<Vec<String>, Error> {
        let keys = self.kv.range(prefix.to_string()..).map(|(k, _)| k);
        Ok(keys
            .take_while(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }

    fn kv_increment(&mut self, key: &str, delta: i64) -> Result<i64, Error> {
        check_key(key)?;
        let current = self.kv.get(key).map(Vec::as_slice);
        let (new, stored) = crate::kv::increment(key, current, delta).map_err(Error::Invalid)?;
        self.kv.insert(key.into(), stored);
        Ok(new)
    }

    fn kv_compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        check_key(key)?;
        if let Some(value) = new {
            check_value(value)?;
        }
        if self.kv.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        match new {
            Some(value) => self.kv.insert(key.into(), value.to_vec()),
            None => self.kv.remove(key),
        };
        Ok(true)
    }

    fn log(&mut self, level: Level, message: &str) {
        self.logs.push((level, message.into()));
    }

    fn config(&mut self, key: &str) -> Option<String> {
        self.settings.get(key).map(Into::into)
    }

    fn secret(&mut self, name: &str) -> Result<String, Error> {
        self.secrets
            .get(name)
            .cloned()
            .ok_or_else(|| Error::Denied(format!("secret {name} is not granted")))
    }

    /// Records `request`, then, as the host does, denies a model that was
    /// not registered, checks the request and lets the model answer.
    #[cfg(feature = "llm")]
    fn llm_chat(&mut self, request: &ChatRequest) -> Result<Completion, Error> {
        self.llm_requests.push(request.clone());
        let model = self.model(&request.model)?;
        check_chat_request(request)?;
        (model.answer)(request)
    }

    /// A fake vector per text (see [`FAKE_EMBEDDING_DIMS`]) from a
    /// registered model; other models are denied.
    #[cfg(feature = "llm")]
    fn llm_embed(&mut self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        self.model(model)?;
        Ok(texts.iter().map(|t| fake_embedding(t)).collect())
    }

    /// The registered models, in registration order.
    #[cfg(feature = "attachments")]
    fn attachment_read(&mut self, id: &str) -> Result<Vec<u8>, Error> {
        self.files
            .get(id)
            .map(|(_, bytes)| bytes.clone())
            .ok_or_else(|| {
                Error::Invalid(format!("no attachment `{id}` in this bot's conversations"))
            })
    }

    #[cfg(feature = "attachments")]
    fn attachment_create(&mut self, name: &str, bytes: &[u8]) -> Result<Attachment, Error> {
        let attachment = Attachment {
            id: format!("f{:063}", self.files.len() + 1),
            media_type: "application/octet-stream".into(),
            size: bytes.len() as u64,
            name: Some(name.into()),
        };
        self.files
            .insert(attachment.id.clone(), (attachment.clone(), bytes.to_vec()));
        Ok(attachment)
    }

    #[cfg(feature = "attachments")]
    fn send_files(
        &mut self,
        conversation: &str,
        text: &str,
        files: &[String],
        reply_to: Option<&str>,
    ) -> Result<(), Error> {
        if let Some(unknown) = files.iter().find(|id| !self.files.contains_key(*id)) {
            return Err(Error::Invalid(format!(
                "no attachment `{unknown}` in this bot's conversations"
            )));
        }
        self.push_sent(conversation, text, reply_to)?;
        self.files_sent.insert(self.sent.len() - 1, files.to_vec());
        Ok(())
    }

    #[cfg(feature = "vision")]
    fn vision_read_text(&mut self, attachment: &str) -> Result<crate::vision::Reading, Error> {
        self.readings.get(attachment).cloned().ok_or_else(|| {
            Error::Invalid(format!(
                "no image attachment `{attachment}` in this conversation"
            ))
        })
    }

    #[cfg(feature = "vision")]
    fn vision_read_region(
        &mut self,
        attachment: &str,
        corners: &[crate::vision::Point],
    ) -> Result<crate::vision::TextLine, Error> {
        self.regions.push((attachment.into(), corners.to_vec()));
        let reading = self.vision_read_text(attachment)?;
        let same = |line: &crate::vision::TextLine| {
            line.corners.len() == corners.len()
                && line
                    .corners
                    .iter()
                    .zip(corners)
                    .all(|(a, b)| (a.x - b.x).abs() < 1.0 && (a.y - b.y).abs() < 1.0)
        };
        Ok(reading
            .lines
            .into_iter()
            .find(same)
            .unwrap_or(crate::vision::TextLine {
                text: String::new(),
                confidence: 0.0,
                corners: corners.to_vec(),
                char_confidences: Vec::new(),
            }))
    }

    #[cfg(feature = "llm")]
    fn llm_models(&mut self) -> Vec<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::{MAX_KEY_BYTES, MAX_VALUE_BYTES};

    #[test]
    fn kv_get_set_delete() {
        let mut host = TestHost::new();
        assert_eq!(host.kv_get("a").unwrap(), None);
        host.kv_set("a", b"1").unwrap();
        assert_eq!(host.kv_get("a").unwrap(), Some(b"1".to_vec()));
        assert!(host.kv_delete("a").unwrap());
        assert!(!host.kv_delete("a").unwrap());
        assert_eq!(host.kv_get("a").unwrap(), None);
    }

    #[test]
    fn sends_follow_the_hosts_text_and_id_rules() {
        let mut host = TestHost::new();
        let max = crate::text::MAX_TEXT_BYTES;
        host.send("c", &"x".repeat(max)).unwrap();
        let Err(Error::Invalid(error)) = host.reply("c", "m1", &"x".repeat(max + 1)) else {
            panic!("an oversized reply is refused");
        };
        assert!(
            error.contains("16384-byte limit") && error.contains("aviary_sdk::text::split"),
            "{error}"
        );
        assert!(matches!(host.send("a/b", "hi"), Err(Error::Invalid(_))));
        assert!(matches!(host.send("..", "hi"), Err(Error::Invalid(_))));
        assert_eq!(host.sent().len(), 1);
    }

    #[test]
    fn kv_rejects_bad_keys_and_huge_values() {
        let mut host = TestHost::new();
        assert!(matches!(host.kv_get(""), Err(Error::Invalid(_))));
        assert!(matches!(
            host.kv_set(&"k".repeat(MAX_KEY_BYTES + 1), b""),
            Err(Error::Invalid(_))
        ));
        host.kv_set(&"k".repeat(MAX_KEY_BYTES), b"").unwrap();
        assert!(matches!(
            host.kv_set("big", &vec![0; MAX_VALUE_BYTES + 1]),
            Err(Error::Invalid(_))
        ));
        assert!(host.kv().get("big").is_none());
    }

    #[test]
    fn kv_list_keys_by_prefix_in_byte_order() {
        let mut host = TestHost::new();
        for key in ["b/2", "a", "b/1", "b", "c/1", "b0"] {
            host.kv_set(key, b"").unwrap();
        }
        assert_eq!(host.kv_list_keys("b/").unwrap(), ["b/1", "b/2"]);
        assert_eq!(host.kv_list_keys("b").unwrap(), ["b", "b/1", "b/2", "b0"]);
        assert_eq!(host.kv_list_keys("").unwrap().len(), 6);
        assert!(host.kv_list_keys("z").unwrap().is_empty());
    }

    #[test]
    fn kv_increment_starts_at_zero_and_rejects_non_counters() {
        let mut host = TestHost::new();
        assert_eq!(host.kv_increment("n", 1).unwrap(), 1);
        assert_eq!(host.kv_increment("n", 41).unwrap(), 42);
        assert_eq!(host.kv_increment("m", -3).unwrap(), -3);
        host.kv_set("text", b"hello").unwrap();
        assert!(matches!(
            host.kv_increment("text", 1),
            Err(Error::Invalid(_))
        ));
        host.kv_set("max", i64::MAX.to_string().as_bytes()).unwrap();
        assert!(matches!(
            host.kv_increment("max", 1),
            Err(Error::Invalid(_))
        ));
        assert_eq!(
            host.kv_get("n").unwrap(),
            Some(b"42".to_vec()),
            "counters are decimal text"
        );
        host.kv_set("typed", b"-7").unwrap();
        assert_eq!(host.kv_increment("typed", 10).unwrap(), 3);
    }

    #[test]
    fn kv_compare_and_swap() {
        let mut host = TestHost::new();
        // absent -> set, only when expecting absent
        assert!(!host
            .kv_compare_and_swap("k", Some(b"x"), Some(b"y"))
            .unwrap());
        assert!(host.kv_compare_and_swap("k", None, Some(b"v1")).unwrap());
        assert!(!host.kv_compare_and_swap("k", None, Some(b"v2")).unwrap());
        // present -> replace on match only
        assert!(!host
            .kv_compare_and_swap("k", Some(b"nope"), Some(b"v2"))
            .unwrap());
        assert!(host
            .kv_compare_and_swap("k", Some(b"v1"), Some(b"v2"))
            .unwrap());
        assert_eq!(host.kv_get("k").unwrap(), Some(b"v2".to_vec()));
        // none as new deletes
        assert!(host.kv_compare_and_swap("k", Some(b"v2"), None).unwrap());
        assert_eq!(host.kv_get("k").unwrap(), None);
    }

    #[test]
    fn records_sends_replies_typing_and_logs() {
        let mut host = TestHost::new();
        host.send("c1", "hello").unwrap();
        host.reply("c2", "m7", "answer").unwrap();
        host.typing("c1").unwrap();
        host.log(Level::Warn, "careful");
        assert_eq!(
            host.sent(),
            [
                Sent {
                    conversation: "c1".into(),
                    text: "hello".into(),
                    reply_to: None
                },
                Sent {
                    conversation: "c2".into(),
                    text: "answer".into(),
                    reply_to: Some("m7".into())
                },
            ]
        );
        assert_eq!(host.typing_in(), ["c1"]);
        assert_eq!(host.logs(), [(Level::Warn, "careful".to_string())]);
        host.clear_records();
        assert!(host.sent().is_empty() && host.typing_in().is_empty() && host.logs().is_empty());
    }

    #[test]
    fn config_and_secrets() {
        let mut host = TestHost::new()
            .with_setting("prefix", ">> ")
            .with_secret("token", "s3cr3t");
        assert_eq!(host.config("prefix").as_deref(), Some(">> "));
        assert_eq!(host.config("missing"), None);
        assert_eq!(host.secret("token").unwrap(), "s3cr3t");
        assert!(matches!(host.secret("other"), Err(Error::Denied(_))));
    }

    #[test]
    fn messages_get_increasing_ids_and_timestamps() {
        let mut host = TestHost::new();
        let (Event::Message(a), Event::Message(b)) = (
            host.message("c", "alice", "one"),
            host.message("c", "bob", "two"),
        ) else {
            panic!("expected messages");
        };
        assert!(a.id < b.id && a.at < b.at);
        assert_eq!(
            (a.conversation.as_str(), a.sender.as_str(), a.text.as_str()),
            ("c", "alice", "one")
        );
    }

    /// Counts events in `self` (to check freshness) and in kv; fails on "fail".
    #[derive(Default)]
    struct Counter {
        seen: u32,
    }

    impl Bot for Counter {
        fn init(settings: &Settings) -> Result<(), String> {
            match settings.get("mode") {
                Some("bad") => Err("setting mode: bad".into()),
                _ => Ok(()),
            }
        }

        fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
            self.seen += 1;
            let Event::Message(msg) = event else {
                return Ok(());
            };
            let n = host.kv_increment("n", 1).map_err(|e| e.to_string())?;
            host.reply_to(&msg, &format!("{n} {}", self.seen))
                .map_err(|e| e.to_string())?;
            if msg.text == "fail" {
                return Err("failed".into());
            }
            Ok(())
        }
    }

    #[test]
    fn deliver_uses_a_fresh_bot_and_rolls_back_on_error() {
        let mut host = TestHost::new();
        let e = host.message("c", "alice", "x");
        host.deliver::<Counter>(e).unwrap();
        let e = host.message("c", "alice", "x");
        host.deliver::<Counter>(e).unwrap();
        let texts: Vec<_> = host.sent().iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["1 1", "2 1"]);
        assert_eq!(host.sent()[1].reply_to.as_deref(), Some("m000002"));

        let e = host.message("c", "alice", "fail");
        assert_eq!(host.deliver::<Counter>(e), Err("failed".into()));
        assert_eq!(host.sent().len(), 2);
        assert_eq!(host.kv_increment("n", 0).unwrap(), 2);
    }

    #[test]
    fn init_sees_settings() {
        assert!(TestHost::new().init::<Counter>().is_ok());
        let err = TestHost::new()
            .with_setting("mode", "bad")
            .init::<Counter>()
            .unwrap_err();
        assert!(err.contains("mode"));
    }

    /// Renames kv key `n` to `count` when migrating from 0.1.x; refuses to
    /// migrate from 9.x after writing, and tries to send.
    #[derive(Default)]
    struct Renamer;

    impl Bot for Renamer {
        fn handle(&mut self, _host: &mut dyn Host, _event: Event) -> Result<(), String> {
            Ok(())
        }

        fn migrate(host: &mut dyn Host, from_version: &str) -> Result<(), String> {
            let sent = host.send("c", "hello");
            if let Some(old) = host.kv_get("n").map_err(|e| e.to_string())? {
                host.kv_set("count", &old).map_err(|e| e.to_string())?;
                host.kv_delete("n").map_err(|e| e.to_string())?;
            }
            match (from_version.starts_with("9."), sent) {
                (true, _) => Err(format!("cannot migrate down from {from_version}")),
                (false, Err(Error::Denied(_))) => Ok(()),
                (false, other) => Err(format!("send from migrate answered {other:?}")),
            }
        }
    }

    #[test]
    fn migrate_commits_its_kv_writes_refuses_sends_and_rolls_back_on_error() {
        let mut host = TestHost::new();
        host.kv_set("n", b"7").unwrap();
        assert_eq!(
            host.migrate::<Renamer>("9.0.0"),
            Err("cannot migrate down from 9.0.0".into())
        );
        assert_eq!(host.kv().get("n").map(Vec::as_slice), Some(b"7".as_slice()));
        host.migrate::<Renamer>("0.1.0").unwrap();
        assert_eq!(
            host.kv().get("count").map(Vec::as_slice),
            Some(b"7".as_slice())
        );
        assert!(!host.kv().contains_key("n") && host.sent().is_empty());
        assert!(
            TestHost::new().migrate::<Counter>("0.1.0").is_ok(),
            "the default does nothing"
        );
    }
}

#[cfg(all(test, feature = "llm"))]
mod llm_tests {
    use super::*;
    use crate::llm::ChatMessage;

    fn ask(model: &str, text: &str) -> ChatRequest {
        ChatRequest::new(model, vec![ChatMessage::user(text)])
    }

    /// A model that answers with the last message's text reversed.
    fn reverser(request: &ChatRequest) -> Result<Completion, Error> {
        let last = request.messages.last().map_or("", |m| m.content.as_str());
        Ok(completion(last.chars().rev().collect::<String>()))
    }

    #[test]
    fn registered_models_answer_and_are_listed_in_order() {
        let mut host = TestHost::new()
            .with_model("small", reverser)
            .with_model("big", |_: &ChatRequest| Ok(completion("big answer")));
        assert_eq!(host.llm_models(), ["small", "big"]);
        assert_eq!(host.llm_chat(&ask("small", "abc")).unwrap().text, "cba");
        let answer = host.llm_chat(&ask("big", "hi")).unwrap();
        assert_eq!(answer, completion("big answer"));
        assert_eq!(answer.finish_reason, FinishReason::Stop);
        assert_eq!(
            answer.usage.completion_tokens, 3,
            "10 bytes / 4, rounded up"
        );
    }

    #[test]
    fn registering_a_name_again_replaces_its_answer_in_place() {
        let mut host = TestHost::new()
            .with_model("a", reverser)
            .with_model("b", reverser)
            .with_model("a", |_: &ChatRequest| Ok(completion("new")));
        assert_eq!(host.llm_models(), ["a", "b"]);
        assert_eq!(host.llm_chat(&ask("a", "x")).unwrap().text, "new");
    }

    #[test]
    fn an_unregistered_model_is_denied_like_an_ungranted_one() {
        let mut host = TestHost::new();
        assert!(host.llm_models().is_empty());
        let Err(Error::Denied(reason)) = host.llm_chat(&ask("m", "hi")) else {
            panic!("denied without models");
        };
        assert!(reason.contains("grant is empty"), "{reason}");
        let mut host = TestHost::new().with_model("small", reverser);
        let Err(Error::Denied(reason)) = host.llm_chat(&ask("big", "hi")) else {
            panic!("denied");
        };
        assert!(
            reason.contains("`big`") && reason.contains("(small)"),
            "{reason}"
        );
        assert!(matches!(
            host.llm_embed("big", &["x".into()]),
            Err(Error::Denied(_))
        ));
    }

    #[test]
    fn records_every_request_until_cleared() {
        let mut host = TestHost::new().with_model("m", reverser);
        let mut streamed = ask("m", "one");
        streamed.stream_to = Some("room".into());
        host.llm_chat(&streamed).unwrap();
        host.llm_chat(&ask("other", "two")).unwrap_err();
        assert_eq!(host.llm_requests(), [streamed, ask("other", "two")]);
        host.clear_records();
        assert!(host.llm_requests().is_empty());
    }

    #[test]
    fn malformed_requests_are_invalid() {
        let mut host = TestHost::new().with_model("m", reverser);
        let mut bad = Vec::new();
        bad.push(ChatRequest::new("m", Vec::new()));
        let mut request = ask("m", "hi");
        request.max_tokens = Some(0);
        bad.push(request);
        let mut request = ask("m", "hi");
        request.temperature = Some(f32::NAN);
        bad.push(request);
        let mut request = ask("m", "hi");
        request.temperature = Some(2.5);
        bad.push(request);
        let mut request = ask("m", "hi");
        request.stop = vec![String::new()];
        bad.push(request);
        let mut request = ask("m", "hi");
        request.stream_to = Some("a/b".into());
        bad.push(request);
        for request in &bad {
            assert!(
                matches!(host.llm_chat(request), Err(Error::Invalid(_))),
                "{request:?}"
            );
        }
    }

    #[test]
    fn a_models_error_reaches_the_bot() {
        let mut host = TestHost::new().with_model("m", |_: &ChatRequest| {
            Err(Error::Unavailable("run `cargo xtask up`".into()))
        });
        assert_eq!(
            host.llm_chat(&ask("m", "hi")),
            Err(Error::Unavailable("run `cargo xtask up`".into()))
        );
    }

    #[test]
    fn embeddings_are_deterministic_per_text() {
        let mut host = TestHost::new().with_model("m", reverser);
        let texts = ["cat".to_string(), "dog".into(), "cat".into()];
        let vectors = host.llm_embed("m", &texts).unwrap();
        assert_eq!(vectors.len(), 3);
        assert!(vectors.iter().all(|v| v.len() == FAKE_EMBEDDING_DIMS));
        assert!(vectors.iter().flatten().all(|x| (-1.0..1.0).contains(x)));
        assert_eq!(vectors[0], vectors[2]);
        assert_ne!(vectors[0], vectors[1]);
        assert_eq!(host.llm_embed("m", &texts[..1]).unwrap()[0], vectors[0]);
        assert!(host.llm_embed("m", &[]).unwrap().is_empty());
    }

    #[test]
    fn a_host_debug_shows_model_names() {
        let host = TestHost::new().with_model("small", reverser);
        let debug = format!("{host:?}");
        assert!(debug.contains("small"), "{debug}");
    }
}

/// Channel `name` as the host's `messaging.channel` describes it.
fn channel_info(name: &str) -> ChannelInfo {
    let features = aviary_rules::channels::features(name).expect("a channel the host has");
    ChannelInfo {
        name: name.into(),
        typing: features.typing,
        drafts: features.drafts,
        attachments: features.attachments,
        edits: features.edits,
        groups: features.groups,
    }
}
