//! One module per host capability. Each owns the state its import functions
//! need for one event and links its WIT interface into the linker; adding a
//! capability is a new module plus one line in [`link_all`] and one field in
//! [`crate::runtime::state::EventState`].
//!
//! Import functions run on a [`Ctx`]: the capability's own state beside the
//! event's [`EventBudget`], which every call charges and every refusal is
//! recorded in.

pub mod attachments;
mod buffer;
pub mod config;
pub mod http;
pub mod kv;
pub mod llm;
pub mod log;
pub mod messaging;
pub mod outbox;
pub mod schedule;
pub mod vision;

use std::marker::PhantomData;

use wasmtime::component::{HasData, HasSelf, Linker};

use super::bindings::aviary::bot;
use super::budget::EventBudget;
use super::state::EventState;

/// What an import function of capability `C` works on for one call.
pub struct Ctx<'a, C> {
    pub cap: &'a mut C,
    pub budget: &'a mut EventBudget,
}

/// The [`HasData`] of a capability whose imports run on a [`Ctx`].
struct WithBudget<C>(PhantomData<C>);

impl<C: 'static> HasData for WithBudget<C> {
    type Data<'a> = Ctx<'a, C>;
}

/// Links every capability's imports into `linker`.
pub fn link_all(linker: &mut Linker<EventState>) -> wasmtime::Result<()> {
    bot::types::add_to_linker::<EventState, HasSelf<EventState>>(linker, |s| s)?;
    bot::messaging::add_to_linker::<EventState, WithBudget<messaging::Messaging>>(linker, |s| {
        Ctx {
            cap: &mut s.messaging,
            budget: &mut s.budget,
        }
    })?;
    bot::kv::add_to_linker::<EventState, WithBudget<kv::Kv>>(linker, |s| Ctx {
        cap: &mut s.kv,
        budget: &mut s.budget,
    })?;
    bot::log::add_to_linker::<EventState, HasSelf<log::Log>>(linker, |s| &mut s.log)?;
    bot::config::add_to_linker::<EventState, WithBudget<config::Config>>(linker, |s| Ctx {
        cap: &mut s.config,
        budget: &mut s.budget,
    })?;
    bot::llm::add_to_linker::<EventState, WithBudget<llm::Llm>>(linker, |s| Ctx {
        cap: &mut s.llm,
        budget: &mut s.budget,
    })?;
    bot::attachments::add_to_linker::<EventState, FilesData>(linker, |s| attachments::FilesCtx {
        cap: &mut s.attachments,
        messaging: &mut s.messaging,
        budget: &mut s.budget,
    })?;
    bot::vision::add_to_linker::<EventState, VisionData>(linker, |s| vision::VisionCtx {
        cap: &mut s.vision,
        files: &mut s.attachments,
        budget: &mut s.budget,
    })?;
    bot::schedule::add_to_linker::<EventState, WithBudget<schedule::Schedule>>(linker, |s| Ctx {
        cap: &mut s.schedule,
        budget: &mut s.budget,
    })?;
    bot::outbox::add_to_linker::<EventState, WithBudget<outbox::Outbox>>(linker, |s| Ctx {
        cap: &mut s.outbox,
        budget: &mut s.budget,
    })?;
    http::link(linker)?;
    Ok(())
}

/// The [`HasData`] of the attachments imports.
struct FilesData;

impl HasData for FilesData {
    type Data<'a> = attachments::FilesCtx<'a>;
}

/// The [`HasData`] of the vision imports.
struct VisionData;

impl HasData for VisionData {
    type Data<'a> = vision::VisionCtx<'a>;
}

/// What the capabilities of every bot share on one host: its models, its
/// text recognition and where ephemeral signals (typing, drafts) go.
#[derive(Clone)]
pub struct Services {
    pub models: std::sync::Arc<llm::models::Models>,
    pub vision: std::sync::Arc<vision::engine::Vision>,
    pub live: std::sync::Arc<crate::live::LiveHub>,
}

impl Services {
    /// No models and nobody listening: for tools that inspect bots.
    pub fn none() -> Services {
        Services {
            models: std::sync::Arc::new(llm::models::Models::none()),
            vision: std::sync::Arc::new(vision::engine::Vision::new(
                Default::default(),
                std::path::PathBuf::new(),
                1,
            )),
            live: std::sync::Arc::default(),
        }
    }
}

impl bot::types::Host for EventState {}
