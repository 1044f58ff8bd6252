//! `aviary:bot/attachments`: reading the files of a bot's conversations,
//! making files to send, and sending messages that carry them.
//!
//! A bot may read an attachment of the event's message, one a message of
//! its own conversations carries, or one it created in this event; nothing
//! of another bot, whatever id it names. Every file is bounded by the
//! bot's `attachment_bytes` grant. A created file is a blob at once (so the
//! commit stays a metadata write) and kept only if a send carrying it
//! commits; otherwise the blob collector deletes it.

use std::sync::Arc;

use super::messaging::Messaging;
use super::Ctx;
use crate::policy::BotPolicy;
use crate::runtime::bindings::aviary::bot::attachments::Host;
use crate::runtime::bindings::aviary::bot::types::Attachment as WitAttachment;
use crate::runtime::bindings::BotError;
use crate::runtime::budget::EventBudget;
use crate::store::{Attachment, Store};

/// Files one event may create.
pub const MAX_CREATED_PER_EVENT: usize = 16;
/// Files one message may carry.
pub const MAX_FILES_PER_MESSAGE: usize = 16;
/// Bytes one event may read from attachments, in all.
pub const MAX_READ_BYTES_PER_EVENT: u64 = 256 << 20;
/// Longest file name.
pub const MAX_NAME_BYTES: usize = 255;

/// Per-event attachments state.
pub struct Attachments {
    store: Store,
    bot: Arc<str>,
    policy: Arc<BotPolicy>,
    /// The attachments of the event's message.
    received: Vec<Attachment>,
    /// Files created in this event.
    created: Vec<Attachment>,
    read_bytes: u64,
}

impl Attachments {
    /// The state of one event of `bot` whose message carries `received`.
    pub fn new(
        store: Store,
        bot: Arc<str>,
        policy: Arc<BotPolicy>,
        received: Vec<Attachment>,
    ) -> Attachments {
        Attachments {
            store,
            bot,
            policy,
            received,
            created: Vec::new(),
            read_bytes: 0,
        }
    }

    /// Attachment `id`, if this event's bot may read it.
    pub fn find(&self, id: &str) -> Result<Attachment, BotError> {
        if let Some(found) = self
            .received
            .iter()
            .chain(&self.created)
            .find(|a| a.id == id)
        {
            return Ok(found.clone());
        }
        let unknown =
            || BotError::Invalid(format!("no attachment `{id}` in this bot's conversations"));
        if !crate::store::is_blob_id(id) {
            return Err(unknown());
        }
        match self.store.attachment_of(&self.bot, id) {
            Ok(Some(found)) => Ok(found),
            Ok(None) => Err(unknown()),
            Err(error) => Err(BotError::Unavailable(format!(
                "cannot look up the attachment: {error:#}"
            ))),
        }
    }

    /// The bytes of attachment `id`, within the grant and the event's
    /// reading budget.
    pub fn bytes(&mut self, id: &str) -> Result<Vec<u8>, BotError> {
        let attachment = self.find(id)?;
        let granted = self.policy.grant.attachment_bytes.unwrap_or(0);
        if attachment.size > granted {
            return Err(BotError::Denied(format!(
                "the attachment is {} bytes; this bot's `attachment_bytes` grant allows {granted}",
                attachment.size
            )));
        }
        if self.read_bytes + attachment.size > MAX_READ_BYTES_PER_EVENT {
            return Err(BotError::QuotaExceeded(format!(
                "at most {} MiB of attachments read per event",
                MAX_READ_BYTES_PER_EVENT >> 20
            )));
        }
        self.read_bytes += attachment.size;
        self.blob(&attachment)
    }
}

impl Attachments {
    /// The bytes of `attachment` (found by [`Attachments::find`]) for the
    /// host's own use: the bot never sees them, so its grant does not apply.
    pub fn blob(&self, attachment: &Attachment) -> Result<Vec<u8>, BotError> {
        self.store
            .blob(&attachment.id)
            .map_err(|e| BotError::Unavailable(format!("cannot read the attachment: {e:#}")))
    }
}

/// What the attachments imports work on: their own state and, for
/// `send`, the event's messaging.
pub struct FilesCtx<'a> {
    pub cap: &'a mut Attachments,
    pub messaging: &'a mut Messaging,
    pub budget: &'a mut EventBudget,
}

/// The WIT form of a stored attachment.
pub fn to_wit(attachment: &Attachment) -> WitAttachment {
    WitAttachment {
        id: attachment.id.clone(),
        media_type: attachment.media_type.clone(),
        size: attachment.size,
        name: attachment.name.clone(),
    }
}

impl FilesCtx<'_> {
    fn deny(&mut self, target: &str, error: BotError) -> BotError {
        if let BotError::Denied(reason) | BotError::QuotaExceeded(reason) = &error {
            self.budget
                .refusals
                .deny("attachments", target, || reason.clone());
        }
        error
    }
}

impl Host for FilesCtx<'_> {
    fn read(&mut self, id: String) -> Result<Vec<u8>, BotError> {
        self.budget.check()?;
        self.cap.bytes(&id).map_err(|e| self.deny(&id, e))
    }

    fn create(&mut self, name: String, bytes: Vec<u8>) -> Result<WitAttachment, BotError> {
        self.budget.check()?;
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains(['/', '\0']) {
            return Err(BotError::Invalid(format!(
                "a file name is 1 to {MAX_NAME_BYTES} bytes with no `/`"
            )));
        }
        let granted = self.cap.policy.grant.attachment_bytes.unwrap_or(0);
        if bytes.len() as u64 > granted {
            let reason = format!(
                "the file is {} bytes; this bot's `attachment_bytes` grant allows {granted}",
                bytes.len()
            );
            return Err(self.deny(&name, BotError::Denied(reason)));
        }
        if self.cap.created.len() >= MAX_CREATED_PER_EVENT {
            let reason = format!("at most {MAX_CREATED_PER_EVENT} files created per event");
            return Err(self.deny(&name, BotError::QuotaExceeded(reason)));
        }
        let id = self
            .cap
            .store
            .put_blob(&bytes)
            .map_err(|e| BotError::Unavailable(format!("cannot store the file: {e:#}")))?;
        let attachment = Attachment {
            id,
            name: Some(name),
            media_type: aviary_vision::sniff(&bytes)
                .unwrap_or("application/octet-stream")
                .to_owned(),
            size: bytes.len() as u64,
        };
        self.cap.created.push(attachment.clone());
        Ok(to_wit(&attachment))
    }

    fn send(
        &mut self,
        conversation: String,
        text: String,
        files: Vec<String>,
        reply_to: Option<String>,
    ) -> Result<(), BotError> {
        if files.len() > MAX_FILES_PER_MESSAGE {
            return Err(BotError::Invalid(format!(
                "a message carries at most {MAX_FILES_PER_MESSAGE} files"
            )));
        }
        let attachments = files
            .iter()
            .map(|id| self.cap.find(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ctx {
            cap: &mut *self.messaging,
            budget: &mut *self.budget,
        }
        .push(conversation, text, reply_to, attachments)
    }
}
