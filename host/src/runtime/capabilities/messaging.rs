//! `aviary:bot/messaging`: sends buffered until the event commits. A bot
//! sends into the conversation of the event, or proactively into any other
//! conversation of its own that it has seen (the store keeps their
//! references); never into one it has not seen.

use std::sync::Arc;
use std::time::Duration;

use super::Ctx;
use crate::policy::BotPolicy;
use crate::runtime::bindings::aviary::bot::messaging::Host;
use crate::runtime::bindings::aviary::bot::types::ChannelInfo;
use crate::runtime::bindings::BotError;
use crate::store::{Attachment, Outgoing};

pub use aviary_rules::text::MAX_TEXT_BYTES;
/// Most messages one event may send.
pub const MAX_SENDS_PER_EVENT: usize = 64;

/// Per-event messaging state.
pub struct Messaging {
    /// What the bot sent, committed when `handle` returns ok.
    pub sends: Vec<Outgoing>,
    pub policy: Arc<BotPolicy>,
    /// Set when a send was refused by a send-rate bucket that will refill:
    /// how long until this event's sends fit (`None` inside: never).
    pub refill_wait: Option<Option<Duration>>,
    /// Set where no send is allowed (in `migrate`): why.
    pub closed: Option<&'static str>,
    /// Where the bot's conversation references are, and whose they are.
    store: crate::store::Store,
    bot: Arc<str>,
    /// Conversations this event may send into, once checked (the event's own
    /// conversation from the start).
    reachable: std::collections::BTreeSet<String>,
    /// Where "typing" is shown, at once rather than at commit.
    live: Arc<crate::live::LiveHub>,
    /// Conversations this event showed typing in: once each is enough.
    typed: std::collections::BTreeSet<String>,
}

impl Messaging {
    pub fn new(
        policy: Arc<BotPolicy>,
        store: crate::store::Store,
        live: Arc<crate::live::LiveHub>,
        bot: Arc<str>,
        conversation: Option<String>,
    ) -> Messaging {
        Messaging {
            sends: Vec::new(),
            policy,
            refill_wait: None,
            closed: None,
            store,
            bot,
            reachable: conversation.into_iter().collect(),
            live,
            typed: std::collections::BTreeSet::new(),
        }
    }

    /// Whether the bot has seen `conversation` (so may send there).
    fn reaches(&mut self, conversation: &str) -> Result<bool, BotError> {
        if self.reachable.contains(conversation) {
            return Ok(true);
        }
        let seen = self
            .store
            .conversation_ref(&self.bot, conversation)
            .map_err(|e| BotError::Unavailable(format!("store error: {e}")))?
            .is_some();
        if seen {
            self.reachable.insert(conversation.to_owned());
        }
        Ok(seen)
    }
}

impl Ctx<'_, Messaging> {
    fn deny(&mut self, target: &str, error: BotError) -> Result<(), BotError> {
        self.budget.refusals.deny("send", target, || {
            crate::runtime::bindings::reason(&error).to_owned()
        });
        Err(error)
    }

    /// What a send and a typing indicator both need: an event that may
    /// still reach people (not `migrate`), a valid conversation id, and a
    /// conversation the bot has seen. Refusals are audited.
    fn check_target(&mut self, conversation: &str) -> Result<(), BotError> {
        self.budget.check()?;
        if let Some(reason) = self.cap.closed {
            return self.deny(conversation, BotError::Denied(reason.into()));
        }
        if !crate::ids::is_valid_id(conversation) {
            return Err(BotError::Invalid(
                "not a valid conversation id (1 to 128 of A-Z a-z 0-9 . _ : -)".into(),
            ));
        }
        if !self.cap.reaches(conversation)? {
            let error = BotError::Denied(format!(
                "conversation `{conversation}` is not one this bot has seen; a bot sends only into its own conversations"
            ));
            return self.deny(conversation, error);
        }
        Ok(())
    }

    /// Buffers one send, carrying `attachments` (already checked readable).
    pub(super) fn push(
        &mut self,
        conversation: String,
        text: String,
        reply_to: Option<String>,
        attachments: Vec<Attachment>,
    ) -> Result<(), BotError> {
        if reply_to
            .as_deref()
            .is_some_and(|id| !aviary_rules::ids::is_message_id(id))
        {
            return Err(BotError::Invalid(
                "reply-to must be a message id (16 hex digits)".into(),
            ));
        }
        self.check_target(&conversation)?;
        if text.len() > MAX_TEXT_BYTES {
            let error = BotError::Invalid(format!(
                "message of {} bytes is over the {MAX_TEXT_BYTES}-byte limit; split it with `aviary_sdk::text::split` (or `trim`)",
                text.len()
            ));
            return self.deny(&conversation, error);
        }
        if self.cap.sends.len() >= MAX_SENDS_PER_EVENT {
            return self.deny(
                &conversation,
                BotError::QuotaExceeded(format!(
                    "at most {MAX_SENDS_PER_EVENT} messages per event"
                )),
            );
        }
        if let Err(reason) = self.cap.policy.send.try_send(&conversation) {
            let error = if self.cap.policy.grant.send.is_some() {
                self.cap.note_refill_wait(&conversation);
                BotError::QuotaExceeded(reason)
            } else {
                BotError::Denied(reason)
            };
            return self.deny(&conversation, error);
        }
        let bytes = conversation.len()
            + text.len()
            + reply_to.as_ref().map_or(0, String::len)
            + attachments.len() * 128;
        self.budget.resize(0, bytes)?;
        self.cap.sends.push(Outgoing {
            conversation,
            text,
            reply_to,
            attachments,
        });
        Ok(())
    }
}

