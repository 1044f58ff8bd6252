//! One module per host capability. Each owns the state its import functions
//! need for one event and links its WIT interface into the linker; adding a
//! capability is a new module plus one line in [`link_all`] and one field in
//! [`crate::runtime::state::EventState`].

pub mod config;
pub mod http;
pub mod kv;
pub mod log;
pub mod messaging;

use wasmtime::component::{HasSelf, Linker};

use super::bindings::aviary::bot;
use super::state::EventState;

/// Links every capability's imports into `linker`.
pub fn link_all(linker: &mut Linker<EventState>) -> wasmtime::Result<()> {
    bot::types::add_to_linker::<EventState, HasSelf<EventState>>(linker, |s| s)?;
    bot::messaging::add_to_linker::<EventState, HasSelf<messaging::Messaging>>(linker, |s| {
        &mut s.messaging
    })?;
    bot::kv::add_to_linker::<EventState, HasSelf<kv::Kv>>(linker, |s| &mut s.kv)?;
    bot::log::add_to_linker::<EventState, HasSelf<log::Log>>(linker, |s| &mut s.log)?;
    bot::config::add_to_linker::<EventState, HasSelf<config::Config>>(linker, |s| &mut s.config)?;
    http::link(linker)?;
    Ok(())
}

impl bot::types::Host for EventState {}
