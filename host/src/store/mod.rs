//! The host's durable state: conversations, messages in both directions,
//! pending events, per-bot kv and dead letters.
//!
//! Everything is one ordered key-value [`State`] (a journal in front of
//! fjall, see [`state`]), so that the effects of one `handle` call (its
//! sends, its kv writes and the removal of the event from the pending
//! queue) apply as one atomic write. Keys are namespaced by a short prefix
//! (see [`keys`]).

mod attachments;
mod audit;
pub mod blobs;
mod codec;
mod commit;
mod hooks;
pub mod keys;
mod lifecycle;
pub mod outbox;
mod records;
mod refs;
pub mod state;
pub mod timers;
mod tokens;
mod watch;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use parking_lot::Mutex;

pub use audit::{AuditEntry, AuditRecord, ChainBreak};
pub use blobs::is_blob_id;
pub use commit::{CommitError, Effects, KvRead, Outgoing};
pub use hooks::{hook_lane, HookAccepted};
pub use lifecycle::VersionEntry;
pub use outbox::{Answer, OutboxJob};
pub use records::{
    Attachment, DeadLetter, DeliveryRecord, Direction, EventRecord, MessageRecord, PendingEvent,
    WebhookRecord,
};
pub use refs::ConversationRef;
pub use state::{State, StoreConfig, Unavailable};
pub use timers::{TimerRecord, TIMER_LANE};
pub use tokens::{sha256_hex, TokenRecord, IDEMPOTENCY_MS};

pub use state::Op;
use watch::Visibility;

/// Number of lock stripes that order id allocation and insertion per
/// conversation (see [`Store::lane_lock`]).
const LANE_STRIPES: usize = 64;

/// Handle to the host's store. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    state: State,
    blobs: blobs::Blobs,
    lanes: Vec<Mutex<()>>,
    visibility: Arc<Visibility>,
    /// Next sequence number and last hash of the audit chain, once read;
    /// its lock serialises appends.
    audit_head: Mutex<Option<(u64, String)>>,
    /// Sender keys known to be stored (see [`Store::is_new_sender`]).
    known_senders: Mutex<std::collections::HashSet<Vec<u8>>>,
}

/// Bound of the known-senders cache; past it the cache starts afresh.
const MAX_KNOWN_SENDERS: usize = 100_000;

/// What [`Store::accept_inbound_once`] did with a message.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// The message is new and was stored.
    Accepted(Accepted),
    /// Its idempotency key was seen in the conversation within a day: it is
    /// this earlier message, and nothing new was stored.
    Repeated { id: String },
}

/// What [`Store::accept_inbound`] stored.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The stored message.
    pub message: MessageRecord,
    /// Events queued for the bot, in order (a contact-added, then the message).
    pub events: Vec<PendingEvent>,
}

impl Store {
    /// Opens (or creates) the store under `dir` with the default settings.
    pub fn open(dir: &std::path::Path) -> Result<Store> {
        Store::open_with(dir, &StoreConfig::default())
    }

