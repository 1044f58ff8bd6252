//! A bot built against an incompatible major version of the contract
//! (aviary:bot@2.0.0): the host must refuse it with a clear error.

wit_bindgen::generate!({
    inline: "
        package aviary:bot@2.0.0;
        interface handler {
            handle: func(event: string) -> result<_, string>;
        }
        world bot {
            export handler;
        }
    ",
});

struct Future;

impl exports::aviary::bot::handler::Guest for Future {
    fn handle(_event: String) -> Result<(), String> {
        Ok(())
    }
}

export!(Future);
