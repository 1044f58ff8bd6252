//! Write Aviary bots in Rust.
//!
//! A bot is a WebAssembly component implementing the `aviary:bot` WIT world
//! (`wit/aviary.wit`). This crate hides the component plumbing behind three
//! things:
//!
//! - the [`Bot`] trait, which a bot implements: `init` validates the bot's
//!   settings once at load, `handle` runs on a fresh value for every event;
//! - the [`Host`] trait, the capabilities a bot may use (messaging, kv, log,
//!   config and, with the `llm` feature, language models), implemented by
//!   [`WasmHost`] inside the component and by [`testing::TestHost`] in unit
//!   tests;
//! - the [`export_bot!`] macro, which turns a [`Bot`] into the component's
//!   exports. A bot crate needs only `aviary-sdk` as a dependency;
//! - the host's rules, shared with it through `aviary-rules`: [`text`] (the
//!   [`text::MAX_TEXT_BYTES`] limit of one message, [`text::split`] and
//!   [`text::trim`] for longer texts), [`kv`] limits and [`ids`].
//!
//! # Cargo feature `llm`
//!
//! Language models (the WIT `llm` interface) are behind the `llm` feature:
//! with it, [`Host`] gains `llm_chat`, `llm_embed` and `llm_models`, the
//! `llm` module holds the request and answer types with a few helpers, and
//! [`testing::TestHost`] can register fake models. Without it a bot does
//! not import `aviary:bot/llm` at all, which matters because the host
//! refuses to load a bot that imports it without an `llm_models` grant.
//! Every [`Host`] method is in its vtable, so every wrapped import is
//! imported by every bot: only bots that ask for the feature
//! (`aviary-sdk = { ..., features = ["llm"] }`) get these methods.
//!
//! # Cargo features `attachments` and `vision`
//!
//! The same way, `attachments` adds reading, creating and sending files
//! (needs an `attachment_bytes` grant) and `vision` adds text recognition
//! on image attachments (needs `vision = true`). Every bot sees the
//! attachments' metadata in [`Message::attachments`] without either.
//!
//! ```
//! use aviary_sdk::{Bot, Event, Host};
//!
//! #[derive(Default)]
//! struct Shout;
//!
//! impl Bot for Shout {
//!     fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
//!         if let Event::Message(msg) = event {
//!             host.reply_to(&msg, &msg.text.to_uppercase()).map_err(|e| e.to_string())?;
//!         }
//!         Ok(())
//!     }
//! }
//!
//! aviary_sdk::export_bot!(Shout);
//!
//! // The same bot, tested without a server:
//! let mut host = aviary_sdk::testing::TestHost::new();
//! let event = host.message("room", "alice", "hi");
//! host.deliver::<Shout>(event).unwrap();
//! assert_eq!(host.sent()[0].text, "HI");
//! ```
//!
//! Build a bot crate (`crate-type = ["cdylib", "rlib"]`) with
//! `cargo build --release --target wasm32-wasip2`; the `.wasm` it produces is
//! the component the host loads.

#![warn(missing_docs)]

use std::collections::BTreeMap;

#[cfg(feature = "llm")]
pub mod llm;
pub mod testing;

/// Text recognition types (feature `vision`): what [`Host::vision_read_text`]
/// and [`Host::vision_read_region`] return.
#[cfg(feature = "vision")]
pub mod vision {
    pub use crate::bindings::aviary::bot::vision::{Point, Reading, TextLine};
}

pub use aviary_rules::{ids, kv, text};

/// Bindings generated from `wit/aviary.wit` (world `bot-with-lifecycle`:
/// the `bot` world plus the optional `lifecycle` export).
///
/// Bots rarely need this module directly: the common types are re-exported at
/// the crate root, the imports are wrapped by [`WasmHost`] and the export is
/// done by [`export_bot!`].
#[allow(missing_docs)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "bot-with-lifecycle",
        pub_export_macro: true,
        export_macro_name: "__export_bot_world",
        default_bindings_module: "aviary_sdk::bindings",
        additional_derives: [PartialEq, Eq],
        // These hold `f32`s (no `Eq`); `llm` implements `PartialEq` for
        // `chat-request` by hand.
        additional_derives_ignore: ["chat-request", "point", "text-line", "reading"],
    });
}

