//! Times as people read them in a terminal: the local ISO 8601 date, time
//! and UTC offset of a Unix-milliseconds timestamp (the audit log, listings).

/// `2026-12-02T03:04:05.123+01:00` for `ms` milliseconds since the epoch,
/// in the machine's local time zone (as `TZ` or /etc/localtime say).
pub fn iso_local(ms: u64) -> String {
    let seconds = (ms / 1000) as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills in; both pointers
    // are valid for the call and localtime_r keeps neither.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let filled = unsafe { !libc::localtime_r(&seconds, &mut tm).is_null() };
    if !filled {
        return format!("{ms} ms after the epoch");
    }
    let offset_minutes = tm.tm_gmtoff / 60;
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}{sign}{:02}:{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        ms % 1000,
        offset_minutes.abs() / 60,
        offset_minutes.abs() % 60,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Days since 1970-01-01 of a civil date (proleptic Gregorian).
    fn days(year: i64, month: i64, day: i64) -> i64 {
        let year = if month <= 2 { year - 1 } else { year };
        let era = year.div_euclid(400);
        let yoe = year - era * 400;
        let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        era * 146_097 + doe - 719_468
    }

    #[test]
    fn the_printed_local_time_and_offset_give_back_the_instant() {
        for ms in [0u64, 1_796_175_741_092, 1_700_000_000_999] {
            let text = iso_local(ms);
            let n = |range: std::ops::Range<usize>| text[range].parse::<i64>().unwrap();
            let local_s = days(n(0..4), n(5..7), n(8..10)) * 86_400
                + n(11..13) * 3600
                + n(14..16) * 60
                + n(17..19);
            let offset =
                (n(24..26) * 3600 + n(27..29) * 60) * if &text[23..24] == "-" { -1 } else { 1 };
            assert_eq!(local_s - offset, (ms / 1000) as i64, "{text}");
            assert_eq!(n(20..23), (ms % 1000) as i64, "{text}");
        }
    }
}
