//! Aviary: a host for chat bots that run as sandboxed WebAssembly components.
//!
//! The `aviary` binary is a thin CLI over this library. Read `DESIGN.md` for
//! the event flow: a channel stores an inbound message ([`store`]), the
//! [`router`] queues it on its conversation's lane, a worker runs the bot on
//! a fresh instance ([`runtime`]) and commits its effects atomically.

pub mod admin;
pub mod app;
pub mod bots;
pub mod channels;
pub mod cli;
pub mod config;
pub mod dispatch;
pub mod files;
pub mod ids;
pub mod live;
pub mod localtime;
pub mod outbox;
pub mod pinned;
pub mod plugin_build;
pub mod plugin_new;
pub mod policy;
pub mod router;
pub mod runtime;
pub mod schedule;
pub mod store;
pub mod text;