pub use bindings::aviary::bot::log::Level;
pub use bindings::aviary::bot::types::{
    Attachment, ChannelInfo, Contact, ContactAdded, Delivery, Error, Event, Message, Timer, Webhook,
};

/// Timer types (feature `schedule`): what [`Host::timer_list`] returns.
#[cfg(feature = "schedule")]
pub use bindings::aviary::bot::schedule::TimerInfo;

/// An outbox request (feature `outbox`): what [`Host::outbox_enqueue`] takes.
#[cfg(feature = "outbox")]
pub use bindings::aviary::bot::outbox::Request as OutboxRequest;

/// The capabilities the host offers a bot while it handles an event.
///
/// Object-safe, so a bot receives it as `&mut dyn Host` and the same code runs
/// against the real host ([`WasmHost`]) and the test fake
/// ([`testing::TestHost`]). Sends and kv writes become visible only when
/// `handle` returns `Ok`: they commit together or not at all.
pub trait Host {
    /// Send `text` into `conversation`.
    fn send(&mut self, conversation: &str, text: &str) -> Result<(), Error>;
    /// Send `text` into `conversation` as an answer to the message `reply_to`.
    fn reply(&mut self, conversation: &str, reply_to: &str, text: &str) -> Result<(), Error>;
    /// Answer `message` in its own conversation; shorthand for [`Host::reply`].
    fn reply_to(&mut self, message: &Message, text: &str) -> Result<(), Error> {
        self.reply(&message.conversation, &message.id, text)
    }
    /// Show a typing indicator in `conversation` where the channel has one.
    fn typing(&mut self, conversation: &str) -> Result<(), Error>;
    /// The channel `conversation` is on (`web`, `matrix`) and what it can
    /// show, for a bot that adapts (a group room names who wrote).
    fn channel(&mut self, conversation: &str) -> Result<ChannelInfo, Error>;
    /// The value stored at `key` in the bot's own kv store, if any.
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error>;
    /// Store `value` at `key`.
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Error>;
    /// Remove `key`; returns whether it existed.
    fn kv_delete(&mut self, key: &str) -> Result<bool, Error>;
    /// Keys starting with `prefix`, in byte order.
    fn kv_list_keys(&mut self, prefix: &str) -> Result<Vec<String>, Error>;
    /// Add `delta` to the signed 64-bit counter at `key` (absent counts as 0)
    /// and return the new value. Never loses concurrent updates.
    fn kv_increment(&mut self, key: &str, delta: i64) -> Result<i64, Error>;
    /// Set `key` to `new` (`None` deletes) only if it holds `expected`
    /// (`None` means absent); returns whether it swapped.
    fn kv_compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error>;
    /// Write `message` to the host's log, tagged with the bot's id.
    fn log(&mut self, level: Level, message: &str);
    /// The bot's setting named `key`, if configured.
    fn config(&mut self, key: &str) -> Option<String>;
    /// The secret named `name`; `Error::Denied` unless the bot's grant names it.
    fn secret(&mut self, name: &str) -> Result<String, Error>;

