//! Validation of the ids that appear in URLs and store keys.

/// Bot and conversation ids: 1 to 128 of `[A-Za-z0-9._:-]`, not only dots.
/// Never `/`, which separates parts of store keys, nor `.` or `..`, which
/// name directories in URLs and paths.
pub fn is_valid_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.bytes().all(|b| b == b'.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
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
        assert!(!is_valid_id("é"));
        assert!(!is_valid_id("."));
        assert!(!is_valid_id(".."));
        assert!(!is_valid_id("..."));
        assert!(is_valid_id(".a."));
    }
}
