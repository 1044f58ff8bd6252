//! `plate-lookup`: a field agent sends a photo of a vehicle; the bot reads
//! the plate, looks it up in the register and answers in the conversation.
//!
//! The host reads the text in the photo ([`Host::vision_read_text`]); the
//! bot finds the plate among it ([`finder`]) by its format ([`formats`])
//! and what sets a plate apart, reads it again at full resolution, and
//! answers with the register's entry (the `fields` of its row), or "not in
//! the register", always with the reading and its confidence. Below
//! `min_confidence` it asks for a closer, sharper photo and says why.
//! `/plate AB-123-CD` looks up a typed plate; `/help` says all this.
//!
//! The register is the bot's data table `register`, which the admin
//! imports from a CSV (`aviary plugin data import plate-lookup
//! register.csv`): rows in kv under `data/register/<plate>`, the plate
//! normalised, each a JSON object of the row's columns. Every lookup is
//! logged with who asked; the host audits and counts each read of the
//! table (`aviary audit`, `aviary plugin stats plate-lookup`).

pub mod config;
pub mod finder;
pub mod formats;

use aviary_sdk::vision::{Point, Reading};
use aviary_sdk::{Attachment, Bot, Error, Event, Host, Level, Message, Settings};

use config::Config;
use finder::Candidate;
use formats::normalise;

/// Where the register's rows are in kv.
pub const REGISTER_PREFIX: &str = "data/register/";
/// The answer to `/help`.
pub const HELP: &str = "Send me a photo of a vehicle and I read its plate and look it up in the register. \
     Or type `/plate AB-123-CD`. Get close enough that the plate fills a good part of the photo, and hold still.";
/// The answer to a message with neither photo nor command.
pub const ASK_PHOTO: &str =
    "Send me a photo of the vehicle's plate, or type `/plate` and the plate (e.g. `/plate AB-123-CD`).";
/// Plates shorter than this many pixels are too small to trust.
const MIN_PLATE_PIXELS: f32 = 18.0;
/// Two candidates this close in score are both plausible.
const AMBIGUOUS_MARGIN: f32 = 0.12;

/// The bot. Holds no state between events.
#[derive(Default)]
pub struct PlateLookup;

impl Bot for PlateLookup {
    fn init(settings: &Settings) -> Result<(), String> {
        Config::read(|key| settings.get(key).map(str::to_owned)).map(drop)
    }

    fn handle(&mut self, host: &mut dyn Host, event: Event) -> Result<(), String> {
        let Event::Message(message) = event else {
            return Ok(());
        };
        let settings: Vec<(&str, Option<String>)> =
            config::KEYS.iter().map(|&k| (k, host.config(k))).collect();
        let config = Config::read(|key| {
            settings
                .iter()
                .find(|(k, _)| *k == key)
                .and_then(|(_, v)| v.clone())
        })?;
        let answer = answer(host, &config, &message)?;
        host.reply_to(&message, &answer)
            .map_err(|e| format!("cannot answer: {e:?}"))
    }
}

fn answer(host: &mut dyn Host, config: &Config, message: &Message) -> Result<String, String> {
    let text = message.text.trim();
    if let Some(typed) = text.strip_prefix("/plate") {
        let plate = normalise(typed);
        if plate.is_empty() {
            return Ok("Type the plate after `/plate`, e.g. `/plate AB-123-CD`.".into());
        }
        return lookup(host, config, message, &plate, typed.trim(), None);
    }
    if text == "/help" {
        return Ok(HELP.into());
    }
    match message
        .attachments
        .iter()
        .find(|a| a.media_type.starts_with("image/"))
    {
        Some(photo) => from_photo(host, config, message, photo),
        None => Ok(ASK_PHOTO.into()),
    }
}

/// Reads the photo, picks the plate and looks it up (or says why not).
fn from_photo(
    host: &mut dyn Host,
    config: &Config,
    message: &Message,
    photo: &Attachment,
) -> Result<String, String> {
    // Reading and looking up take a second or two: show that it is coming.
    // Where the channel has no typing indicator, nothing is lost.
    let _ = host.typing(&message.conversation);
    let reading = match host.vision_read_text(&photo.id) {
        Ok(reading) => reading,
        Err(error) => return Ok(cannot_read(&error)),
    };
    let found = finder::candidates(&reading, &config.formats);
    let Some(best) = found.first() else {
        return Ok(no_plate(&reading));
    };
    let best = reread(host, config, photo, &reading, best);
    if let Some(other) = found
        .iter()
        .skip(1)
        .find(|c| c.plate != best.plate && best.score - c.score < AMBIGUOUS_MARGIN)
    {
        return Ok(format!(
            "I see several plates ({} and {}) and cannot tell which one you mean. \
             Send a photo of just that vehicle's plate, closer.",
            best.shown, other.shown
        ));
    }
    if best.confidence < config.min_confidence {
        let why = if best.height < MIN_PLATE_PIXELS {
            "the plate is too small in the photo: come closer"
        } else {
            "the plate is not sharp enough: hold still, focus on it, and mind reflections"
        };
        return Ok(format!(
            "I read {} but only with {} confidence, too little to look it up: {why}. Send a closer, sharper photo, \
             or type `/plate` and the plate.",
            best.shown,
            percent(best.confidence)
        ));
    }
    lookup(
        host,
        config,
        message,
        &best.plate,
        &best.shown,
        Some(best.confidence),
    )
}