    /// Generate the assistant's next message after `request.messages` on
    /// the model `request.model` (one of [`Host::llm_models`]).
    ///
    /// `Error::Denied` when the bot's `llm_models` grant does not name the
    /// model, `Error::Unavailable` when the host cannot run it now (its
    /// message says why, e.g. which command installs a missing model),
    /// `Error::Invalid` for a malformed request. With `stream_to` set, the
    /// host shows the growing text in that conversation as drafts; the bot
    /// still sends the final answer itself. Waiting here costs no CPU time;
    /// the event's wall-clock limit bounds it (finish reason `TimeLimit`).
    ///
    /// The default, for hosts without language models, denies every call.
    #[cfg(feature = "llm")]
    fn llm_chat(&mut self, request: &llm::ChatRequest) -> Result<llm::Completion, Error> {
        Err(Error::Denied(format!(
            "model `{}`: this host offers no language models",
            request.model
        )))
    }
    /// One embedding vector per text of `texts`, in order, from `model`.
    /// Errors as for [`Host::llm_chat`].
    ///
    /// The default, for hosts without language models, denies every call.
    #[cfg(feature = "llm")]
    fn llm_embed(&mut self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        let _ = texts;
        Err(Error::Denied(format!(
            "model `{model}`: this host offers no language models"
        )))
    }
    /// The models this bot may use: granted to it and offered by the host,
    /// in the order of its grant. Empty when none is.
    ///
    /// The default, for hosts without language models, is empty.
    #[cfg(feature = "llm")]
    fn llm_models(&mut self) -> Vec<String> {
        Vec::new()
    }

    /// The bytes of attachment `id`: one of the event's message, of an
    /// earlier message of the bot's conversations, or one the bot created
    /// in this event. `Error::Denied` past the `attachment_bytes` grant.
    ///
    /// The default, for hosts without attachments, denies every call.
    #[cfg(feature = "attachments")]
    fn attachment_read(&mut self, id: &str) -> Result<Vec<u8>, Error> {
        Err(Error::Denied(format!(
            "attachment `{id}`: this host keeps no files"
        )))
    }
    /// Stores a file to send with [`Host::send_files`]; the host finds its
    /// media type from the content.
    ///
    /// The default, for hosts without attachments, denies every call.
    #[cfg(feature = "attachments")]
    fn attachment_create(&mut self, name: &str, bytes: &[u8]) -> Result<Attachment, Error> {
        let _ = bytes;
        Err(Error::Denied(format!(
            "file `{name}`: this host keeps no files"
        )))
    }
    /// Sends `text` with the attachments `files` (ids) into `conversation`,
    /// answering `reply_to` when given.
    ///
    /// The default, for hosts without attachments, denies every call.
    #[cfg(feature = "attachments")]
    fn send_files(
        &mut self,
        conversation: &str,
        text: &str,
        files: &[String],
        reply_to: Option<&str>,
    ) -> Result<(), Error> {
        let _ = (conversation, text, files, reply_to);
        Err(Error::Denied("this host keeps no files".into()))
    }

    /// Finds and reads every line of text in image attachment `attachment`
    /// (host-side PP-OCRv5). `Error::Denied` without the `vision` grant,
    /// `Error::Invalid` for an image the host cannot read (its message says
    /// what to send instead). Waiting here costs no CPU time.
    ///
    /// The default, for hosts without text recognition, denies every call.
    #[cfg(feature = "vision")]
    fn vision_read_text(&mut self, attachment: &str) -> Result<vision::Reading, Error> {
        Err(Error::Denied(format!(
            "attachment `{attachment}`: this host offers no text recognition"
        )))
    }
    /// Reads the quadrilateral `corners` (top-left, top-right,
    /// bottom-right, bottom-left) of image `attachment` again at full
    /// resolution, rectified: a second reading of a line the bot picked.
    ///
    /// The default, for hosts without text recognition, denies every call.
    #[cfg(feature = "vision")]
    fn vision_read_region(
        &mut self,
        attachment: &str,
        corners: &[vision::Point],
    ) -> Result<vision::TextLine, Error> {
        let _ = corners;
        Err(Error::Denied(format!(
            "attachment `{attachment}`: this host offers no text recognition"
        )))
    }

