//! The bot's key-value store: sizes the host accepts and the one encoding
//! of a counter.

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;

/// Why a key or value is refused, as the message a bot gets.
pub fn check_key(key: &str) -> Result<(), String> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(format!("kv keys must be 1 to {MAX_KEY_BYTES} bytes"));
    }
    Ok(())
}

/// Refuses a value over [`MAX_VALUE_BYTES`], with the message a bot gets.
pub fn check_value(value: &[u8]) -> Result<(), String> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(format!("kv values must be at most {MAX_VALUE_BYTES} bytes"));
    }
    Ok(())
}

/// The next value of the counter at `key` that holds `current` (absent
/// counts as 0): counters are stored as decimal text of a signed 64-bit
/// integer. Returns the new value and its stored form.
pub fn increment(key: &str, current: Option<&[u8]>, delta: i64) -> Result<(i64, Vec<u8>), String> {
    let current = match current {
        None => 0,
        Some(bytes) => std::str::from_utf8(bytes)
            .ok()
            .and_then(|s| s.parse::<i64>().ok())
            .ok_or_else(|| format!("kv key `{key}` does not hold a decimal integer"))?,
    };
    let next = current
        .checked_add(delta)
        .ok_or_else(|| format!("incrementing `{key}` overflows a signed 64-bit integer"))?;
    Ok((next, next.to_string().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_within_limits() {
        assert!(check_key("").is_err());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES)).is_ok());
        assert!(check_key(&"k".repeat(MAX_KEY_BYTES + 1)).is_err());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES]).is_ok());
        assert!(check_value(&vec![0; MAX_VALUE_BYTES + 1]).is_err());
    }

    #[test]
    fn counters_are_decimal_text() {
        assert_eq!(increment("n", None, 5).unwrap(), (5, b"5".to_vec()));
        assert_eq!(increment("n", Some(b"-7"), 10).unwrap(), (3, b"3".to_vec()));
        let err = increment("t", Some(b"hello"), 1).unwrap_err();
        assert!(err.contains("decimal integer"), "{err}");
        let max = i64::MAX.to_string();
        assert!(increment("m", Some(max.as_bytes()), 1)
            .unwrap_err()
            .contains("overflows"));
    }
}

/// A data table key under the `alphanumeric-upper` rule: letters and digits
/// only, uppercased (`ab-123 cd` is `AB123CD`). The host keys imported rows
/// with it and bots look rows up with it, so both must use this one.
pub fn alphanumeric_upper(value: &str) -> String {
    value
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_uppercase())
        .collect()
}
