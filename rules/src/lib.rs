//! The rules that the Aviary host enforces and that bots (through the SDK
//! and its test host) must follow: one definition, compiled into both.
//!
//! - [`channels`]: the channels and what each can show people;
//! - [`ids`]: what a bot, conversation or version id may look like;
//! - [`text`]: the size of one message, and how to split or trim a longer one;
//! - [`kv`]: key and value limits, and how a counter is stored.

#![warn(missing_docs)]

pub mod channels;
pub mod ids;
pub mod kv;
pub mod text;
