//! A bot that abuses `aviary:bot/attachments` and `aviary:bot/vision` in
//! the way each message names (`<abuse> [argument]`), and answers with what
//! the host said, so the end-to-end suite can check that every abuse is
//! refused with the right error. Written against the raw bindings, as an
//! attacker would call the imports.

wit_bindgen::generate!({ path: "../../../wit", world: "bot" });

use aviary::bot::types::{Error, Event};
use aviary::bot::vision::Point;
use aviary::bot::{attachments, messaging, vision};
use exports::aviary::bot::handler::Guest;

struct Snoop;

fn kind<T>(result: Result<T, Error>) -> String {
    match result {
        Ok(_) => "ok".into(),
        Err(Error::Denied(m)) => format!("denied: {m}"),
        Err(Error::QuotaExceeded(m)) => format!("quota: {m}"),
        Err(Error::Invalid(m)) => format!("invalid: {m}"),
        Err(Error::Unavailable(m)) => format!("unavailable: {m}"),
    }
}

fn square() -> Vec<Point> {
    [(0.0, 0.0), (10.0, 0.0), (10.0, 10.0), (0.0, 10.0)]
        .into_iter()
        .map(|(x, y)| Point { x, y })
        .collect()
}

/// The abuse `what` with `arg`, and what the host answered.
/// A PNG of one green pixel.
const DOT_PNG: &[u8] = &[
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 1, 0, 0, 0, 1, 8, 2, 0,
    0, 0, 144, 119, 83, 222, 0, 0, 0, 12, 73, 68, 65, 84, 120, 156, 99, 248, 207, 192, 0, 0, 3, 1,
    1, 0, 201, 254, 146, 239, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

fn abuse(what: &str, arg: &str, conversation: &str) -> String {
    match what {
        // An id learnt elsewhere: another bot's photo.
        "read" => kind(attachments::read(arg)),
        "read-text" => kind(vision::read_text(arg)),
        "traversal" => kind(attachments::read("../../admin.token")),
        "oversized" => kind(attachments::create("big.bin", &vec![7; 4096])),
        "bad-name" => kind(attachments::create("../../x", b"hi")),
        "send-unknown" => kind(attachments::send(
            conversation,
            "x",
            &[arg.to_owned()],
            None,
        )),
        "not-an-image" => match attachments::create("note.txt", b"plain text, not a photo") {
            Ok(file) => kind(vision::read_text(&file.id)),
            Err(e) => kind::<()>(Err(e)),
        },
        // Not an abuse: a file made and sent, for the channels' tests.
        "send-made" => match attachments::create("dot.png", DOT_PNG) {
            Ok(file) => kind(attachments::send(conversation, "a dot", &[file.id], None)),
            Err(e) => kind::<()>(Err(e)),
        },
        "nan-region" => {
            let mut corners = square();
            corners[1].x = f32::NAN;
            kind(vision::read_region(arg, &corners))
        }
        "three-corners" => kind(vision::read_region(arg, &square()[..3])),
        "many-calls" => {
            let mut last = String::new();
            for _ in 0..40 {
                last = kind(vision::read_text(arg));
                if !last.starts_with("invalid") && !last.starts_with("ok") {
                    break;
                }
            }
            last
        }
        other => format!("unknown abuse {other}"),
    }
}

impl Guest for Snoop {
    fn init(_settings: Vec<(String, String)>) -> Result<(), String> {
        Ok(())
    }

    fn handle(event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let (what, arg) = message.text.split_once(' ').unwrap_or((&message.text, ""));
        let answer = abuse(what, arg, &message.conversation);
        messaging::reply(&message.conversation, &message.id, &answer).map_err(|e| format!("{e:?}"))
    }
}

export!(Snoop);
