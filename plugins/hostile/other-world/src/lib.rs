//! A component of another world: it exports no aviary:bot/handler, so the
//! host must refuse to load it as a bot.

wit_bindgen::generate!({
    inline: "
        package evil:other;
        world other {
            export run: func(input: string) -> string;
        }
    ",
});

struct Other;

impl Guest for Other {
    fn run(input: String) -> String {
        input
    }
}

export!(Other);
