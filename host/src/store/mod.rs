//! The host's durable state on sled: conversations, messages in both
//! directions, pending events, per-bot kv and dead letters.
//!
//! Everything lives in one sled tree so that the effects of one `handle`
//! call (its sends, its kv writes and the removal of the event from the
//! pending queue) apply as one atomic batch. Keys are namespaced by a short
//! prefix (see [`keys`]).

mod audit;
mod commit;
mod durability;
pub mod keys;
mod records;
mod tokens;
mod watch;

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use parking_lot::Mutex;

pub use audit::{AuditEntry, AuditRecord, ChainBreak};
pub use commit::{CommitError, Effects, KvRead, Outgoing};
pub use records::{DeadLetter, Direction, EventRecord, MessageRecord, PendingEvent};
pub use tokens::{sha256_hex, TokenRecord, IDEMPOTENCY_MS};

use durability::GroupCommit;
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
    db: sled::Db,
    state: sled::Tree,
    lanes: Vec<Mutex<()>>,
    group_commit: GroupCommit,
    visibility: Arc<Visibility>,
    /// Next sequence number and last hash of the audit chain, once read;
    /// its lock serialises appends.
    audit_head: Mutex<Option<(u64, String)>>,
    /// Sender keys known to be stored (see [`Store::claim_sender`]).
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
    /// Opens (or creates) the store under `dir`.
    pub fn open(dir: &std::path::Path) -> Result<Store> {
        private_dir(dir)?;
        let db = sled::Config::new()
            .path(dir.join("store"))
            .cache_capacity(256 * 1024 * 1024)
            .flush_every_ms(Some(200))
            .mode(sled::Mode::HighThroughput)
            .open()
            .with_context(|| {
                format!(
                    "cannot open the store in {} (is another aviary running on it?)",
                    dir.display()
                )
            })?;
        private_files(dir)?;
        let state = db.open_tree("state")?;
        let visibility = Arc::new(Visibility::default());
        let revealer = visibility.clone();
        let group_commit = GroupCommit::start(
            db.clone(),
            Box::new(move |generation| revealer.durable(generation)),
        );
        let lanes = (0..LANE_STRIPES).map(|_| Mutex::new(())).collect();
        Ok(Store {
            inner: Arc::new(Inner {
                db,
                state,
                lanes,
                group_commit,
                visibility,
                audit_head: Mutex::new(None),
                known_senders: Mutex::default(),
            }),
        })
    }

    /// The tree that holds all state; the runtime reads bot kv from it.
    pub fn tree(&self) -> &sled::Tree {
        &self.inner.state
    }

    /// Stores an inbound message and the events it causes, durable only once
    /// [`Store::wait_durable`] returns.
    pub fn accept_inbound(
        &self,
        bot: &str,
        conversation: &str,
        sender: &str,
        text: &str,
    ) -> Result<Accepted> {
        let is_new_sender = self.claim_sender(bot, conversation, sender)?;
        let _lane = self.lane_lock(bot, conversation);
        self.store_inbound(bot, conversation, sender, text, is_new_sender, None)
    }

    /// Like [`Store::accept_inbound`], once per `idempotency_key` and
    /// conversation: a key seen there within [`IDEMPOTENCY_MS`] answers
    /// with the first message's id and stores nothing. The key is kept in
    /// the same batch as the message, so a crash keeps both or neither.
    pub fn accept_inbound_once(
        &self,
        bot: &str,
        conversation: &str,
        sender: &str,
        text: &str,
        idempotency_key: &str,
    ) -> Result<Inbound> {
        let key = keys::idempotency(bot, conversation, &sha256_hex(idempotency_key.as_bytes()));
        if let Some(id) = self.remembered(&key)? {
            return Ok(Inbound::Repeated { id });
        }
        let is_new_sender = self.claim_sender(bot, conversation, sender)?;
        let _lane = self.lane_lock(bot, conversation);
        // Checked again under the lane lock: two retries racing store one.
        if let Some(id) = self.remembered(&key)? {
            return Ok(Inbound::Repeated { id });
        }
        self.store_inbound(bot, conversation, sender, text, is_new_sender, Some(key))
            .map(Inbound::Accepted)
    }

    /// Writes a message, its events and its idempotency key (if any) in one
    /// batch; the caller holds the conversation's lane lock.
    fn store_inbound(
        &self,
        bot: &str,
        conversation: &str,
        sender: &str,
        text: &str,
        is_new_sender: bool,
        idempotency_key: Option<Vec<u8>>,
    ) -> Result<Accepted> {
        let message = MessageRecord {
            id: self.next_id()?,
            sender: sender.to_owned(),
            text: text.to_owned(),
            direction: Direction::In,
            at: now_ms(),
            reply_to: None,
        };
        let mut events = Vec::with_capacity(2);
        if is_new_sender {
            events.push(self.pending(
                bot,
                conversation,
                EventRecord::ContactAdded {
                    contact: sender.to_owned(),
                },
            )?);
        }
        events.push(self.pending(
            bot,
            conversation,
            EventRecord::Message {
                message: message.clone(),
            },
        )?);
        let mut batch = sled::Batch::default();
        batch.insert(
            keys::message(bot, conversation, &message.id),
            serde_json::to_vec(&message)?,
        );
        for event in &events {
            batch.insert(keys::pending(event.seq), serde_json::to_vec(event)?);
        }
        if let Some(key) = idempotency_key {
            let remembered = tokens::Remembered {
                id: message.id.clone(),
                expires_at: message.at + IDEMPOTENCY_MS,
            };
            batch.insert(key, serde_json::to_vec(&remembered)?);
        }
        self.inner.state.apply_batch(batch)?;
        self.written(bot, conversation, &message.id);
        Ok(Accepted { message, events })
    }

    /// Waits until everything written before the call is on disk.
    pub async fn wait_durable(&self) -> Result<()> {
        self.inner.group_commit.wait().await
    }

    /// Blocking form of [`Store::wait_durable`] for non-async callers.
    pub fn flush(&self) -> Result<()> {
        futures::executor::block_on(self.inner.group_commit.wait())
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
        for item in self.inner.state.range(start..) {
            let (key, value) = item?;
            if !key.starts_with(&prefix)
                || out.len() >= limit
                || first_hidden
                    .as_deref()
                    .is_some_and(|hidden| key.as_ref() >= hidden)
            {
                break;
            }
            out.push(serde_json::from_slice(&value).context("corrupt message record")?);
        }
        Ok(out)
    }

    /// Subscribes to new messages of a conversation: the receiver changes
    /// whenever messages stored there become durable, and so visible.
    pub fn subscribe(&self, bot: &str, conversation: &str) -> tokio::sync::watch::Receiver<String> {
        self.inner.visibility.subscribe(bot, conversation)
    }

    /// Hides a just-written message until the flush that carries it; call
    /// with the conversation's lane lock held, so ids arrive in order.
    fn written(&self, bot: &str, conversation: &str, id: &str) {
        self.inner
            .visibility
            .written(bot, conversation, id, || self.inner.group_commit.request());
    }

    /// Every event that was accepted but not yet handled, in acceptance order.
    pub fn pending_events(&self) -> Result<Vec<PendingEvent>> {
        self.inner
            .state
            .scan_prefix(keys::PENDING)
            .map(|item| Ok(serde_json::from_slice(&item?.1).context("corrupt pending event")?))
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
        let mut batch = sled::Batch::default();
        batch.remove(keys::pending(event.seq));
        batch.insert(keys::dead_letter(event.seq), serde_json::to_vec(&letter)?);
        self.inner.state.apply_batch(batch)?;
        Ok(())
    }

    /// All dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        self.inner
            .state
            .scan_prefix(keys::DEAD_LETTER)
            .map(|item| Ok(serde_json::from_slice(&item?.1).context("corrupt dead letter")?))
            .collect()
    }

    /// Whether `sender` is new in the conversation (and marks it known).
    /// A bounded in-memory set spares the store a write for known senders.
    fn claim_sender(&self, bot: &str, conversation: &str, sender: &str) -> Result<bool> {
        let key = keys::sender(bot, conversation, sender);
        if self.inner.known_senders.lock().contains(&key) {
            return Ok(false);
        }
        let is_new = self
            .inner
            .state
            .compare_and_swap(&key, None as Option<&[u8]>, Some(b"".as_slice()))?
            .is_ok();
        let mut known = self.inner.known_senders.lock();
        if known.len() >= MAX_KNOWN_SENDERS {
            known.clear();
        }
        known.insert(key);
        Ok(is_new)
    }

    fn pending(&self, bot: &str, conversation: &str, event: EventRecord) -> Result<PendingEvent> {
        Ok(PendingEvent {
            seq: self.inner.db.generate_id()?,
            bot: bot.to_owned(),
            conversation: conversation.to_owned(),
            event,
        })
    }

    fn next_id(&self) -> Result<String> {
        Ok(format!("{:016x}", self.inner.db.generate_id()?))
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
        match self.inner.state.get(keys::approval(bot, version, sha256))? {
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
        self.inner.state.insert(
            keys::approval(bot, version, sha256),
            serde_json::to_vec(asks)?,
        )?;
        self.inner.db.flush()?;
        Ok(())
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

/// Takes the group and other bits off everything under `dir` (sled creates
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