/// Reads the best candidate's box again at full resolution, grown a
/// little, and keeps whichever reading is surer.
fn reread(
    host: &mut dyn Host,
    config: &Config,
    photo: &Attachment,
    reading: &Reading,
    best: &Candidate,
) -> Candidate {
    let corners = grown(&best.line.corners, 0.08);
    let Ok(line) = host.vision_read_region(&photo.id, &corners) else {
        return best.clone();
    };
    match finder::candidate(reading, &line, &config.formats) {
        Some(again) if again.confidence > best.confidence => Candidate {
            score: best.score,
            height: best.height,
            ..again
        },
        _ => best.clone(),
    }
}

/// `corners` grown by `by` of the box's height on every side.
fn grown(corners: &[Point], by: f32) -> Vec<Point> {
    if corners.len() != 4 {
        return corners.to_vec();
    }
    let cx = corners.iter().map(|p| p.x).sum::<f32>() / 4.0;
    let cy = corners.iter().map(|p| p.y).sum::<f32>() / 4.0;
    let h = ((corners[0].x - corners[3].x).powi(2) + (corners[0].y - corners[3].y).powi(2)).sqrt();
    corners
        .iter()
        .map(|p| {
            let (dx, dy) = (p.x - cx, p.y - cy);
            let len = (dx * dx + dy * dy).sqrt().max(1.0);
            Point {
                x: p.x + dx / len * h * by,
                y: p.y + dy / len * h * by,
            }
        })
        .collect()
}

/// Looks `plate` (normalised) up and says what the register holds.
fn lookup(
    host: &mut dyn Host,
    config: &Config,
    message: &Message,
    plate: &str,
    shown: &str,
    confidence: Option<f32>,
) -> Result<String, String> {
    let row = host
        .kv_get(&format!("{REGISTER_PREFIX}{plate}"))
        .map_err(|e| format!("cannot read the register: {e:?}"))?;
    let reading = match confidence {
        Some(c) => format!("I read {shown} ({} confidence)", percent(c)),
        None => format!("You typed {shown}"),
    };
    host.log(
        Level::Info,
        &format!(
            "lookup plate={plate} by={} conversation={} found={}",
            message.sender,
            message.conversation,
            row.is_some()
        ),
    );
    let Some(row) = row else {
        return Ok(format!("{reading}: {plate} is not in the register."));
    };
    let row: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&row).unwrap_or_default();
    let fields: Vec<String> = config
        .fields
        .iter()
        .filter_map(|f| {
            let value = row.get(f)?.as_str()?.trim();
            (!value.is_empty()).then(|| format!("{f}: {value}"))
        })
        .collect();
    Ok(format!("{reading}: in the register. {}", fields.join("; ")))
}

fn percent(confidence: f32) -> String {
    format!("{:.0} %", confidence * 100.0)
}

fn no_plate(reading: &Reading) -> String {
    if reading.lines.is_empty() {
        "I found no writing at all in the photo: it may be blurred, too dark or taken from too far. \
         Send a closer, sharper photo of the plate."
            .into()
    } else {
        "I found no licence plate in the photo (I read other writing, but nothing shaped like a plate). \
         Send a closer photo of the plate, or type `/plate` and the plate."
            .into()
    }
}

fn cannot_read(error: &Error) -> String {
    match error {
        Error::Invalid(why) => format!("I cannot read this photo: {why}"),
        Error::Denied(_) => {
            "I am not allowed to read photos here (the admin grants `vision` to this bot). \
             Type `/plate` and the plate instead."
                .into()
        }
        Error::Unavailable(why) | Error::QuotaExceeded(why) => {
            format!("I cannot read photos right now ({why}). Try again in a moment, or type `/plate` and the plate.")
        }
    }
}

aviary_sdk::export_bot!(PlateLookup);

#[cfg(test)]
mod tests;