    /// Sets timer `id`, replacing one of that id: a `timer` event `after_ms`
    /// from now, then every `every_ms` if given (at least 1000), in
    /// `conversation` (one the bot has seen) or in none. Commits with the
    /// event; `Error::QuotaExceeded` past the `timers` grant.
    ///
    /// The default, for hosts without timers, denies every call.
    #[cfg(feature = "schedule")]
    fn timer_set(
        &mut self,
        id: &str,
        after_ms: u64,
        every_ms: Option<u64>,
        conversation: Option<&str>,
        payload: &str,
    ) -> Result<(), Error> {
        let _ = (after_ms, every_ms, conversation, payload);
        Err(Error::Denied(format!(
            "timer `{id}`: this host keeps no timers"
        )))
    }
    /// Cancels timer `id`; returns whether it was set.
    ///
    /// The default, for hosts without timers, denies every call.
    #[cfg(feature = "schedule")]
    fn timer_cancel(&mut self, id: &str) -> Result<bool, Error> {
        Err(Error::Denied(format!(
            "timer `{id}`: this host keeps no timers"
        )))
    }
    /// The bot's timers, by id.
    ///
    /// The default, for hosts without timers, is empty.
    #[cfg(feature = "schedule")]
    fn timer_list(&mut self) -> Result<Vec<TimerInfo>, Error> {
        Ok(Vec::new())
    }

    /// Puts an HTTP request in the outbox, sent by the host once the event
    /// commits, retried until answered or its give-up time; the outcome
    /// comes back as [`Bot::delivery`]. Returns the job's id (the first
    /// job's, for an idempotency key enqueued before).
    ///
    /// The default, for hosts without an outbox, denies every call.
    #[cfg(feature = "outbox")]
    fn outbox_enqueue(&mut self, request: &OutboxRequest) -> Result<String, Error> {
        Err(Error::Denied(format!(
            "{}: this host has no outbox",
            request.url
        )))
    }
}

/// [`Host`] backed by the component's real imports.
///
/// Only meaningful inside a wasm32 component; on other targets the generated
/// import functions panic when called, so native tests use
/// [`testing::TestHost`] instead.
#[derive(Debug, Default, Clone, Copy)]
pub struct WasmHost;