    /// Opens (or creates) the store under `dir`.
    pub fn open_with(dir: &std::path::Path, config: &StoreConfig) -> Result<Store> {
        private_dir(dir)?;
        let visibility = Arc::new(Visibility::default());
        let revealer = visibility.clone();
        let state = State::open(dir, config, Box::new(move |seq| revealer.durable(seq)))?;
        let blobs = blobs::Blobs::open(dir)?;
        private_files(dir)?;
        let lanes = (0..LANE_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(Store {
            inner: Arc::new(Inner {
                state,
                blobs,
                lanes,
                visibility,
                audit_head: Mutex::new(None),
                known_senders: Mutex::default(),
            }),
        })
    }

    /// The state all records live in; the runtime reads bot kv from it.
    pub fn state(&self) -> &State {
        &self.inner.state
    }

    /// Stores an inbound message and the events it causes, durable only once
    /// [`Store::wait_durable`] returns. Refused with [`Unavailable`] while
    /// the disk is under its reserve.
    pub fn accept_inbound(
        &self,
        bot: &str,
        conversation: &str,
        sender: &str,
        text: &str,
        attachments: &[Attachment],
    ) -> Result<Accepted> {
        self.inner.state.admit()?;
        let _lane = self.lane_lock(bot, conversation);
        self.store_inbound(
            crate::channels::WEB,
            bot,
            conversation,
            sender,
            text,
            attachments,
            None,
        )
    }

    /// Like [`Store::accept_inbound`], from `channel`, once per
    /// `idempotency_key` and
    /// conversation: a key seen there within [`IDEMPOTENCY_MS`] answers
    /// with the first message's id and stores nothing. The key is kept in
    /// the same write as the message, so a crash keeps both or neither.
    #[allow(clippy::too_many_arguments)]
    pub fn accept_inbound_once(
        &self,
        channel: &str,
        bot: &str,
        conversation: &str,
        sender: &str,
        text: &str,
        attachments: &[Attachment],
        idempotency_key: &str,
    ) -> Result<Inbound> {
        let key = keys::idempotency(bot, conversation, &sha256_hex(idempotency_key.as_bytes()));
        if let Some(id) = self.remembered(&key)? {
            return Ok(Inbound::Repeated { id });
        }
        self.inner.state.admit()?;
        let _lane = self.lane_lock(bot, conversation);
        // Checked again under the lane lock: two retries racing store one.
        if let Some(id) = self.remembered(&key)? {
            return Ok(Inbound::Repeated { id });
        }
        self.store_inbound(
            channel,
            bot,
            conversation,
            sender,
            text,
            attachments,
            Some(key),
        )
        .map(Inbound::Accepted)
    }

    /// Writes a message, its events, its sender if new and its idempotency
    /// key (if any) in one write; the caller holds the conversation's lane
    /// lock.
    #[allow(clippy::too_many_arguments)]
    fn store_inbound(
        &self,
        channel: &str,
        bot: &str,
        conversation: &str,
        sender: &str,
        text: &str,
        attachments: &[Attachment],
        idempotency_key: Option<Vec<u8>>,
    ) -> Result<Accepted> {
        let message = MessageRecord {
            id: self.next_id()?,
            sender: sender.to_owned(),
            text: text.to_owned(),
            direction: Direction::In,
            at: now_ms(),
            reply_to: None,
            attachments: attachments.to_vec(),
        };
        let mut ops: Vec<Op> = Vec::with_capacity(4);
        let mut events = Vec::with_capacity(2);
        let sender_key = keys::sender(bot, conversation, sender);
        let is_new_sender = self.is_new_sender(&sender_key)?;
        if is_new_sender {
            events.push(self.pending(
                bot,
                conversation,
                EventRecord::ContactAdded {
                    contact: sender.to_owned(),
                },
            )?);
            ops.push(Op::Put(sender_key.clone(), Vec::new()));
        }
        events.push(self.pending(
            bot,
            conversation,
            EventRecord::Message {
                message: message.clone(),
            },
        )?);
        ops.push(Op::New(
            keys::message(bot, conversation, &message.id),
            message.encode()?,
        ));
        ops.extend(attachments::refs(bot, conversation, &message));
        ops.push(refs::seen(bot, conversation, channel, message.at)?);
        for event in &events {
            ops.push(Op::New(keys::pending(event.seq), event.encode()?));
        }
        if let Some(key) = idempotency_key {
            let remembered = tokens::Remembered {
                id: message.id.clone(),
                expires_at: message.at + IDEMPOTENCY_MS,
            };
            ops.push(Op::Put(key, serde_json::to_vec(&remembered)?));
        }
        let seq = self.inner.state.write(ops);
        if is_new_sender {
            self.remember_sender(sender_key);
        }
        self.written(bot, conversation, &message.id, seq);
        Ok(Accepted { message, events })
    }

    /// Waits until everything written before the call is on disk.
    pub async fn wait_durable(&self) -> Result<()> {
        let seq = self.inner.state.last_seq();
        self.inner.state.wait_durable(seq).await
    }

    /// Blocking form of [`Store::wait_durable`] for non-async callers.
    pub fn flush(&self) -> Result<()> {
        futures::executor::block_on(self.wait_durable())
    }

    /// Messages of a conversation with ids greater than `after`, oldest
    /// first, up to the first one that is not yet on disk.
    pub fn messages_after(
        &self,
        bot: &str,
        conversation: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<MessageRecord>> {
        let prefix = keys::conversation_prefix(bot, conversation);
        let start = match after {
            Some(id) => keys::message_after(bot, conversation, id),
            None => prefix.clone(),
        };
        let first_hidden = self
            .inner
            .visibility
            .first_hidden(bot, conversation)
            .map(|id| keys::message(bot, conversation, &id));
        let mut out = Vec::new();
        for item in self.inner.state.scan(&start, &prefix) {
            let (key, value) = item?;
            if out.len() >= limit
                || first_hidden
                    .as_deref()
                    .is_some_and(|hidden| key.as_slice() >= hidden)
            {
                break;
            }
            out.push(MessageRecord::decode(&value)?);
        }
        Ok(out)
    }

    /// Subscribes to new messages of a conversation: the receiver changes
    /// whenever messages stored there become durable, and so visible.
    pub fn subscribe(&self, bot: &str, conversation: &str) -> tokio::sync::watch::Receiver<String> {
        self.inner.visibility.subscribe(bot, conversation)
    }

    /// Hides a just-written message until its record `seq` is durable; call
    /// with the conversation's lane lock held, so ids arrive in order.
    fn written(&self, bot: &str, conversation: &str, id: &str, seq: u64) {
        self.inner.visibility.written(bot, conversation, id, seq);
    }

    /// Every event that was accepted but not yet handled, in acceptance order.
    pub fn pending_events(&self) -> Result<Vec<PendingEvent>> {
        self.inner
            .state
            .scan_prefix(keys::PENDING)
            .map(|item| PendingEvent::decode(&item?.1))
            .collect()
    }

    /// Moves a pending event that kept failing to the dead letters.
    pub fn dead_letter(&self, event: &PendingEvent, error: &str, attempts: u32) -> Result<()> {
        let letter = DeadLetter {
            event: event.clone(),
            error: crate::text::cut(error, crate::text::MAX_STORED_TEXT_BYTES).into_owned(),
            attempts,
            at: now_ms(),
        };
        self.inner.state.write(vec![
            Op::Delete(keys::pending(event.seq)),
            Op::Put(keys::dead_letter(event.seq), letter.encode()?),
        ]);
        Ok(())
    }

    /// All dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.inner
            .state
            .scan_prefix(keys::DEAD_LETTER)
            .map(|item| DeadLetter::decode(&item?.1))
            .collect()
    }

    /// Moves dead letter `seq` back into the pending queue; returns its
    /// event, for the router.
    pub fn revive_dead_letter(&self, seq: u64) -> Result<Option<PendingEvent>> {
        let Some(value) = self.inner.state.get(&keys::dead_letter(seq))? else {
            return Ok(None);
        };
        let letter = DeadLetter::decode(&value)?;
        self.inner.state.write(vec![
            Op::Delete(keys::dead_letter(seq)),
            Op::Put(keys::pending(seq), letter.event.encode()?),
        ]);
        Ok(Some(letter.event))
    }

    /// Deletes dead letter `seq`; returns whether it was there.
    pub fn drop_dead_letter(&self, seq: u64) -> Result<bool> {
        let key = keys::dead_letter(seq);
        let found = self.inner.state.get(&key)?.is_some();
        if found {
            self.inner.state.write(vec![Op::Delete(key)]);
        }
        Ok(found)
    }

    /// Whether the sender of `key` was never seen in its conversation; the
    /// caller holds the lane lock, so two first messages add one contact.
    /// A bounded in-memory set spares the lookup for known senders.
    fn is_new_sender(&self, key: &[u8]) -> Result<bool> {
        if self.inner.known_senders.lock().contains(key) {
            return Ok(false);
        }
        let is_new = self.inner.state.get(key)?.is_none();
        if !is_new {
            self.remember_sender(key.to_vec());
        }
        Ok(is_new)
    }

    fn remember_sender(&self, key: Vec<u8>) {
        let mut known = self.inner.known_senders.lock();
        if known.len() >= MAX_KNOWN_SENDERS {
            known.clear();
        }
        known.insert(key);
    }

    fn pending(&self, bot: &str, conversation: &str, event: EventRecord) -> Result<PendingEvent> {
        Ok(PendingEvent {
            seq: self.inner.state.generate_id(),
            bot: bot.to_owned(),
            conversation: conversation.to_owned(),
            event,
        })
    }

    fn next_id(&self) -> Result<String> {
        Ok(format!("{:016x}", self.inner.state.generate_id()))
    }

    /// Serialises id allocation and insertion within a conversation, so that
    /// a reader paging with `after=<id>` never skips a message that commits
    /// late with a smaller id.
    fn lane_lock(&self, bot: &str, conversation: &str) -> parking_lot::MutexGuard<'_, ()> {
        self.inner.lanes[stripe(bot, conversation)].lock()
    }
}

