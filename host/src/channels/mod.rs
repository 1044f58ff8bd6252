//! Channels: where messages come from and where the bots' answers go.

pub mod web;
pub mod webhooks;