impl Host for WasmHost {
    fn send(&mut self, conversation: &str, text: &str) -> Result<(), Error> {
        bindings::aviary::bot::messaging::send(conversation, text)
    }
    fn reply(&mut self, conversation: &str, reply_to: &str, text: &str) -> Result<(), Error> {
        bindings::aviary::bot::messaging::reply(conversation, reply_to, text)
    }
    fn typing(&mut self, conversation: &str) -> Result<(), Error> {
        bindings::aviary::bot::messaging::typing(conversation)
    }
    fn channel(&mut self, conversation: &str) -> Result<ChannelInfo, Error> {
        bindings::aviary::bot::messaging::channel(conversation)
    }
    fn kv_get(&mut self, key: &str) -> Result<Option<Vec<u8>>, Error> {
        bindings::aviary::bot::kv::get(key)
    }
    fn kv_set(&mut self, key: &str, value: &[u8]) -> Result<(), Error> {
        bindings::aviary::bot::kv::set(key, value)
    }
    fn kv_delete(&mut self, key: &str) -> Result<bool, Error> {
        bindings::aviary::bot::kv::delete(key)
    }
    fn kv_list_keys(&mut self, prefix: &str) -> Result<Vec<String>, Error> {
        bindings::aviary::bot::kv::list_keys(prefix)
    }
    fn kv_increment(&mut self, key: &str, delta: i64) -> Result<i64, Error> {
        bindings::aviary::bot::kv::increment(key, delta)
    }
    fn kv_compare_and_swap(
        &mut self,
        key: &str,
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<bool, Error> {
        bindings::aviary::bot::kv::compare_and_swap(key, expected, new)
    }
    fn log(&mut self, level: Level, message: &str) {
        bindings::aviary::bot::log::log(level, message)
    }
    fn config(&mut self, key: &str) -> Option<String> {
        bindings::aviary::bot::config::get(key)
    }
    fn secret(&mut self, name: &str) -> Result<String, Error> {
        bindings::aviary::bot::config::secret(name)
    }
    #[cfg(feature = "llm")]
    fn llm_chat(&mut self, request: &llm::ChatRequest) -> Result<llm::Completion, Error> {
        bindings::aviary::bot::llm::chat(request)
    }
    #[cfg(feature = "llm")]
    fn llm_embed(&mut self, model: &str, texts: &[String]) -> Result<Vec<Vec<f32>>, Error> {
        bindings::aviary::bot::llm::embed(model, texts)
    }
    #[cfg(feature = "llm")]
    fn llm_models(&mut self) -> Vec<String> {
        bindings::aviary::bot::llm::models()
    }
    #[cfg(feature = "attachments")]
    fn attachment_read(&mut self, id: &str) -> Result<Vec<u8>, Error> {
        bindings::aviary::bot::attachments::read(id)
    }
    #[cfg(feature = "attachments")]
    fn attachment_create(&mut self, name: &str, bytes: &[u8]) -> Result<Attachment, Error> {
        bindings::aviary::bot::attachments::create(name, bytes)
    }
    #[cfg(feature = "attachments")]
    fn send_files(
        &mut self,
        conversation: &str,
        text: &str,
        files: &[String],
        reply_to: Option<&str>,
    ) -> Result<(), Error> {
        bindings::aviary::bot::attachments::send(conversation, text, files, reply_to)
    }
    #[cfg(feature = "vision")]
    fn vision_read_text(&mut self, attachment: &str) -> Result<vision::Reading, Error> {
        bindings::aviary::bot::vision::read_text(attachment)
    }
    #[cfg(feature = "vision")]
    fn vision_read_region(
        &mut self,
        attachment: &str,
        corners: &[vision::Point],
    ) -> Result<vision::TextLine, Error> {
        bindings::aviary::bot::vision::read_region(attachment, corners)
    }
    #[cfg(feature = "schedule")]
    fn timer_set(
        &mut self,
        id: &str,
        after_ms: u64,
        every_ms: Option<u64>,
        conversation: Option<&str>,
        payload: &str,
    ) -> Result<(), Error> {
        bindings::aviary::bot::schedule::set(id, after_ms, every_ms, conversation, payload)
    }
    #[cfg(feature = "schedule")]
    fn timer_cancel(&mut self, id: &str) -> Result<bool, Error> {
        bindings::aviary::bot::schedule::cancel(id)
    }
    #[cfg(feature = "schedule")]
    fn timer_list(&mut self) -> Result<Vec<TimerInfo>, Error> {
        bindings::aviary::bot::schedule::list()
    }
    #[cfg(feature = "outbox")]
    fn outbox_enqueue(&mut self, request: &OutboxRequest) -> Result<String, Error> {
        bindings::aviary::bot::outbox::enqueue(request)
    }
}

/// The settings a bot receives in [`Bot::init`]: the `init` list as a map.
///
/// When a key appears more than once, the last value wins.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings(BTreeMap<String, String>);

impl Settings {
    /// The value of setting `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }
    /// Whether setting `key` is set.
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }
    /// Set `key` to `value` (used by [`testing::TestHost`] and callers that
    /// build settings by hand).
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<String>) {
        self.0.insert(key.into(), value.into());
    }
    /// All settings, ordered by key.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
    /// Number of settings.
    pub fn len(&self) -> usize {
        self.0.len()
    }
    /// Whether there are no settings.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Settings {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        Settings(
            iter.into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        )
    }
}

