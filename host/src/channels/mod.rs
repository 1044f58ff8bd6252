//! Channels: where messages come from and where the bots' answers go.
//!
//! A channel is one folder here implementing [`Channel`], plus one line in
//! [`features`] and, if it runs on its own (as Matrix's sync loops do), one
//! in [`crate::app`] where channels are started. Every channel works the
//! same way against the rest of the host:
//! - it *receives* by storing inbound messages (and the events they cause)
//!   in the [`crate::store`], which records the conversation's channel in
//!   its reference ([`crate::store::ConversationRef`]);
//! - it *delivers* what bots send by reading the conversation's outgoing
//!   messages from the store once they are durable (the web channel's
//!   clients read them themselves; Matrix's delivery queue posts them);
//! - it shows the ephemeral [`crate::live::Signal`]s (typing, drafts) that
//!   its [`Features`] say it can.

pub mod matrix;
pub mod web;
pub mod webhooks;

/// The channel of conversations started through the web API.
pub const WEB: &str = "web";
/// The channel of Matrix rooms.
pub const MATRIX: &str = "matrix";

/// What a channel can show people, so that a bot can adapt (bots read it
/// through `aviary:bot/messaging.channel`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Features {
    /// A typing indicator.
    pub typing: bool,
    /// Drafts: the growing text of an answer before it is sent.
    pub drafts: bool,
    /// Files sent with messages, both ways.
    pub attachments: bool,
    /// Messages changed after they were sent (Matrix shows drafts as edits).
    pub edits: bool,
    /// Conversations with more than one person in them.
    pub groups: bool,
}

/// The features of the channel named `name`, if there is one.
pub fn features(name: &str) -> Option<Features> {
    match name {
        WEB => Some(web::FEATURES),
        MATRIX => Some(matrix::FEATURES),
        _ => None,
    }
}

/// A channel the host runs beside the web API.
pub trait Channel: Send + Sync {
    /// Shows `signal` in `bot`'s `conversation` if it is one of this
    /// channel's; signals are never stored, so one that cannot be shown is
    /// dropped.
    fn signal(&self, bot: &str, conversation: &str, signal: &crate::live::Signal);
}
