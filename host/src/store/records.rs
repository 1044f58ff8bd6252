//! The records the store keeps, serialised as JSON.

use serde::{Deserialize, Serialize};

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From a person to the bot.
    In,
    /// From the bot to the conversation.
    Out,
}

/// A stored chat message, as the web API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageRecord {
    /// 16 hex digits, increasing in storage order within a conversation.
    pub id: String,
    pub sender: String,
    pub text: String,
    pub direction: Direction,
    /// Milliseconds since the Unix epoch.
    pub at: u64,
    pub reply_to: Option<String>,
}

/// What happened, in the store's terms; the runtime maps it to the WIT event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum EventRecord {
    Message { message: MessageRecord },
    ContactAdded { contact: String },
    Timer { id: String, payload: String },
}

/// An event accepted for a bot and not yet handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEvent {
    /// Global acceptance order; also the key in the pending queue.
    pub seq: u64,
    pub bot: String,
    pub conversation: String,
    pub event: EventRecord,
}

/// An event that failed on every attempt, kept for admins.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    pub event: PendingEvent,
    pub error: String,
    pub attempts: u32,
    pub at: u64,
}
