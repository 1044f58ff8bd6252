//! Bounds on text that bots supply and the host keeps or prints: error
//! messages, log lines, audit targets. A bot must never make the host store
//! or print megabytes on its behalf, so every such string goes through
//! [`cut`] before it leaves the event.

use std::borrow::Cow;

/// Longest bot-supplied error (a `handle` or `init` error, a trap message)
/// kept in logs, dead letters, the audit log and `GET /api/v1/bots`.
pub const MAX_ERROR_BYTES: usize = 2048;
/// Longest text the store keeps in a dead letter or an audit detail: a
/// last bound behind the cuts made where the text enters the host, loose
/// enough not to cut those again.
pub const MAX_STORED_TEXT_BYTES: usize = 8192;
/// Longest audit target (a kv key, a secret name, a URL) kept per record.
pub const MAX_TARGET_BYTES: usize = 256;

/// `text` when it fits in `max` bytes; otherwise its longest prefix that
/// ends on a character boundary and fits, followed by a marker saying how
/// long the whole text was. The result is never longer than `max` plus the
/// marker (under 40 bytes).
pub fn cut(text: &str, max: usize) -> Cow<'_, str> {
    if text.len() <= max {
        return Cow::Borrowed(text);
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!(
        "{}… [cut: {} bytes in all]",
        &text[..end],
        text.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::cut;

    #[test]
    fn short_text_is_kept_and_long_text_is_cut_with_a_marker() {
        assert_eq!(cut("hello", 5), "hello");
        let long = "é".repeat(1000);
        let cut_text = cut(&long, 9);
        assert!(cut_text.starts_with("éééé…"), "{cut_text}");
        assert!(cut_text.ends_with("[cut: 2000 bytes in all]"), "{cut_text}");
        assert!(cut_text.len() < 9 + 40);
    }
}