fn stripe(bot: &str, conversation: &str) -> usize {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (bot, conversation).hash(&mut hasher);
    (hasher.finish() as usize) % LANE_STRIPES
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Store {
    /// The asks approved for this exact build of a bot, if any.
    pub fn approval(
        &self,
        bot: &str,
        version: &str,
        sha256: &str,
    ) -> Result<Option<crate::policy::Capabilities>> {
        match self
            .inner
            .state
            .get(&keys::approval(bot, version, sha256))?
        {
            Some(value) => Ok(Some(
                serde_json::from_slice(&value).context("corrupt approval record")?,
            )),
            None => Ok(None),
        }
    }

    /// Records that the admin approved these asks for this exact build.
    pub fn record_approval(
        &self,
        bot: &str,
        version: &str,
        sha256: &str,
        asks: &crate::policy::Capabilities,
    ) -> Result<()> {
        self.inner.state.write(vec![Op::Put(
            keys::approval(bot, version, sha256),
            serde_json::to_vec(asks)?,
        )]);
        self.flush()
    }
}

/// Creates `dir` if needed and makes it owner-only (0700): the store holds
/// every conversation, the bots' kv and the admin token.
fn private_dir(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create the data directory {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).with_context(|| {
        format!(
            "cannot make the data directory {} owner-only",
            dir.display()
        )
    })
}

/// Takes the group and other bits off everything under `dir` (the engine creates
/// its files with the process's umask).
fn private_files(dir: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let metadata = std::fs::symlink_metadata(&path)?;
        if metadata.file_type().is_symlink() {
            continue;
        }
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode & 0o700))
                .with_context(|| format!("cannot make {} owner-only", path.display()))?;
        }
        if metadata.is_dir() {
            private_files(&path)?;
        }
    }
    Ok(())
}
