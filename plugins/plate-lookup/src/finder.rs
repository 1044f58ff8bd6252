//! Finding the plate among everything written in a photo: shop signs,
//! phone numbers, stickers and posters read as text too. A line is a
//! candidate when it fits a plate format; candidates are then scored on
//! what sets a plate apart: a line alone (a plate carries nothing else
//! beside its characters, a poster or sign carries more text around them),
//! the wide, short shape of a plate's line, a place in the lower part of
//! the photo (a plate sits on the bumper), the few look-alike swaps its
//! layout needed, and how sure the reading is.

use aviary_sdk::vision::{Reading, TextLine};

use crate::formats::{normalise, Format};

/// A line that may be the plate.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The plate, normalised (letters and digits only).
    pub plate: String,
    /// The plate as its format shows it.
    pub shown: String,
    pub format: String,
    /// The reading's confidence, lowered for each look-alike swapped.
    pub confidence: f32,
    /// How plate-like the line is, all clues together.
    pub score: f32,
    /// The line's height in pixels.
    pub height: f32,
    pub line: TextLine,
}

/// Confidence taken off for each character read as its look-alike.
const SWAP_COST: f32 = 0.08;
/// Lines whose clues (all but the reading's confidence) add up to less
/// are not taken for a plate at all: a plate-like string high up with text
/// around it is a poster or a sign, however clearly it reads.
const MIN_CLUES: f32 = -0.25;

/// The plate candidates of `reading`, best first.
pub fn candidates(reading: &Reading, formats: &[Format]) -> Vec<Candidate> {
    let mut out: Vec<Candidate> = reading
        .lines
        .iter()
        .filter_map(|line| candidate(reading, line, formats))
        .filter(|c| c.score - c.confidence >= MIN_CLUES)
        .collect();
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    // The same plate read twice (two lines, or line and re-read) counts once.
    let mut seen = Vec::new();
    out.retain(|c| {
        let new = !seen.contains(&c.plate);
        seen.push(c.plate.clone());
        new
    });
    out
}

/// `line` as a candidate, if it fits a format.
pub fn candidate(reading: &Reading, line: &TextLine, formats: &[Format]) -> Option<Candidate> {
    let (format, plate, swaps) = best_fit(&line.text, formats)?;
    let confidence = (line.confidence - SWAP_COST * swaps as f32).max(0.0);
    let (width, height) = size(line);
    let aspect = width / height.max(1.0);
    let mut score = confidence;
    // A plate's line of characters is 3 to 9 times as wide as high.
    if !(2.5..=10.0).contains(&aspect) {
        score -= 0.4;
    }
    // Plates sit on the bumper: the lower part of most photos.
    let centre_y = line.corners.iter().map(|p| p.y).sum::<f32>() / 4.0;
    score += 0.3 * (centre_y / reading.height.max(1) as f32 - 0.5);
    // Other text right above or below, as on a sign or a poster.
    score -= 0.3 * neighbours(reading, line, height) as f32;
    // Text in a line that holds more than the plate (a sentence with a plate).
    let extra = normalise(&line.text).len().saturating_sub(plate.len());
    score -= 0.1 * extra as f32;
    Some(Candidate {
        shown: shown(&line.text, &format, &plate),
        plate,
        format: format.name.clone(),
        confidence,
        score,
        height,
        line: line.clone(),
    })
}

/// The format `text` fits with the fewest swaps, if any.
fn best_fit<'f>(text: &str, formats: &'f [Format]) -> Option<(&'f Format, String, usize)> {
    formats
        .iter()
        .filter_map(|f| f.fit(text).map(|(plate, swaps)| (f, plate, swaps)))
        .min_by_key(|(_, _, swaps)| *swaps)
}

/// The plate as the photo shows it when the reading has separators where
/// the format has them, else as the format shows it.
fn shown(text: &str, format: &Format, plate: &str) -> String {
    let read = text.trim().to_ascii_uppercase();
    if normalise(&read) == plate && read.chars().any(|c| !c.is_ascii_alphanumeric()) {
        read
    } else {
        format.display(plate)
    }
}

/// The mean width and height of a line's box.
pub fn size(line: &TextLine) -> (f32, f32) {
    let d = |a: usize, b: usize| {
        let (p, q) = (&line.corners[a], &line.corners[b]);
        ((p.x - q.x).powi(2) + (p.y - q.y).powi(2)).sqrt()
    };
    if line.corners.len() != 4 {
        return (0.0, 0.0);
    }
    ((d(0, 1) + d(3, 2)) / 2.0, (d(0, 3) + d(1, 2)) / 2.0)
}

/// Lines with letters or digits within about a line's height above or
/// below `line` and overlapping it sideways.
fn neighbours(reading: &Reading, line: &TextLine, height: f32) -> usize {
    let span = |l: &TextLine| {
        let xs = l.corners.iter().map(|p| p.x);
        let ys = l.corners.iter().map(|p| p.y);
        (
            xs.clone().fold(f32::MAX, f32::min),
            xs.fold(f32::MIN, f32::max),
            ys.clone().fold(f32::MAX, f32::min),
            ys.fold(f32::MIN, f32::max),
        )
    };
    let (x0, x1, y0, y1) = span(line);
    reading
        .lines
        .iter()
        .filter(|other| !std::ptr::eq(*other, line) && other.text != line.text)
        .filter(|other| normalise(&other.text).len() >= 2)
        .filter(|other| {
            let (a0, a1, b0, b1) = span(other);
            let overlaps = a0 < x1 && a1 > x0;
            let near = b1 > y0 - 1.2 * height && b0 < y1 + 1.2 * height;
            overlaps && near
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use aviary_sdk::vision::Point;

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
            char_confidences: vec![confidence; text.len()],
        }
    }

    fn formats() -> Vec<Format> {
        ["fr-siv", "fr-fni", "de", "it"]
            .iter()
            .map(|n| Format::built_in(n).unwrap())
            .collect()
    }

    #[test]
    fn the_plate_wins_over_a_poster_a_sign_and_a_phone_number() {
        let reading = Reading {
            width: 1280,
            height: 960,
            lines: vec![
                // A poster high up: a plate-like string under a headline.
                line("GRANDE VENTE", 100.0, 80.0, 300.0, 40.0, 0.98),
                line("AB-123-CD", 120.0, 130.0, 250.0, 40.0, 0.99),
                // A shop sign with its phone number.
                line("GARAGE DU CENTRE", 700.0, 100.0, 400.0, 50.0, 0.97),
                line("06 12 34 56 78", 720.0, 160.0, 300.0, 40.0, 0.97),
                // The plate, alone, low in the photo.
                line("FG-456-HJ", 520.0, 700.0, 200.0, 45.0, 0.93),
            ],
        };
        let found = candidates(&reading, &formats());
        assert_eq!(found[0].plate, "FG456HJ", "{found:?}");
        assert_eq!(found[0].shown, "FG-456-HJ");
        assert!(found.iter().all(|c| c.plate != "0612345678"));
        assert!(
            found.iter().all(|c| c.plate != "AB123CD"),
            "the poster is no plate: {found:?}"
        );
    }

    #[test]
    fn swaps_lower_the_confidence() {
        let reading = Reading {
            width: 100,
            height: 100,
            lines: vec![line("A8-I23-CD", 10.0, 60.0, 60.0, 12.0, 0.95)],
        };
        let found = candidates(&reading, &formats());
        assert_eq!(found[0].plate, "AB123CD");
        assert!(found[0].confidence < 0.95 - 0.15, "{:?}", found[0]);
    }
}
