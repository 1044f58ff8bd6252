//! The bot on a fake host: fake readings stand for the host's text
//! recognition, kv for the imported register.

use aviary_sdk::testing::TestHost;
use aviary_sdk::vision::{Point, Reading, TextLine};
use aviary_sdk::Attachment;

use super::*;

const PHOTO: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn photo() -> Attachment {
    Attachment {
        id: PHOTO.into(),
        media_type: "image/jpeg".into(),
        size: 1000,
        name: Some("car.jpg".into()),
    }
}

fn line(text: &str, x: f32, y: f32, w: f32, h: f32, confidence: f32) -> TextLine {
    TextLine {
        text: text.into(),
        confidence,
        corners: vec![
            Point { x, y },
            Point { x: x + w, y },
            Point { x: x + w, y: y + h },
            Point { x, y: y + h },
        ],
        char_confidences: vec![confidence; text.chars().count()],
    }
}

fn host_with(lines: Vec<TextLine>) -> TestHost {
    let mut host = TestHost::new().with_reading(
        PHOTO,
        Reading {
            width: 1280,
            height: 960,
            lines,
        },
    );
    let row = br#"{"plate":"AB-123-CD","status":"stolen","make":"Renault Clio","colour":"grey","notes":"reported 2026-11-30"}"#;
    host.kv_set("data/register/AB123CD", row).unwrap();
    host
}

fn send_photo(host: &mut TestHost) -> String {
    let event = host.message_with("c", "agent-7", "", vec![photo()]);
    host.deliver::<PlateLookup>(event).unwrap();
    host.sent().last().expect("an answer").text.clone()
}

#[test]
fn a_registered_plate_in_a_photo_gets_its_entry_and_the_reading() {
    let mut host = host_with(vec![
        line("PIZZA NAPOLI", 100.0, 90.0, 300.0, 50.0, 0.97),
        line("04 91 23 45 67", 110.0, 150.0, 280.0, 40.0, 0.96),
        line("AB-123-CD", 540.0, 720.0, 210.0, 46.0, 0.97),
    ]);
    let answer = send_photo(&mut host);
    assert!(
        answer.starts_with("I read AB-123-CD (97 % confidence)"),
        "{answer}"
    );
    assert!(
        answer.contains("status: stolen") && answer.contains("make: Renault Clio"),
        "{answer}"
    );
    assert!(answer.contains("notes: reported"), "{answer}");
    assert_eq!(host.regions_read().len(), 1, "the plate was read again");
    assert_eq!(host.typing_in(), ["c"], "typing shows while the photo is read");
    assert!(host
        .logs()
        .iter()
        .any(|(_, l)| l.contains("plate=AB123CD by=agent-7") && l.contains("found=true")));
}

#[test]
fn an_unregistered_plate_is_said_so_with_what_was_read() {
    let mut host = host_with(vec![line("FG-456-HJ", 540.0, 720.0, 210.0, 46.0, 0.95)]);
    let answer = send_photo(&mut host);
    assert!(
        answer.contains("FG-456-HJ") && answer.contains("FG456HJ is not in the register"),
        "{answer}"
    );
    assert!(host.logs().iter().any(|(_, l)| l.contains("found=false")));
}

#[test]
fn a_poor_reading_asks_for_a_better_photo_and_says_why() {
    let mut host = host_with(vec![line("AB-123-CD", 600.0, 800.0, 50.0, 11.0, 0.62)]);
    let answer = send_photo(&mut host);
    assert!(
        answer.contains("too small") && answer.contains("closer"),
        "{answer}"
    );
    assert!(
        !host.logs().iter().any(|(_, l)| l.contains("lookup")),
        "nothing was looked up"
    );

    let mut host = host_with(vec![line("AB-123-CD", 500.0, 700.0, 220.0, 48.0, 0.55)]);
    let answer = send_photo(&mut host);
    assert!(answer.contains("not sharp enough"), "{answer}");
}

#[test]
fn two_plausible_plates_are_not_guessed_between() {
    let mut host = host_with(vec![
        line("AB-123-CD", 200.0, 700.0, 200.0, 45.0, 0.95),
        line("FG-456-HJ", 800.0, 710.0, 200.0, 45.0, 0.95),
    ]);
    let answer = send_photo(&mut host);
    assert!(answer.contains("several plates"), "{answer}");
}

#[test]
fn a_photo_without_a_plate_or_an_unreadable_format_gets_a_clear_answer() {
    let mut host = host_with(vec![line("GARAGE DU PORT", 100.0, 100.0, 300.0, 50.0, 0.9)]);
    assert!(send_photo(&mut host).contains("no licence plate"));
    let mut host = host_with(Vec::new());
    assert!(send_photo(&mut host).contains("no writing at all"));
    // The host's own words (e.g. HEIC) reach the user.
    let mut host = TestHost::new();
    let answer = send_photo(&mut host);
    assert!(answer.starts_with("I cannot read this photo"), "{answer}");
}

#[test]
fn typed_plates_are_looked_up_whatever_their_separators() {
    let mut host = host_with(Vec::new());
    let event = host.message("c", "agent-7", "/plate ab 123-cd");
    host.deliver::<PlateLookup>(event).unwrap();
    let answer = &host.sent()[0].text;
    assert!(
        answer.contains("You typed ab 123-cd") && answer.contains("status: stolen"),
        "{answer}"
    );
    let event = host.message("c", "agent-7", "/plate");
    host.deliver::<PlateLookup>(event).unwrap();
    assert!(host.sent()[1].text.contains("Type the plate"));
}

#[test]
fn settings_choose_formats_fields_and_the_threshold() {
    let get = |pairs: &'static [(&'static str, &'static str)]| {
        move |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| v.to_string())
        }
    };
    let config = Config::read(get(&[
        ("formats", "de"),
        ("patterns", "ch=AA 9{1,6}"),
        ("fields", "status"),
        ("min_confidence", "0.9"),
    ]))
    .unwrap();
    assert_eq!(config.formats.len(), 2);
    assert_eq!(config.fields, ["status"]);
    assert!(Config::read(get(&[("formats", "xx")]))
        .unwrap_err()
        .contains("no format `xx`"));
    assert!(Config::read(get(&[("min_confidence", "2")]))
        .unwrap_err()
        .contains("min_confidence"));
    assert!(Config::read(get(&[("patterns", "nonsense")]))
        .unwrap_err()
        .contains("name=PATTERN"));
}
