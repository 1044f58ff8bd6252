//! The size of one message and the helpers that make a long text fit.
//!
//! The host refuses a send whose text is over [`MAX_TEXT_BYTES`]; a bot that
//! may produce longer texts (an echo of a long message, a report) sends the
//! parts of [`split`] one after another, or the [`trim`]med text.

use std::borrow::Cow;

/// Largest text of one message, in bytes of UTF-8, both inbound (what a
/// channel accepts) and outbound (what a bot may send).
pub const MAX_TEXT_BYTES: usize = 16 * 1024;

/// What [`trim`] puts at the end of a text it cut.
pub const TRIM_MARKER: &str = "…";

/// The smallest part size [`split`] and [`trim`] work with: one char of
/// UTF-8 takes up to 4 bytes. Smaller limits are raised to this.
pub const MIN_PART_BYTES: usize = 4;

/// Splits `text` into parts of at most `max_bytes` bytes each (at least
/// [`MIN_PART_BYTES`]), cutting after the last whitespace that fits in the
/// second half of a part, else at a char boundary (so no part is needlessly
/// short). The parts concatenated
/// give `text` back; a text that fits is one part (an empty text too).
pub fn split(text: &str, max_bytes: usize) -> Vec<&str> {
    let max_bytes = max_bytes.max(MIN_PART_BYTES);
    let mut parts = Vec::new();
    let mut rest = text;
    while rest.len() > max_bytes {
        let window = &rest[..floor_char_boundary(rest, max_bytes)];
        let cut = window
            .char_indices()
            .rev()
            .take_while(|(at, _)| *at >= window.len() / 2)
            .find(|(_, c)| c.is_whitespace())
            .map_or(window.len(), |(at, c)| at + c.len_utf8());
        parts.push(&rest[..cut]);
        rest = &rest[cut..];
    }
    parts.push(rest);
    parts
}

/// `text` cut to at most `max_bytes` bytes (at least [`MIN_PART_BYTES`]) at
/// a char boundary, ending with [`TRIM_MARKER`] when something was cut.
pub fn trim(text: &str, max_bytes: usize) -> Cow<'_, str> {
    let max_bytes = max_bytes.max(MIN_PART_BYTES);
    if text.len() <= max_bytes {
        return Cow::Borrowed(text);
    }
    let keep = floor_char_boundary(text, max_bytes - TRIM_MARKER.len());
    Cow::Owned(format!("{}{TRIM_MARKER}", &text[..keep]))
}

/// The largest char boundary of `text` at or below `at`.
fn floor_char_boundary(text: &str, at: usize) -> usize {
    (0..=at.min(text.len()))
        .rev()
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str, max: usize) -> Vec<&str> {
        let parts = split(text, max);
        assert_eq!(parts.concat(), text, "lossless");
        assert!(parts.iter().all(|p| p.len() <= max.max(MIN_PART_BYTES)));
        assert!(parts.iter().skip(1).all(|p| !p.is_empty()));
        parts
    }

    #[test]
    fn a_text_that_fits_is_one_part() {
        assert_eq!(check("", 10), [""]);
        assert_eq!(check("hello", 5), ["hello"]);
    }

    #[test]
    fn splits_after_whitespace_when_it_can() {
        assert_eq!(check("one two three", 8), ["one two ", "three"]);
        assert_eq!(check("aaaa bbbb\ncccc", 10), ["aaaa bbbb\n", "cccc"]);
        assert_eq!(
            check("a bcdefghij", 6),
            ["a bcde", "fghij"],
            "no tiny parts"
        );
    }

    #[test]
    fn splits_long_words_at_char_boundaries() {
        assert_eq!(check("abcdefghij", 4), ["abcd", "efgh", "ij"]);
        // "é" is 2 bytes, "🦜" 4: no part cuts a char.
        let parts = check("éééé🦜🦜x", 5);
        assert_eq!(parts, ["éé", "éé", "🦜", "🦜x"]);
        assert_eq!(check("🦜🦜", 1), ["🦜", "🦜"], "limits below 4 are raised");
    }

    #[test]
    fn the_largest_message_and_a_prefix_split_into_two_parts() {
        let text = format!("echo: {}", "x".repeat(MAX_TEXT_BYTES));
        let parts = check(&text, MAX_TEXT_BYTES);
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].len(), MAX_TEXT_BYTES);
    }

    #[test]
    fn trim_cuts_at_a_char_boundary_with_a_marker() {
        assert_eq!(trim("short", 10), "short");
        assert_eq!(trim("abcdefghij", 8), "abcde…");
        let long = "é".repeat(10);
        let cut = trim(&long, 8);
        assert!(cut.len() <= 8 && cut.ends_with(TRIM_MARKER), "{cut}");
        assert_eq!(cut, "éé…");
    }
}
