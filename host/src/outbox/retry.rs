//! When a failed job goes again: growing backoff with jitter, never
//! sooner than the server's `Retry-After`, and which answers are worth a
//! retry at all.

use std::time::Duration;

/// The wait after the `attempts`-th failed attempt: `first`, doubling up to
/// `max`, then a random part of it taken off (between 0 and half), so that
/// jobs that failed together do not come back together.
pub fn backoff(attempts: u32, first: Duration, max: Duration, random: u64) -> Duration {
    let doublings = attempts.saturating_sub(1).min(20);
    let full = first.saturating_mul(2u32.pow(doublings)).min(max);
    let half = full.as_millis() as u64 / 2;
    let jitter = if half == 0 { 0 } else { random % (half + 1) };
    full - Duration::from_millis(jitter)
}

/// How long `Retry-After` asks to wait: seconds, or an HTTP date; at most
/// an hour.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => httpdate_after(value, now)?,
    };
    Some(wait.min(Duration::from_secs(3600)))
}

fn httpdate_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or_default())
}

/// Whether an answer with `status` is worth trying again: the server's
/// trouble (5xx), a timeout (408), too early (425) or too many (429). Any
/// other answer settles the job.
pub fn retryable(status: u16) -> bool {
    status >= 500 || matches!(status, 408 | 425 | 429)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_within_bounds() {
        let (first, max) = (Duration::from_millis(500), Duration::from_secs(60));
        assert_eq!(backoff(1, first, max, 0), first);
        assert_eq!(backoff(3, first, max, 0), Duration::from_secs(2));
        assert_eq!(backoff(30, first, max, 0), max);
        for random in [1, 77, 249, 250, 9_999] {
            let wait = backoff(1, first, max, random);
            assert!(wait >= first / 2 && wait <= first, "{wait:?}");
        }
        assert_ne!(
            backoff(2, first, max, 3),
            backoff(2, first, max, 300),
            "jittered"
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(retry_after("99999", now), Some(Duration::from_secs(3600)));
        let date = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&date, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn only_trouble_is_retried() {
        assert!(retryable(503) && retryable(429) && retryable(408));
        assert!(!retryable(200) && !retryable(201) && !retryable(400) && !retryable(404));
    }
}
