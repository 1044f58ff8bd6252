//! A bot built against the first release of the contract,
//! `aviary:bot@0.1.0` (a copy of it is in `wit/`), without the SDK: it has
//! no `lifecycle` export. A host that speaks 0.1.x must load it unchanged.

wit_bindgen::generate!({ path: "wit", world: "bot" });

use aviary::bot::messaging;
use aviary::bot::types::Event;

struct Contract;

impl exports::aviary::bot::handler::Guest for Contract {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        if let Event::Message(message) = event {
            let answer = format!("0.1.0 contract: {}", message.text);
            messaging::reply(&message.conversation, &message.id, &answer)
                .map_err(|e| format!("{e:?}"))?;
        }
        Ok(())
    }
}

export!(Contract);
