//! Tuple timestamps and RFC 3339 text, through the `jiff` date-time crate.

use crate::error::PluginError;

/// Parses an RFC 3339 timestamp (`"2026-12-03T14:00:00Z"`, `"2026-12-03T15:00:00.25+01:00"`)
/// into nanoseconds since the Unix epoch, the unit of tuple timestamps.
///
/// # Errors
/// Text that is not an RFC 3339 timestamp with an offset (or `Z`), or a time outside what an
/// `i64` of nanoseconds holds (the years 1678 to 2262); the error quotes the text.
///
/// # Examples
/// ```
/// use shmplug_sdk::{format_timestamp, parse_timestamp};
///
/// let t = parse_timestamp("2026-12-03T15:00:00.25+01:00")?;
/// assert_eq!(t, 1_796_306_400_250_000_000);
/// assert_eq!(format_timestamp(t), "2026-12-03T14:00:00.25Z");
/// assert!(parse_timestamp("yesterday").is_err());
/// # Ok::<(), shmplug_sdk::PluginError>(())
/// ```
pub fn parse_timestamp(text: &str) -> Result<i64, PluginError> {
    let bad = |detail: String| {
        PluginError::new(format!(
            "expected an RFC 3339 timestamp such as \"2026-12-03T14:00:00Z\", got {text:?}: \
             {detail}"
        ))
    };
    let parsed: jiff::Timestamp = text
        .trim()
        .parse()
        .map_err(|e: jiff::Error| bad(e.to_string()))?;
    i64::try_from(parsed.as_nanosecond())
        .map_err(|_| bad("outside the years 1678 to 2262 that nanoseconds in an i64 hold".into()))
}

/// Writes a tuple timestamp (nanoseconds since the Unix epoch) as RFC 3339 text in UTC, with
/// as many fractional digits as it needs.
pub fn format_timestamp(nanos: i64) -> String {
    // Every i64 of nanoseconds (1677 to 2262) is within jiff's range of years.
    match jiff::Timestamp::from_nanosecond(i128::from(nanos)) {
        Ok(t) => t.to_string(),
        Err(_) => nanos.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_offsets_fractions_and_rejects_the_rest() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z").unwrap(), 0);
        assert_eq!(
            parse_timestamp("1970-01-01T01:00:00.000000001+01:00").unwrap(),
            1
        );
        assert_eq!(
            parse_timestamp("1969-12-31T23:59:59Z").unwrap(),
            -1_000_000_000
        );
        for bad in [
            "",
            "2026-12-03",
            "2026-12-03T14:00:00",
            "2026-13-03T14:00:00Z",
            "9999-01-01T00:00:00Z",
        ] {
            let e = parse_timestamp(bad).unwrap_err().to_string();
            assert!(
                e.starts_with("expected an RFC 3339 timestamp"),
                "{bad}: {e}"
            );
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        for t in [0, 1, -1, i64::MAX, i64::MIN, 1_796_306_400_250_000_000] {
            assert_eq!(parse_timestamp(&format_timestamp(t)).unwrap(), t);
        }
    }
}
