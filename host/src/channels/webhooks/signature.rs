//! How an inbound webhook proves where it comes from: an HMAC-SHA256 of
//! `<timestamp>.<body>` under the hook's secret, sent as
//! `X-Aviary-Signature: sha256=<hex>` beside `X-Aviary-Timestamp: <unix
//! seconds>`, within a window of the host's clock; or, for senders that
//! cannot sign, a random token in the URL (`?token=`). Pure functions,
//! tested without a server.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header that carries the signature.
pub const SIGNATURE_HEADER: &str = "x-aviary-signature";
/// The header that carries the signing time, in Unix seconds.
pub const TIMESTAMP_HEADER: &str = "x-aviary-timestamp";

/// `sha256=<hex>`: the signature of `body` sent at `timestamp` under `secret`.
pub fn sign(secret: &str, timestamp: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signed request; `now` and the window are in seconds. The
/// error says what was wrong, for the audit log and the 401.
pub fn verify(
    secret: &str,
    timestamp: Option<&str>,
    signature: Option<&str>,
    body: &[u8],
    now: u64,
    window: u64,
) -> Result<(), String> {
    let (Some(timestamp), Some(signature)) = (timestamp, signature) else {
        return Err(format!(
            "unsigned: the request needs `{SIGNATURE_HEADER}` and `{TIMESTAMP_HEADER}`"
        ));
    };
    let sent: u64 = timestamp
        .parse()
        .map_err(|_| format!("`{TIMESTAMP_HEADER}` is not Unix seconds"))?;
    if sent.abs_diff(now) > window {
        return Err(format!(
            "the signature's time is {}s from the host's clock, outside the {window}s window (a replay, or a clock that is off)",
            sent.abs_diff(now)
        ));
    }
    let expected = sign(secret, timestamp, body);
    if !crate::channels::web::auth::same_secret(signature, &expected) {
        return Err("the signature does not match the body and timestamp".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cret-s3cret-s3cret";

    #[test]
    fn a_good_signature_passes_within_the_window() {
        let signature = sign(SECRET, "1000", b"{\"a\":1}");
        assert!(signature.starts_with("sha256=") && signature.len() == 71);
        assert!(verify(
            SECRET,
            Some("1000"),
            Some(&signature),
            b"{\"a\":1}",
            1200,
            300
        )
        .is_ok());
        assert!(verify(
            SECRET,
            Some("1000"),
            Some(&signature),
            b"{\"a\":1}",
            800,
            300
        )
        .is_ok());
    }

    #[test]
    fn forged_replayed_and_unsigned_requests_fail() {
        let signature = sign(SECRET, "1000", b"body");
        let check = |ts: Option<&str>, sig: Option<&str>, body: &[u8], now| {
            verify(SECRET, ts, sig, body, now, 300).unwrap_err()
        };
        assert!(check(Some("1000"), Some(&signature), b"Body", 1000).contains("does not match"));
        assert!(check(Some("1001"), Some(&signature), b"body", 1000).contains("does not match"));
        let other = sign("another-secret-entirely", "1000", b"body");
        assert!(check(Some("1000"), Some(&other), b"body", 1000).contains("does not match"));
        assert!(check(Some("1000"), Some(&signature), b"body", 1301).contains("window"));
        assert!(check(None, Some(&signature), b"body", 1000).contains("unsigned"));
        assert!(check(Some("1000"), None, b"body", 1000).contains("unsigned"));
        assert!(check(Some("x"), Some(&signature), b"body", 1000).contains("Unix seconds"));
    }
}
