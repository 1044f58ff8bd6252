//! Host-side bindings of `wit/aviary.wit`. The exports are called
//! asynchronously so that a wait inside a host call (a sleep, an HTTP
//! answer, a generation) can be cut at the event's wall-clock deadline.
//! The host's own imports are plain functions, except the llm calls, which
//! wait for a model.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "bot",
    exports: { default: async },
    imports: {
        "aviary:bot/llm.chat": async,
        "aviary:bot/llm.embed": async,
        "aviary:bot/vision.read-text": async,
        "aviary:bot/vision.read-region": async,
    },
});

pub use aviary::bot::types::{Error as BotError, Event};

/// The message of an import error, whatever its kind: what the audit log
/// records of a refusal.
pub fn reason(error: &BotError) -> &str {
    match error {
        BotError::Denied(r)
        | BotError::QuotaExceeded(r)
        | BotError::Invalid(r)
        | BotError::Unavailable(r) => r,
    }
}
