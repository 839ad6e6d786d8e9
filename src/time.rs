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
pub fn format_micros(micros: i64) -> String {
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
}