impl Messaging {
    /// Records how long until the sends this event wants (those accepted
    /// and the one refused) fit the send-rate buckets.
    fn note_refill_wait(&mut self, conversation: &str) {
        let in_conversation = self
            .sends
            .iter()
            .filter(|s| s.conversation == conversation)
            .count() as u32
            + 1;
        let total = self.sends.len() as u32 + 1;
        let wait = self
            .policy
            .send
            .refill_wait(conversation, in_conversation, total);
        self.refill_wait = Some(match (self.refill_wait, wait) {
            (Some(None), _) | (_, None) => None,
            (Some(Some(a)), Some(b)) => Some(a.max(b)),
            (None, Some(b)) => Some(b),
        });
    }
}

impl Host for Ctx<'_, Messaging> {
    fn send(&mut self, conversation: String, text: String) -> Result<(), BotError> {
        self.push(conversation, text, None, Vec::new())
    }

    fn reply(
        &mut self,
        conversation: String,
        reply_to: String,
        text: String,
    ) -> Result<(), BotError> {
        self.push(conversation, text, Some(reply_to), Vec::new())
    }

    fn channel(&mut self, conversation: String) -> Result<ChannelInfo, BotError> {
        let refused = || {
            BotError::Denied(format!(
                "conversation `{conversation}` is not one this bot has seen"
            ))
        };
        if !crate::ids::is_valid_id(&conversation) {
            return Err(refused());
        }
        // The reference is both the proof the bot has seen the conversation
        // and where its channel is written: one read answers both.
        let name = self
            .cap
            .store
            .conversation_ref(&self.cap.bot, &conversation)
            .map_err(|e| BotError::Unavailable(format!("store error: {e}")))?
            .ok_or_else(refused)?
            .channel;
        let features =
            crate::channels::features(&name).unwrap_or(aviary_rules::channels::WEB_FEATURES);
        Ok(ChannelInfo {
            name,
            typing: features.typing,
            drafts: features.drafts,
            attachments: features.attachments,
            edits: features.edits,
            groups: features.groups,
        })
    }

    /// Shows the bot typing in `conversation` now (a signal, never stored),
    /// under the same rules as a send: a conversation the bot has seen, a
    /// `[send]` grant, not in `migrate`. Once per conversation per event.
    fn typing(&mut self, conversation: String) -> Result<(), BotError> {
        self.check_target(&conversation)?;
        if self.cap.policy.grant.send.is_none() {
            let error = BotError::Denied("the bot's policy grants no `[send]`".into());
            return self.deny(&conversation, error);
        }
        if self.cap.typed.len() >= MAX_SENDS_PER_EVENT {
            let error = BotError::QuotaExceeded(format!(
                "typing in at most {MAX_SENDS_PER_EVENT} conversations per event"
            ));
            return self.deny(&conversation, error);
        }
        if self.cap.typed.insert(conversation.clone()) {
            let live = self.cap.live.clone();
            live.publish(&self.cap.bot, &conversation, crate::live::Signal::Typing);
        }
        Ok(())
    }
}
