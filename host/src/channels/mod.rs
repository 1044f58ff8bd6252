//! Channels: where messages come from and where the bots' answers go.
//!
//! A channel is one folder here implementing [`Channel`], plus its name and
//! [`Features`] in `aviary_rules::channels` (shared with the SDK, so a bot's
//! tests see what the host will tell it) and the line in [`crate::app`]
//! that starts it and taps it into the [`crate::live::LiveHub`]. Every
//! channel works the same way against the rest of the host:
//! - it *receives* by storing inbound messages (and the events they cause)
//!   in the [`crate::store`], which records the conversation's channel in
//!   its reference ([`crate::store::ConversationRef`]);
//! - it *delivers* what bots send by reading the conversation's outgoing
//!   messages from the store once they are durable (the web channel's
//!   clients read them themselves; Matrix's delivery queue posts them);
//! - it shows the ephemeral [`crate::live::Signal`]s (typing, drafts) that
//!   its [`Features`] say it can, through [`Channel::signal`] (the web
//!   channel to the conversation's open WebSockets, Matrix in the room).

pub mod matrix;
pub mod web;
pub mod webhooks;

pub use aviary_rules::channels::{features, Features, MATRIX, WEB};

/// A channel, as the rest of the host sees it once it runs: the web
/// channel's WebSockets ([`web::Signals`]) and each Matrix account
/// ([`matrix::Matrix`]) are tapped into the [`crate::live::LiveHub`] where
/// the bots' signals are published.
pub trait Channel: Send + Sync {
    /// Shows `signal` in `bot`'s `conversation` if it is one of this
    /// channel's; signals are never stored, so one that cannot be shown is
    /// dropped.
    fn signal(&self, bot: &str, conversation: &str, signal: &std::sync::Arc<crate::live::Signal>);
}
