//! Host-side bindings of `wit/aviary.wit`. The exports are called
//! asynchronously so that a wait inside a host call (a sleep, an HTTP
//! answer) can be cut at the event's wall-clock deadline; the host's own
//! imports are plain functions.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "bot",
    exports: { default: async },
});

pub use aviary::bot::types::{Error as BotError, Event};
