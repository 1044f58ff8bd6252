//! A bot that reads a file: its component imports wasi:filesystem, which no
//! grant allows, so the host must refuse to load it.

wit_bindgen::generate!({ path: "../../../wit", world: "bot" });

use aviary::bot::messaging;
use aviary::bot::types::Event;
use exports::aviary::bot::handler::Guest;

struct FsReader;

impl Guest for FsReader {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let text = std::fs::read_to_string("/etc/passwd").unwrap_or_else(|e| e.to_string());
        messaging::send(&message.conversation, &text).map_err(|e| format!("{e:?}"))
    }
}

export!(FsReader);
