//! Timestamps: stored as microseconds since the Unix epoch, shown as RFC 3339 UTC
//! with six fractional digits (`2026-11-29T15:04:05.123456Z`), as the seed's
//! Django origin does.

use time::format_description::FormatItem;
use time::macros::format_description;
use time::OffsetDateTime;

const FORMAT: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z");

/// Now, in microseconds since the epoch.
pub fn now_micros() -> i64 {
    let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos();
    i64::try_from(nanos / 1_000).unwrap_or(i64::MAX)
}

/// Format microseconds since the epoch as RFC 3339 UTC.
///
/// Digits are written directly (years 0 to 9999): `time`'s format-description
/// interpreter took 2,000 instructions per timestamp, two per API response
/// (BENCHMARKS.md). Other years go through `format_described`, same output.
pub fn format_micros(micros: i64) -> String {
    let Ok(t) = OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000) else {
        return format_described(micros);
    };
    let Ok(year) = u32::try_from(t.year()) else {
        return format_described(micros);
    };
    if year > 9999 {
        return format_described(micros);
    }
    let mut out = String::with_capacity(27);
    push_digits(&mut out, year, 4);
    out.push('-');
    push_digits(&mut out, u32::from(u8::from(t.month())), 2);
    out.push('-');
    push_digits(&mut out, u32::from(t.day()), 2);
    out.push('T');
    push_digits(&mut out, u32::from(t.hour()), 2);
    out.push(':');
    push_digits(&mut out, u32::from(t.minute()), 2);
    out.push(':');
    push_digits(&mut out, u32::from(t.second()), 2);
    out.push('.');
    push_digits(&mut out, t.microsecond(), 6);
    out.push('Z');
    out
}

/// `value` as exactly `width` decimal digits (zero-padded).
fn push_digits(out: &mut String, value: u32, width: u32) {
    for i in (0..width).rev() {
        let d = value / 10u32.pow(i) % 10;
        out.push(char::from(b'0' + d as u8));
    }
}

/// The same format through `time`'s format description (the reference).
fn format_described(micros: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .ok()
        .and_then(|t| t.format(FORMAT).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00.000000Z".to_owned())
}

/// Parse an RFC 3339 timestamp into microseconds since the epoch.
pub fn parse_rfc3339(text: &str) -> Option<i64> {
    let t = OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos() / 1_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_with_microseconds() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_micros(1_795_964_645_123_456),
            "2026-11-29T15:04:05.123456Z"
        );
        assert_eq!(
            parse_rfc3339("2026-11-29T15:04:05.123456Z"),
            Some(1_795_964_645_123_456)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn direct_digits_match_the_format_description() {
        // Every field boundary over four centuries, leap days, before 1970, and
        // the ends of the supported range.
        let mut samples = vec![
            0,
            -1,
            1,
            951_782_400_000_000,     // 2000-02-29
            -62_135_596_800_000_000, // 0001-01-01
            -62_167_219_200_000_000, // 0000-01-01
            253_402_300_799_999_999, // 9999-12-31T23:59:59.999999
            253_402_300_800_000_000, // year 10000: not representable
            i64::MIN,
            i64::MAX,
        ];
        let mut m: i64 = -12_000_000_000_000_000;
        while m < 13_000_000_000_000_000 {
            samples.push(m);
            m += 7_777_777_777_777; // ~90 days and a few hours, minutes, micros
        }
        for m in samples {
            assert_eq!(format_micros(m), format_described(m), "at {m} µs");
        }
    }
}
