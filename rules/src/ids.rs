//! Validation of the ids that appear in URLs, store keys and file names.

/// Longest id, in bytes.
pub const MAX_ID_BYTES: usize = 128;

/// Bot and conversation ids: 1 to [`MAX_ID_BYTES`] of `[A-Za-z0-9._:-]`,
/// not made only of dots (`.` and `..` are path segments). Never `/`, which
/// separates parts of store keys.
pub fn is_valid_id(id: &str) -> bool {
    (1..=MAX_ID_BYTES).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
        && !id.bytes().all(|b| b == b'.')
}

/// Message ids: 16 hex digits, as the host assigns them in storage order.
pub fn is_message_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::is_valid_id;

    #[test]
    fn ids_are_short_and_never_contain_a_slash() {
        assert!(is_valid_id("room-1:web.x_y"));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a/b"));
        assert!(!is_valid_id(&"a".repeat(129)));
        assert!(is_valid_id(&"a".repeat(128)));
        assert!(!is_valid_id("é"));
    }

    #[test]
    fn ids_made_only_of_dots_are_invalid() {
        for id in [".", "..", "...", "%2e%2e"] {
            assert!(!is_valid_id(id), "{id}");
        }
        assert!(is_valid_id(".a"));
        assert!(is_valid_id("a.."));
    }

    #[test]
    fn message_ids_are_sixteen_hex_digits() {
        assert!(super::is_message_id("00000000000000af"));
        assert!(!super::is_message_id("00000000000000ag"));
        assert!(!super::is_message_id(&"1".repeat(4 << 20)));
    }
}
