//! Host-side bindings of `wit/aviary.wit`.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "bot",
});

pub use aviary::bot::types::{Error as BotError, Event};