/// A bot: what the host runs for each event.
///
/// The host calls [`Bot::init`] once when it loads the bot, then for every
/// event makes a fresh `Self::default()` and calls [`Bot::handle`] on it, so
/// state that must outlive an event belongs in kv, not in `self`.
pub trait Bot: Default {
    /// Validate `settings` at load time; an `Err` refuses the load and its
    /// message is shown to the admin. Effects made here are discarded.
    fn init(settings: &Settings) -> Result<(), String> {
        let _ = settings;
        Ok(())
    }
    /// Handle one event. On `Err` none of the event's sends or kv writes
    /// commit, and the host retries or dead-letters the event.
    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String>;

    /// Bring kv data written by `from_version` forward, once, before this
    /// version takes its first event (a rollback passes the newer version
    /// it replaces). Its kv writes commit when it returns `Ok`; sends are
    /// refused. An `Err` keeps the running version serving and is shown to
    /// the admin. The default does nothing.
    fn migrate(host: &mut dyn Host, from_version: &str) -> Result<(), String> {
        let _ = (host, from_version);
        Ok(())
    }

    /// Handle a request that reached one of the bot's inbound webhooks
    /// (configured by the admin, checked by the host). Runs like `handle`.
    /// The default ignores it.
    fn webhook(&mut self, host: &mut dyn Host, request: Webhook) -> Result<(), String> {
        let _ = (host, request);
        Ok(())
    }

    /// Handle the outcome of an outbox job: its answer, or why it gave up.
    /// Runs like `handle`. The default ignores it.
    fn delivery(&mut self, host: &mut dyn Host, delivery: Delivery) -> Result<(), String> {
        let _ = (host, delivery);
        Ok(())
    }
}

/// Export a [`Bot`] type as the component's `handler` and `lifecycle`
/// interfaces.
///
/// Invoke once, at the root of the bot crate: `aviary_sdk::export_bot!(MyBot);`.
/// `init` forwards to [`Bot::init`], `migrate` to [`Bot::migrate`]; `handle` builds `MyBot::default()` and
/// calls [`Bot::handle`] with a [`WasmHost`]. The exports are emitted only
/// when compiling for wasm32, so the same crate also builds natively (for its
/// unit tests) as a `cdylib`.
#[macro_export]
macro_rules! export_bot {
    ($bot:ty) => {
        const _: () = {
            #[allow(dead_code)]
            struct __AviaryExport;

            impl $crate::bindings::exports::aviary::bot::lifecycle::Guest for __AviaryExport {
                fn migrate(
                    from_version: ::std::string::String,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    <$bot as $crate::Bot>::migrate(&mut $crate::WasmHost, &from_version)
                }
            }

            impl $crate::bindings::exports::aviary::bot::callbacks::Guest for __AviaryExport {
                fn on_webhook(
                    request: $crate::Webhook,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    let mut bot = <$bot as ::core::default::Default>::default();
                    <$bot as $crate::Bot>::webhook(&mut bot, &mut $crate::WasmHost, request)
                }

                fn on_delivery(
                    delivery: $crate::Delivery,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    let mut bot = <$bot as ::core::default::Default>::default();
                    <$bot as $crate::Bot>::delivery(&mut bot, &mut $crate::WasmHost, delivery)
                }
            }

            impl $crate::bindings::exports::aviary::bot::handler::Guest for __AviaryExport {
                fn init(
                    settings: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    let settings: $crate::Settings = settings.into_iter().collect();
                    <$bot as $crate::Bot>::init(&settings)
                }

                fn handle(
                    event: $crate::Event,
                ) -> ::core::result::Result<(), ::std::string::String> {
                    let mut bot = <$bot as ::core::default::Default>::default();
                    <$bot as $crate::Bot>::handle(&mut bot, &mut $crate::WasmHost, event)
                }
            }

            // Only components carry the exports: their names (`aviary:bot/...`)
            // are not valid symbols for a native cdylib's linker.
            #[cfg(target_arch = "wasm32")]
    $crate::bindings::__export_bot_world!(__AviaryExport with_types_in $crate::bindings);
        };
    };
}
